"""Items of an iterable prepared by a background thread while the consumer works on earlier
ones: training reads and pads the next batches while a step runs."""

import queue
import threading

_DONE = object()


def ahead(iterable, depth, prepare=None):
    """The items of `iterable`, in order, each passed through `prepare` (when given), produced by
    a background thread at most `depth` items ahead of the consumer (depth 0: in this thread).
    An error raised while producing is raised here, at the item it replaced; a consumer that
    stops early stops the thread. Memory: `depth` waiting items, one being made, one in use."""
    prepare = prepare or (lambda item: item)
    if depth <= 0:
        yield from map(prepare, iterable)
        return
    items, stop = queue.Queue(maxsize=depth), threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterable:
                if not put(prepare(item)):
                    return
            put(_DONE)
        except BaseException as err:  # noqa: BLE001 (handed to the consumer, raised there)
            put(err)

    thread = threading.Thread(target=produce, name="actloc-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()

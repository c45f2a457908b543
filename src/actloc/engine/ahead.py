"""Items of a generator made by a background thread while the consumer works on earlier ones:
the cache stage decodes and assembles snippets during the forward pass, training reads and
pads its next batches while a step runs."""

import queue
import threading

_DONE = object()


def ahead(items, depth=2):
    """The items of the generator `items`, in order, made by a background thread at most `depth`
    ahead of the consumer (depth 0: in the consumer's thread). An error raised while making
    them is raised here, at the item it replaced; a consumer that stops early stops the thread
    and closes `items` (and so whatever is behind it: a decoder, a store). Memory: `depth`
    items waiting, one being made, one in use."""
    if depth <= 0:
        yield from items
        return
    slots, stop = queue.Queue(maxsize=depth), threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def make():
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as err:  # noqa: BLE001 (handed to the consumer, raised there)
            put(err)
        finally:
            items.close()

    worker = threading.Thread(target=make, name="actloc-ahead", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()

import threading
import time

import pytest

from actloc.engine.ahead import ahead
from actloc.io import InputError


def test_items_come_in_order_and_no_more_than_depth_ahead():
    made, seen = [], []

    def source():
        for i in range(20):
            made.append(i)
            yield i

    for item in ahead(source(), 3):
        time.sleep(0.005)  # a slow consumer: the producer waits for room
        assert len(made) - len(seen) <= 3 + 2  # waiting, being made, and this one
        seen.append(item)
    assert seen == list(range(20))
    assert list(ahead(iter(range(5)), 0)) == [0, 1, 2, 3, 4]


def test_an_error_while_producing_is_raised_at_its_item_and_a_consumer_stopping_early_closes_the_source():
    closed = []

    def source(fail_at=None):
        try:
            for i in range(1000):
                if i == fail_at:
                    raise InputError("video.mp4: stream ended inside a frame")
                yield i
        finally:
            closed.append(True)

    got = []
    with pytest.raises(InputError, match="stream ended"):
        for item in ahead(source(fail_at=7), 2):
            got.append(item)
    assert got == list(range(7))
    stream = ahead(source())
    assert next(stream) == 0
    stream.close()  # the consumer stops: the producer thread stops and closes its source
    assert closed == [True, True]
    assert not any(t.name == "actloc-ahead" for t in threading.enumerate())

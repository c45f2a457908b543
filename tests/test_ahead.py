import threading
import time

import pytest

from actloc.engine.ahead import ahead


def test_items_come_in_order_prepared_and_no_more_than_depth_ahead():
    made, seen = [], []

    def source():
        for i in range(20):
            made.append(i)
            yield i

    for item in ahead(source(), 3, prepare=lambda i: i * 10):
        time.sleep(0.005)  # a slow consumer: the producer waits for room
        assert len(made) - len(seen) <= 3 + 2  # waiting, being made, and this one
        seen.append(item)
    assert seen == [i * 10 for i in range(20)]
    assert list(ahead(iter(range(5)), 0, prepare=str)) == ["0", "1", "2", "3", "4"]


def test_an_error_while_producing_is_raised_to_the_consumer_at_its_item():
    def source():
        yield 1
        yield 2
        raise ValueError("store damaged")

    got = []
    with pytest.raises(ValueError, match="store damaged"):
        for item in ahead(source(), 2):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    items = ahead(endless(), 2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert not any(t.name == "actloc-read-ahead" for t in threading.enumerate())

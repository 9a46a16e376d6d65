from pipeline.queues import StreamQueue


def test_live_stream_keeps_the_newest_and_counts_drops() -> None:
    queue: StreamQueue[int] = StreamQueue()
    for i in range(5):
        queue.put("cam", i, live=True)
    assert queue.take_fair(10) == [4]
    assert queue.take_drops("cam") == 4
    assert queue.take_drops("cam") == 0


def test_offline_stream_loses_nothing() -> None:
    queue: StreamQueue[int] = StreamQueue()
    for i in range(5):
        queue.put("file", i, live=False)
    assert queue.take_fair(3) == [0, 1, 2]
    assert queue.take_fair(3) == [3, 4]
    assert queue.take_drops("file") == 0


def test_batches_are_fair_across_streams() -> None:
    queue: StreamQueue[str] = StreamQueue()
    for i in range(4):
        queue.put("a", f"a{i}", live=False)
    queue.put("b", "b0", live=False)
    queue.put("c", "c0", live=True)
    assert queue.take_fair(3) == ["a0", "b0", "c0"]
    queue.put("b", "b1", live=False)
    # a was served longest ago, so it goes first in the next round
    assert queue.take_fair(3) == ["a1", "b1", "a2"]

import zmq

from pipeline.queues import Drops, StreamQueue, send_or_drop


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


class WaitingStage:
    """Heartbeats while it waits; asked to stop after ``beats`` of them."""

    def __init__(self, beats: int) -> None:
        self.beats, self.stopping, self.limit = 0, False, beats

    def beat(self) -> None:
        self.beats += 1
        self.stopping = self.beats >= self.limit


def test_live_never_waits_and_offline_waits_heartbeating_until_stopped() -> None:
    context = zmq.Context()
    try:
        unheard = context.socket(zmq.PUSH)  # connected to no consumer: never room
        stage = WaitingStage(beats=2)
        assert not send_or_drop(unheard, b"frame", live=True, stage=stage) and stage.beats == 0
        assert not send_or_drop(unheard, b"frame", live=False, stage=stage) and stage.beats == 2
        consumer = context.socket(zmq.PULL)
        consumer.bind("inproc://consumer")
        producer = context.socket(zmq.PUSH)
        producer.connect("inproc://consumer")
        assert send_or_drop(producer, b"frame", live=False, stage=WaitingStage(beats=1))
        assert consumer.recv() == b"frame"
    finally:
        context.destroy(linger=0)


def test_drops_travel_on_with_the_next_message() -> None:
    drops = Drops()
    drops.add("cam", "capture", 0)
    drops.add_all("cam", {"capture": 2, "preprocess": 1})
    drops.add("cam", "inference")
    assert drops.take("cam") == {"capture": 2, "preprocess": 1, "inference": 1}
    assert drops.take("cam") == {}

"""The backpressure rule in one place: live streams keep their newest item, offline ones queue.

>>> queue = StreamQueue()
>>> queue.put("cam1", ref1, live=True); queue.put("cam1", ref2, live=True)  # ref1 dropped
>>> queue.take_fair(8)    # one item per stream per round, starting after the last served
[ref2]

A consumer drains its socket into the queue, then takes what it can process. A
live stream that is behind so loses its oldest frames (counted per stream), and its
latency stays bounded; an offline stream loses nothing, its producer waits for credit.
A producer sends with ``send_or_drop``, the same rule on its side, and a stage that drops
keeps the counts in ``Drops`` until they travel on with the stream's next message.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict, deque
from typing import Generic, Protocol, TypeVar

import zmq

Item = TypeVar("Item")


class StreamQueue(Generic[Item]):
    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[Item]] = OrderedDict()
        self.dropped: Counter[str] = Counter()  # per stream, since the last take_drops()

    def put(self, stream: str, item: Item, live: bool) -> None:
        queue = self._queues.setdefault(stream, deque())
        if live and queue:
            self.dropped[stream] += len(queue)
            queue.clear()
        queue.append(item)

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def take_fair(self, limit: int) -> list[Item]:
        """Up to ``limit`` items, round-robin across streams; served streams move to the back."""
        taken: list[Item] = []
        while len(taken) < limit and len(self):
            for stream in list(self._queues):
                queue = self._queues[stream]
                if queue and len(taken) < limit:
                    taken.append(queue.popleft())
                    self._queues.move_to_end(stream)
        return taken

    def take_drops(self, stream: str) -> int:
        return self.dropped.pop(stream, 0)


class Heartbeating(Protocol):
    """What waits offline: a stage, which heartbeats while it waits and stops waiting when stopped."""

    stopping: bool

    def beat(self) -> None: ...


def send_or_drop(socket: zmq.Socket, payload: bytes, live: bool, stage: Heartbeating) -> bool:
    """The producer's side of the rule: live never waits, so a consumer that is behind loses this
    payload; offline waits for room, heartbeating, until there is some or the stage is stopping.
    False: not sent, a drop for the caller to count."""
    while not live and not socket.poll(200, zmq.POLLOUT) and not stage.stopping:
        stage.beat()
    try:
        socket.send(payload, zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True


class Drops:
    """Frames a stream lost on its way, by the stage that dropped them, kept until they travel on
    with the stream's next message: a stage adds its own drops and those a message brought.

    >>> drops = Drops()
    >>> drops.add("cam1", "capture", 2); drops.add("cam1", "preprocess")
    >>> drops.take("cam1")
    {'capture': 2, 'preprocess': 1}
    """

    def __init__(self) -> None:
        self._streams: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def add(self, stream: str, stage: str, count: int = 1) -> None:
        self._streams[stream][stage] += count

    def add_all(self, stream: str, counts: dict[str, int]) -> None:
        """Counts by stage that a message brought, or that a message not sent takes back."""
        for stage, count in counts.items():
            self.add(stream, stage, count)

    def take(self, stream: str) -> dict[str, int]:
        """What ``stream`` lost since the last take, by stage (a stage that added 0 is listed)."""
        return dict(self._streams.pop(stream, {}))

"""The backpressure rule in one place: live streams keep their newest item, offline ones queue.

>>> queue = StreamQueue()
>>> queue.put("cam1", ref1, live=True); queue.put("cam1", ref2, live=True)  # ref1 dropped
>>> queue.take_fair(8)    # one item per stream per round, starting after the last served
[ref2]

A consumer drains its socket into the queue, then takes what it can process. A
live stream that is behind so loses its oldest frames (counted per stream), and its
latency stays bounded; an offline stream loses nothing, its producer waits for credit.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from typing import Generic, TypeVar

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

"""Violation events: a K-of-N rule over a stream's frames, with a cool-down."""

from __future__ import annotations

import time
from collections import deque

from stages.settings import EventRule


class ViolationRule:
    """Feed it each frame's class names and scores; it fires when ``class`` was in K of the last N frames."""

    def __init__(self, rule: EventRule) -> None:
        self.rule = rule
        self.window: deque[bool] = deque(maxlen=rule.window)
        self.last_fired = float("-inf")

    def observe(self, names: list[str], scores: list[float], now: float | None = None) -> int | None:
        """Record one frame; when the rule fires on it, the frames seen in the window (which starts afresh)."""
        now = time.monotonic() if now is None else now
        seen = any(n == self.rule.class_name and s >= self.rule.min_conf for n, s in zip(names, scores))
        self.window.append(seen)
        if sum(self.window) >= self.rule.min_frames and now - self.last_fired >= self.rule.cooldown_s:
            self.last_fired = now
            frames_seen = sum(self.window)
            self.window.clear()
            return frames_seen
        return None

"""A failure said once, then the same again at most every so often with how often it came meanwhile:
a camera lost the same way every few seconds all night, or a broker out of reach, must neither fill
the log nor fall silent.

>>> said = RepeatedFailure(every_s=300)
>>> said.again("refused"), said.again("refused"), said.again("timed out")
('', None, '')
"""

from __future__ import annotations

import time


class RepeatedFailure:
    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.reset()

    def again(self, why: str) -> str | None:
        """What to add to the line that says ``why`` now ('', or how often it came unsaid since), or None:
        not now, the same was said less than ``every_s`` ago (counted)."""
        now = time.monotonic()
        if why == self.said and now - self.at < self.every_s:
            self.unsaid += 1
            return None
        repeated = why == self.said and self.unsaid  # another failure's count is not this one's
        suffix = f" ({self.unsaid} more times since it was last said)" if repeated else ""
        self.said, self.at, self.unsaid = why, now, 0
        return suffix

    def reset(self) -> None:
        """It works again: its next failure is said at once."""
        self.said, self.at, self.unsaid = "", 0.0, 0

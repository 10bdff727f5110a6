"""Logging that stays readable when something goes wrong over and over: a device that is
down for hours, or a platform sending thousands of bad commands, must cost a few lines, not
one per poll or per message (used by the drivers and the daemon alike). `Episode` logs the first failure, then at most one summary per
`every_s` (wall seconds) with the count and the last reason, and the recovery once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


def span(seconds: float) -> str:
    """A duration as people read it in a log: 45 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Episode:
    """One thing that fails and maybe recovers. The messages are %-format strings over the
    fields `reason` (the last one), `count` (failures so far in this episode), `more` (since
    the last line), `since` (how long it has lasted) and `gap` (since the last line), the
    durations as `span` words them:

    - `first` at `level` on the first failure,
    - `still` at `level` on a failure at least `every_s` after the last line said anything,
    - `ended` at INFO on `ok()` after failures (nothing when None).

    `flush()` says `still` now if failures went unsaid (on the way down, say).
    """

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, first: str, still: str,
                 ended: str | None = None, every_s: float = 600.0, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.first, self.still, self.ended = log, first, still, ended
        self.every_s, self.level, self.clock = every_s, level, clock
        self.count = 0
        self._more = 0
        self._since = self._said = 0.0
        self._reason = ""

    @property
    def failing(self) -> bool:
        return self.count > 0

    def failed(self, reason: str) -> None:
        now = self.clock()
        self._reason = reason
        if self.count == 0:
            self.count, self._more, self._since, self._said = 1, 0, now, now
            self.log.log(self.level, self.first, self._fields(now))
            return
        self.count += 1
        self._more += 1
        if now - self._said >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self._more:
            now = self.clock()
            self.log.log(self.level, self.still, self._fields(now))
            self._said, self._more = now, 0

    def ok(self) -> None:
        if self.count and self.ended is not None:
            self.log.info(self.ended, self._fields(self.clock()))
        self.count = 0

    def _fields(self, now: float) -> dict[str, object]:
        return {"reason": self._reason, "count": self.count, "more": self._more,
                "since": span(now - self._since), "gap": span(now - self._said)}

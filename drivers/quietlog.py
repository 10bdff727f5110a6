"""Logging that stays readable when something goes wrong over and over: a device that is
down for hours, or a platform sending thousands of bad commands, must cost a few lines, not
one per poll or per message (used by the drivers and the daemon alike). `Episode` logs the
first failure, then at most one summary per `every_s` (wall seconds) with the count and the
last reason, and the recovery once. A thing that fails again within `every_s` of recovering
is flapping: that is the same episode, not a new one (two lines per flap would be a flood)."""

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
    the last line), `since` (how long it has lasted), `gap` (since the last line), the
    durations as `span` words them, and `between` (", N short recoveries" once it flapped,
    else empty):

    - `first` at `level` on the first failure,
    - `still` at `level` on a failure at least `every_s` after the last line said anything,
    - `ended` at INFO on the first `ok()` after failures (nothing when None). The episode
      stays open for `every_s` after that: a failure meanwhile continues it without a line,
      and then `ended` is said again only once it has stayed up for `every_s`.

    `flush()` says `still` now if failures went unsaid (on the way down, say).
    """

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, first: str, still: str,
                 ended: str | None = None, every_s: float = 600.0, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.first, self.still, self.ended = log, first, still, ended
        self.every_s, self.level, self.clock = every_s, level, clock
        self.count = 0
        self._more = self._recoveries = 0
        self._since = self._said = 0.0
        self._up_at: float | None = None  # when it last recovered, while the episode is open
        self._reason = ""

    @property
    def failing(self) -> bool:
        return self.count > 0 and self._up_at is None

    def failed(self, reason: str) -> None:
        now = self.clock()
        self._reason = reason
        if self.count == 0:
            self.count, self._more, self._since, self._said = 1, 0, now, now
            self._recoveries, self._up_at = 0, None
            self.log.log(self.level, self.first, self._fields(now))
            return
        if self._up_at is not None:
            self._recoveries += 1
            self._up_at = None
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
        if not self.count:
            return
        now = self.clock()
        if self._up_at is None:
            self._up_at = now
            if not self._recoveries:
                self._say_ended()
        if now - self._up_at >= self.every_s:
            if self._recoveries:
                self._say_ended()
            self.count = 0

    def _say_ended(self) -> None:
        if self.ended is not None:
            self.log.info(self.ended, self._fields(self._up_at))

    def _fields(self, now: float) -> dict[str, object]:
        between = f", {self._recoveries} short recoveries" if self._recoveries else ""
        return {"reason": self._reason, "count": self.count, "more": self._more,
                "since": span(now - self._since), "gap": span(now - self._said),
                "between": between}

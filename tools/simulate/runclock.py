"""The clock of a `pedf-edge simulate` run: accelerated, except through the windows where
tenths of a second matter. A grid outage's transfer (detection, the breaker opening, the PCS
forming) takes a few seconds; at ×240 one control cycle (the 50 Hz wall floor) and even one
Modbus poll span simulated seconds, so the run would time the simulator rather than the
controller. Through a window the clock runs in real time (×1) and the controller meets the
outage as it would on site; outside, the run keeps its speed."""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from datetime import datetime

from edge.app.clock import Clock

REAL_TIME = 1.0
BEFORE_S, AFTER_S = 5.0, 30.0  # the real-time window around a grid outage (simulated s)


class RunClock(Clock):
    """Simulated time stands still until `release()` (the controller connects and takes its
    first cycle before the scenario's first second) and stops at `end_s` (the HIL meters
    exactly the scenario, whatever the teardown takes). `real_time`: (from, to) simulated
    seconds that run at ×1; `speed` is the speed in force now."""

    def __init__(self, start: datetime, speed: float, end_s: float,
                 real_time: Iterable[tuple[float, float]] = ()) -> None:
        self.fast = speed
        self._knots: list[tuple[float, float, float]] = [(0.0, 0.0, speed)]
        super().__init__(start, speed)
        self.end_s = end_s
        self._released = False
        slow = [(max(a, 0.0), b) for a, b in real_time if b > a]
        for t in sorted({0.0, *(x for w in slow for x in w)}):
            v = REAL_TIME if any(a <= t < b for a, b in slow) else speed
            t0, w0, v0 = self._knots[-1]
            self._knots.append((t, w0 + (t - t0) / v0, v))
        del self._knots[0]  # (sim s, wall s after the release, speed from there on)

    @property  # type: ignore[override]
    def speed(self) -> float:
        return self._knot(self.elapsed_s(), 0)[2]

    @speed.setter
    def speed(self, value: float) -> None:
        self.fast = value  # Clock.__init__ sets it; the knots carry the speeds

    def _knot(self, x: float, axis: int) -> tuple[float, float, float]:
        """The segment that simulated (axis 0) or wall (axis 1) time x falls in."""
        i = bisect.bisect_right(self._knots, x, key=lambda k: k[axis]) - 1
        return self._knots[max(i, 0)]

    def _wall_of(self, t_s: float) -> float:
        t0, w0, v = self._knot(t_s, 0)
        return w0 + (t_s - t0) / v

    def release(self) -> None:
        self.t0 = time.monotonic()
        self._released = True

    def elapsed_s(self) -> float:
        if not self._released:
            return 0.0
        wall = time.monotonic() - self.t0
        t0, w0, v = self._knot(wall, 1)
        return min(t0 + (wall - w0) * v, self.end_s)

    def wall_s(self, sim_seconds: float) -> float:
        now = self.elapsed_s()
        return self._wall_of(now + sim_seconds) - self._wall_of(now)

    def real_time_s(self) -> float:
        """Simulated (= wall) seconds the run spends in real time."""
        ends = [k[0] for k in self._knots[1:]] + [self.end_s]
        return sum(max(min(b, self.end_s) - a, 0.0) for (a, _, v), b in zip(self._knots, ends)
                   if v == REAL_TIME != self.fast)


def outage_windows(starts_s: Iterable[float]) -> list[tuple[float, float]]:
    """The real-time windows around grid outages starting at these simulated seconds."""
    return [(t - BEFORE_S, t + AFTER_S) for t in starts_s]

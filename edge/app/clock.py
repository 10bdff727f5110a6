"""One clock for the daemon and the HIL: real time, or simulated time running `speed`
times faster than the wall from a given start. Both sides of a demo share one instance so
physics, control and telemetry agree on what time it is."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, start: datetime | None = None, speed: float = 1.0,
                 t0: float | None = None) -> None:
        """`t0`: the monotonic instant simulated time starts (default: now). CLOCK_MONOTONIC
        is one clock for every process of a machine, so a simulator in another process given
        the same start, speed and t0 keeps the same simulated time."""
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if start is not None and start.tzinfo is None:
            raise ValueError("start must carry a UTC offset")
        self.speed = speed
        self.start = (start or datetime.now(UTC)).astimezone(UTC)
        self.t0 = time.monotonic() if t0 is None else t0
        # A real-time daemon follows the wall clock (NTP may correct it after boot on a box
        # without an RTC); only a HIL run with its own start and speed is pure simulation.
        self._wall = start is None and speed == 1.0

    @property
    def wall(self) -> bool:
        """now() is the wall clock itself (a real-time daemon, not a HIL run)."""
        return self._wall

    @property
    def simulated(self) -> bool:
        return self.speed != 1.0

    def elapsed_s(self) -> float:
        """Simulated seconds since start (monotonic)."""
        return (time.monotonic() - self.t0) * self.speed

    def now(self) -> datetime:
        """Current (simulated) time, aware, in UTC."""
        if self._wall:
            return datetime.now(UTC)
        return self.start + timedelta(seconds=self.elapsed_s())

    def wall_s(self, sim_seconds: float) -> float:
        """Wall seconds that `sim_seconds` of simulated time take."""
        return sim_seconds / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds / self.speed))

"""One clock for the daemon and the HIL: real time, or simulated time running `speed`
times faster than the wall from a given start. Both sides of a demo share one instance so
physics, control and telemetry agree on what time it is."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.app.statedir import HIL_LOCK, StateLock

log = logging.getLogger(__name__)

HIL_CLOCK = "hil-clock.json"  # written by `pedf-edge hil`, read by `pedf-edge run --hil-clock`
RUN_CLOCK = "sim-clock.json"  # `pedf-edge run --speed N`'s own, so a restart resumes it


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
        await asyncio.sleep(max(0.0, self.wall_s(sim_seconds)))

    @property
    def epoch(self) -> float:
        """The wall instant (Unix s) at which simulated time was `start`: with start and
        speed, all another process (or this one after a restart) needs to keep this time."""
        return time.time() - (time.monotonic() - self.t0)

    def save(self, path: Path) -> None:
        """Write start, speed and epoch to `path` at once (a reader never sees half)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"start": self.start.isoformat(), "speed": self.speed,
                                   "epoch": self.epoch}))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Clock:
        """The clock `save` wrote; OSError or ValueError when there is none to read."""
        data = json.loads(path.read_text())
        try:
            start = datetime.fromisoformat(data["start"])
            speed, epoch = float(data["speed"]), float(data["epoch"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a clock file ({exc})") from None
        return cls(start, speed, t0=time.monotonic() - (time.time() - epoch))


class NoHilClock(RuntimeError):
    """`run --hil-clock` without a `pedf-edge hil` running on the state dir."""


def hil_clock(directory: Path, wait_s: float = 2.0) -> Clock:
    """The running HIL's clock: its lock held means it is alive, its clock file says the
    time (a HIL that has just taken its lock gets `wait_s` to write the file)."""
    path = directory / HIL_CLOCK
    if not StateLock(directory, HIL_LOCK).held_elsewhere():
        raise NoHilClock(f"no `pedf-edge hil` is running on the state dir {directory}; start "
                         "it first (pedf-edge hil -c CONFIG, in another terminal), then this")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            clock = Clock.load(path)
            log.info("on the running HIL's clock (%s): now %s, x%g", path,
                     clock.now().isoformat(timespec="seconds"), clock.speed)
            return clock
        except (OSError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise NoHilClock(f"the running HIL's clock {path} is unreadable ({exc}); "
                                 "restart pedf-edge hil") from None
        time.sleep(0.05)


def resumed_clock(directory: Path, start: datetime, speed: float) -> Clock:
    """`run --speed N`: simulated time from `start`, kept in the state dir so a restarted
    daemon goes on where the simulation is now (simulated time passes while it is down,
    as real time does, so it never runs backwards over the stored history). A different
    start or speed, or a missing file, starts again from `start`."""
    path = directory / RUN_CLOCK
    try:
        saved = Clock.load(path)
    except (OSError, ValueError):
        saved = None
    if saved is not None and saved.start == start and saved.speed == speed:
        log.info("resuming simulated time at %s (x%g from %s); delete %s to start again "
                 "from hil.start", saved.now().isoformat(timespec="seconds"), speed,
                 start.isoformat(), path)
        return saved
    clock = Clock(start, speed)
    clock.save(path)
    return clock

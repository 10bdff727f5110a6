"""The daemon's OCPP driver on the run's clock, for the length of a simulated run.

The driver (drivers/ocpp) keeps wall time: its charging profiles start at datetime.now()
and its writer times raises, refreshes and retries on time.monotonic(). The HIL's charge
points live on the simulated clock, as a charger synchronised to the CSMS would. Left on
wall time, every limit would start months from the charger's now (never in force: the cars
charge at the charger's maximum) and, at ×720, lapse hundreds of times over before the
writer refreshes it. Until the driver takes the daemon's clock, a run swaps in these two
time sources and puts the originals back afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

from edge.app.clock import Clock


@contextlib.contextmanager
def on_run_clock(clock: Clock) -> Iterator[None]:
    try:
        from drivers.ocpp import charger, point, writer
    except ImportError:  # a build without the CSMS: nothing to put on the clock
        yield
        return

    class RunDatetime(datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206 - datetime's own signature
            now = clock.now()
            return now.astimezone(tz) if tz is not None else now.replace(tzinfo=None)

    class RunWriter(writer.Writer):
        """Times in simulated seconds; the waits between them in wall seconds."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, clock=clock.elapsed_s, **kwargs)

        async def step(self) -> float | None:
            delay = await super().step()
            return None if delay is None else delay / clock.speed

    saved = point.datetime, charger.Writer
    point.datetime, charger.Writer = RunDatetime, RunWriter
    try:
        yield
    finally:
        point.datetime, charger.Writer = saved

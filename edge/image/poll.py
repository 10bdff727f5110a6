"""Poll every device at once and freeze what came back into one timestamped process image,
with each device's quality: a device whose poll fails `stale_after_cycles` times in a row is
STALE, so is one whose role finds its reading physically implausible (Role.implausible: a
broken sensor that still answers), and a slow value (nameplate, energy counter) not re-read
for a while is STALE on its own. A failing device is that device's problem, never the
cycle's; the log says so once, then sums it up every SUMMARY_S while it lasts, and says when
it answers again (a device that fails on and off is one outage until it has answered for
SUMMARY_S)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from drivers.base import Device, DeviceError, Quality, Reading
from drivers.quietlog import Episode
from edge.app.clock import Clock
from edge.config import Config, poll_deadline_s
from edge.image.image import DeviceState, ProcessImage
from edge.roles import role_of

log = logging.getLogger("edge.cycle")

SUMMARY_S = 600.0  # wall seconds between two lines about a device that stays down
_CHECK = ("check that it is powered and connected, and its host, port and unit id in the "
          "config; retrying every cycle")


def _outage(dev_id: str) -> Episode:
    who = dev_id.replace("%", "%%")
    return Episode(log, f"device {who}: %(reason)s; {_CHECK}",
                   f"device {who}: still failing after %(since)s, %(count)d polls failed"
                   "%(between)s; last error: %(reason)s",
                   f"device {who}: answers again after %(since)s (%(count)d polls failed"
                   "%(between)s)",
                   every_s=SUMMARY_S)


@dataclass(slots=True)
class DeviceHealth:
    reading: Reading | None = None
    failed_polls: int = 0
    errors: int = 0
    last_error: str = ""


class Poller:
    def __init__(self, config: Config, devices: dict[str, Device], clock: Clock) -> None:
        self.config = config
        self.devices = devices
        self.clock = clock
        self.health = {d.id: DeviceHealth() for d in config.devices}
        self._cfg = {d.id: d for d in config.devices}
        self.outages = {d.id: _outage(d.id) for d in config.devices}
        self._last_sim_s: float | None = None
        self._plausible_last: dict[str, tuple[dict[str, float], float]] = {}  # values, sim s
        self._implausible: dict[str, str] = {}  # device -> why, while it lasts

    async def poll(self, period_wall_s: float) -> None:
        """Every device at once, under one deadline (they all start together: one timer,
        not one per device); a device still polling at the deadline is cancelled and has
        timed out. Then the writes drivers defer to the end of the round (SunSpec
        heartbeats), which would otherwise delay the replies slower devices wait for."""
        timeout = poll_deadline_s(period_wall_s)
        tasks = {d: asyncio.ensure_future(dev.poll()) for d, dev in self.devices.items()}
        try:
            _, late = await asyncio.wait(tasks.values(), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        finally:
            for task in tasks.values():
                task.cancel()  # done ones ignore it; the rest only if this poll is cancelled
            for dev in self.devices.values():
                send = getattr(dev, "send_deferred", None)
                if send is not None:
                    send()
        for dev_id, task in tasks.items():
            self._record(dev_id, task)

    def _record(self, dev_id: str, task: asyncio.Future[Reading]) -> None:
        h = self.health[dev_id]
        exc = TimeoutError() if task.cancelled() else task.exception()
        if exc is None:
            reading = task.result()
            if h.reading is None:
                self._check_nameplate(dev_id, reading)
            h.reading = reading
            h.failed_polls = 0
            self.outages[dev_id].ok()
            return
        if not isinstance(exc, Exception):
            raise exc  # not a device fault (KeyboardInterrupt, SystemExit)
        # Any device fault is that device's, not the cycle's.
        h.failed_polls += 1
        h.errors += 1
        msg = str(exc) or type(exc).__name__
        if not isinstance(exc, (DeviceError, TimeoutError, OSError)):
            msg = f"{type(exc).__name__}: {msg}"
        self.failed(dev_id, f"poll failed: {msg}")
        h.last_error = msg

    def failed(self, dev_id: str, reason: str) -> None:
        """Count a failure to reach the device toward its outage (the log's view of it)."""
        self.outages[dev_id].failed(reason)

    def _check_nameplate(self, dev_id: str, reading: Reading) -> None:
        """Say once when the config asks more than the device's own nameplate: the device
        caps the setpoint, and the site would plan on power it does not have."""
        cfg = self._cfg[dev_id]
        for name, configured, key in role_of(cfg).nameplate_checks(cfg):
            device = reading.values.get(key)
            if device is not None and configured > device + 1e-6:
                log.warning("device %s: config %s %.1f kW exceeds the device's %.1f kW; "
                            "the device caps it - fix the config", dev_id, name, configured, device)

    def build_image(self, period_wall_s: float) -> ProcessImage:
        now_s = self.clock.elapsed_s()
        dt = 0.0 if self._last_sim_s is None else now_s - self._last_sim_s
        self._last_sim_s = now_s
        limit = self.config.control.stale_after_cycles
        slow_limit = self.config.control.slow_stale_after_cycles * period_wall_s
        states = {}
        for dev_id, h in self.health.items():
            if h.reading is None:
                q = Quality.INVALID
            elif h.failed_polls >= limit:
                q = Quality.STALE
            else:
                q = self._plausible(dev_id, h.reading, now_s)
            states[dev_id] = DeviceState(h.reading, q, h.failed_polls,
                                         _old_slow(h.reading, slow_limit))
        return ProcessImage(self.clock.now(), dt or self.config.control.cycle_s, states)

    def _plausible(self, dev_id: str, reading: Reading, now_s: float) -> Quality:
        """GOOD, or STALE while the role finds the reading implausible (a broken sensor
        that still answers): said once when it starts and once when it ends."""
        cfg = self._cfg[dev_id]
        last = self._plausible_last.get(dev_id)
        why = role_of(cfg).implausible(cfg, reading.values, last and last[0],
                                       now_s - last[1] if last else math.inf)
        if why is None:
            self._plausible_last[dev_id] = (reading.values, now_s)
            if self._implausible.pop(dev_id, None) is not None:
                log.info("device %s: its readings are plausible again", dev_id)
            return Quality.GOOD
        if dev_id not in self._implausible:
            log.warning("device %s: %s; STALE (its safe state) until it reads plausibly again",
                        dev_id, why)
            self._implausible[dev_id] = why
        return Quality.STALE


def _old_slow(reading: Reading | None, limit_s: float) -> frozenset[str]:
    """Slow values not refreshed within `limit_s` wall seconds (counted in wall periods, so an
    accelerated HIL clock does not age them faster than they are read)."""
    if reading is None or not reading.stamps:
        return frozenset()
    now = time.monotonic()
    return frozenset(k for k in reading.stamps if reading.value_age_s(k, now) > limit_s)

"""The control cycle: poll every device at once -> one process image -> control functions
-> compiled kernel -> setpoints written on change and before revert timers expire.

A cycle never stops: a failing function is skipped, a failing device is marked stale and
put in its safe state, and a crash of the cycle body puts every device in its safe state
and the next cycle starts fresh.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from drivers.base import Device, DeviceError, Quality, Reading
from edge import dispatch
from edge.clock import Clock
from edge.config import BatteryDevice, Config, PvDevice
from edge.control import SiteBounds, run_functions
from edge.image import DeviceState, ProcessImage

log = logging.getLogger(__name__)

_LIMIT_SLACK_KW = 0.05  # below this a limit excursion is measurement noise, not a violation


@dataclass(frozen=True, slots=True)
class Decision:
    ts: datetime
    mode: str
    bounds: SiteBounds
    bess_kw: dict[str, float]
    pv_limit_kw: dict[str, float]
    expected_grid_kw: float
    status: int
    failed_functions: tuple[str, ...] = ()


@dataclass(slots=True)
class _Written:
    value: float | None = None
    at_s: float = -math.inf  # clock.elapsed_s() of the last successful write
    failed: bool = False


@dataclass(slots=True)
class DeviceHealth:
    reading: Reading | None = None
    failed_polls: int = 0
    errors: int = 0
    last_error: str = ""


@dataclass(slots=True)
class CycleStats:
    cycles: int = 0
    crashes: int = 0
    durations_ms: deque = field(default_factory=lambda: deque(maxlen=10_000))


class ControlCycle:
    def __init__(self, config: Config, devices: dict[str, Device], kernel, clock: Clock) -> None:
        self.config = config
        self.devices = devices
        self.kernel = kernel
        self.clock = clock
        self.batteries: list[BatteryDevice] = [d for d in config.devices if isinstance(d, BatteryDevice)]
        self.pvs: list[PvDevice] = [d for d in config.devices if isinstance(d, PvDevice)]
        self._pv_ids = {p.id for p in self.pvs}
        self.health = {d.id: DeviceHealth() for d in config.devices}
        self._written = {d.id: _Written() for d in (*self.batteries, *self.pvs)}
        self._bess = np.zeros((len(self.batteries), dispatch.NB))
        self._pv = np.zeros((len(self.pvs), dispatch.NV))
        self._last_sim_s: float | None = None
        self.image: ProcessImage | None = None
        self.decision: Decision | None = None
        self.stats = CycleStats()

    @property
    def period_wall_s(self) -> float:
        """Wall seconds between cycles: the configured (simulated) period, sped up, but never
        faster than 50 Hz so an accelerated HIL run cannot starve the devices."""
        return max(self.config.control.cycle_s / self.clock.speed, 0.02)

    def check_revert_timers(self) -> list[str]:
        """Devices whose revert timer would expire before the cycle can re-write them."""
        sim_period = self.period_wall_s * self.clock.speed
        margin = self.config.control.rewrite_margin
        return [d.id for d in (*self.batteries, *self.pvs) if d.revert_s * margin < sim_period]

    # -- 1. poll -------------------------------------------------------------------------
    async def _poll_one(self, dev_id: str, timeout: float) -> None:
        h = self.health[dev_id]
        try:
            reading = await asyncio.wait_for(self.devices[dev_id].poll(), timeout)
            if h.reading is None:
                self._check_nameplate(dev_id, reading)
            h.reading = reading
            h.failed_polls = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any device fault is that device's, not the cycle's
            h.failed_polls += 1
            h.errors += 1
            msg = str(exc) or type(exc).__name__
            if not isinstance(exc, (DeviceError, TimeoutError, OSError)):
                msg = f"{type(exc).__name__}: {msg}"
            if h.failed_polls == 1 or msg != h.last_error:
                log.warning("device %s: poll failed: %s", dev_id, msg)
            h.last_error = msg

    def _check_nameplate(self, dev_id: str, reading: Reading) -> None:
        """Say once when the config asks more than the device's own nameplate: the device
        caps the setpoint, and the site would plan on power it does not have."""
        cfg = next(d for d in self.config.devices if d.id == dev_id)
        checks = []
        if isinstance(cfg, BatteryDevice):
            checks = [("max_charge_kw", cfg.max_charge_kw, "max_charge_kw")]
        elif isinstance(cfg, PvDevice):
            checks = [("rated_kw", cfg.rated_kw, "rated_kw")]
        for name, configured, key in checks:
            device = reading.values.get(key)
            if device is not None and configured > device + 1e-6:
                log.warning("device %s: config %s %.1f kW exceeds the device's %.1f kW; "
                            "the device caps it - fix the config", dev_id, name, configured, device)

    async def poll(self) -> None:
        timeout = max(0.8 * self.period_wall_s, 0.2)
        await asyncio.gather(*(self._poll_one(d, timeout) for d in self.devices))

    def build_image(self) -> ProcessImage:
        now_s = self.clock.elapsed_s()
        dt = 0.0 if self._last_sim_s is None else now_s - self._last_sim_s
        self._last_sim_s = now_s
        limit = self.config.control.stale_after_cycles
        states = {}
        for dev_id, h in self.health.items():
            if h.reading is None:
                q = Quality.INVALID
            elif h.failed_polls >= limit:
                q = Quality.STALE
            else:
                q = Quality.GOOD
            states[dev_id] = DeviceState(h.reading, q, h.failed_polls)
        return ProcessImage(self.clock.now(), dt or self.config.control.cycle_s, states)

    # -- 2. decide -----------------------------------------------------------------------
    def _safe_power(self, image: ProcessImage, b: BatteryDevice) -> float:
        """The configured safe power, but never discharging an empty or charging a full one."""
        p = b.safe_power_kw
        if p and image.good(b.id):
            soc = image.value(b.id, "soc_pct")
            if (p > 0 and soc <= b.soc_min_pct) or (p < 0 and soc >= b.soc_max_pct):
                return 0.0
        return p

    def _safe_decision(self, image: ProcessImage, mode: str, failed=()) -> Decision:
        return Decision(
            ts=image.ts,
            mode=mode,
            bounds=SiteBounds(),
            bess_kw={b.id: self._safe_power(image, b) for b in self.batteries},
            pv_limit_kw={p.id: self.config.pv_safe_kw(p) for p in self.pvs},
            expected_grid_kw=math.nan,
            status=0,
            failed_functions=tuple(failed),
        )

    def decide(self, image: ProcessImage) -> Decision:
        cfg = self.config.control
        grid_id = self.config.grid_meter.id
        if not image.good(grid_id):
            return self._safe_decision(image, "safe")
        for dev_id, state in image.devices.items():
            if state.quality is not Quality.GOOD and dev_id in self._written:
                # Its revert timer may have moved it since: ramp from what it reports next.
                self._written[dev_id].value = None
        if image.devices[grid_id].failed_polls and self.decision is not None:
            # The PCC value predates our last writes; deciding on it would count the last
            # battery step twice. Hold the setpoints until a fresh reading arrives.
            return replace(self.decision, ts=image.ts, mode="hold")
        bounds, failed = run_functions(cfg.functions, image, cfg)
        for i, b in enumerate(self.batteries):
            row = self._bess[i]
            w = self._written[b.id].value
            if image.good(b.id):
                p = image.value(b.id, "power_kw")
                if image.devices[b.id].failed_polls and w is not None:
                    # The reading predates our last write: trust the setpoint, not the old
                    # power, or we would undo the last step and spike the grid.
                    p = w
                row[:] = (p, p if w is None else w, image.value(b.id, "soc_pct"), b.soc_min_pct,
                          b.soc_max_pct, b.max_charge_kw, b.max_discharge_kw, b.ramp_kw_per_s, 1.0)
            else:
                row[:] = (b.safe_power_kw, b.safe_power_kw, 0, b.soc_min_pct, b.soc_max_pct,
                          b.max_charge_kw, b.max_discharge_kw, b.ramp_kw_per_s, 0.0)
        for i, p in enumerate(self.pvs):
            row = self._pv[i]
            w = self._written[p.id].value
            if image.good(p.id):
                row[:] = (image.value(p.id, "power_kw"), p.rated_kw,
                          image.value(p.id, "limit_kw") if w is None else w, p.ramp_kw_per_s, 1.0)
            else:
                row[:] = (0.0, p.rated_kw, self.config.pv_safe_kw(p), p.ramp_kw_per_s, 0.0)
        result = dispatch.dispatch(
            self.kernel,
            grid_kw=image.value(grid_id, "power_kw"),
            import_limit_kw=bounds.import_limit_kw,
            export_limit_kw=bounds.export_limit_kw,
            grid_target_kw=bounds.grid_target_kw,
            dt_s=image.dt_s,
            bess=self._bess,
            pv=self._pv,
        )
        bess_kw = {}
        for i, b in enumerate(self.batteries):
            # Defence in depth: the kernel already clamps; this catches a broken build.
            v = float(result.bess_kw[i]) if image.good(b.id) else self._safe_power(image, b)
            bess_kw[b.id] = min(max(v, -b.max_charge_kw), b.max_discharge_kw)
        pv_kw = {}
        for i, p in enumerate(self.pvs):
            v = float(result.pv_limit_kw[i]) if image.good(p.id) else self.config.pv_safe_kw(p)
            pv_kw[p.id] = min(max(v, 0.0), p.rated_kw)
        mode = "+".join(n for n in cfg.functions if n not in failed) or "idle"
        return Decision(image.ts, mode, bounds, bess_kw, pv_kw, result.expected_grid_kw,
                        result.status, tuple(failed))

    # -- 3. write ------------------------------------------------------------------------
    def _due(self, dev_id: str, value: float, revert_s: int, now_s: float,
              deadband: float) -> bool:
        w = self._written[dev_id]
        if w.failed or w.value is None:
            return True
        if abs(value - w.value) > deadband:
            return True
        return now_s - w.at_s >= revert_s * self.config.control.rewrite_margin

    async def _write_one(self, dev_id: str, value: float, revert_s: int, now_s: float,
                         timeout: float) -> None:
        dev = self.devices[dev_id]
        w = self._written[dev_id]
        try:
            if dev_id in self._pv_ids:
                write = dev.write_limit(value, revert_s)  # type: ignore[attr-defined]
            else:
                write = dev.write_power(value, revert_s)  # type: ignore[attr-defined]
            await asyncio.wait_for(write, timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one device's fault must not stop the others
            if not w.failed:
                log.warning("device %s: write %.2f kW failed: %s", dev_id, value, exc)
            # Unknown what the device holds now: re-write next cycle, ramp from its reading.
            w.failed, w.value = True, None
            self.health[dev_id].errors += 1
            return
        w.value, w.at_s, w.failed = value, now_s, False

    def _limit_violated(self, decision: Decision) -> bool:
        """The PCC reading of this cycle is beyond an import or export bound."""
        image, b = self.image, decision.bounds
        grid = self.config.grid_meter.id
        if image is None or not image.good(grid) or image.devices[grid].failed_polls:
            return False
        kw = image.value(grid, "power_kw")
        return kw > b.import_limit_kw + _LIMIT_SLACK_KW or kw < -b.export_limit_kw - _LIMIT_SLACK_KW

    async def write(self, decision: Decision, force: bool = False) -> None:
        now_s = self.clock.elapsed_s()
        timeout = max(0.8 * self.period_wall_s, 0.2)
        # The deadband saves writes, but a limit being broken right now outranks that: then
        # any correction larger than measurement noise is written (DOMAIN §3, duty 4).
        deadband = _LIMIT_SLACK_KW if self._limit_violated(decision) else self.config.control.deadband_kw
        jobs = []
        for b in self.batteries:
            v = decision.bess_kw[b.id]
            if force or self._due(b.id, v, b.revert_s, now_s, deadband):
                jobs.append(self._write_one(b.id, v, b.revert_s, now_s, timeout))
        for p in self.pvs:
            v = decision.pv_limit_kw[p.id]
            if force or self._due(p.id, v, p.revert_s, now_s, deadband):
                jobs.append(self._write_one(p.id, v, p.revert_s, now_s, timeout))
        await asyncio.gather(*jobs)

    # -- the loop ------------------------------------------------------------------------
    async def step(self) -> Decision:
        t0 = time.perf_counter()
        await self.poll()
        self.image = self.build_image()
        try:
            decision = self.decide(self.image)
        except Exception:
            self.stats.crashes += 1
            log.exception("control cycle crashed; applying safe state")
            decision = self._safe_decision(self.image, "safe")
        self.decision = decision
        await self.write(decision)
        self.stats.cycles += 1
        self.stats.durations_ms.append((time.perf_counter() - t0) * 1000.0)
        return decision

    async def run(self, stop: asyncio.Event, on_cycle=None) -> None:
        """Run cycles on a fixed wall period until `stop` is set; never raises."""
        period = self.period_wall_s
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                await self.step()
                if on_cycle is not None:
                    on_cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.crashes += 1
                log.exception("control cycle failed outside decide; applying safe state")
                await self.apply_safe_state()
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()  # overrun: skip, don't burst
                delay = 0
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass

    async def apply_safe_state(self) -> None:
        """Write every device's safe state now; never raises (it runs on the way down)."""
        try:
            image = self.image or self.build_image()
            await self.write(self._safe_decision(image, "safe"), force=True)
        except Exception:  # noqa: BLE001
            log.exception("applying the safe state failed; device revert timers remain")

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
from edge.control import kernel as dispatch
from edge.app.clock import Clock
from edge.config import BatteryDevice, Config, FlexLoadDevice, PvDevice, poll_deadline_s
from edge.control.bounds import SiteBounds, run_functions
from edge.control.dcbus import DcBusMonitor, DcBusRestore
from edge.image.image import DeviceState, ProcessImage
from edge.control.instructions import InstructionBook

log = logging.getLogger(__name__)

_LIMIT_SLACK_KW = 0.05  # below this a limit excursion is measurement noise, not a violation
_WAKE_GAP_S = 0.05  # shortest wall time between the end of a cycle and a woken one
_FEEDBACK_POLLS = 3  # fresh polls a load may read against its command before it counts
_SETTLE_POLLS = 2  # fresh polls confirming a load switch before the cycle decides anew
_V_REF_DEADBAND_V = 0.05  # v_ref changes below this are not worth a write


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
    instructions: tuple[str, ...] = ()  # ids of the DR/dispatch/plan instructions in force
    load_on: dict[str, bool] = field(default_factory=dict)  # flexible loads: on (True) / shed
    alarms: tuple[str, ...] = ()  # standing alarms, e.g. dc_bus_out_of_band:<converter id>
    v_ref: dict[str, float] = field(default_factory=dict)  # DC converters' droop reference, V


@dataclass(slots=True)
class _Switching:
    """A flexible load's on/off state as last seen or commanded, and since when (sim s).
    A state first seen counts from then: after a restart its real age is unknown, and a
    compressor's minimum on/off time outranks a faster first shed."""

    on: bool | None = None
    since_s: float = 0.0
    disagree: int = 0  # consecutive fresh polls reading the other state than commanded
    settle: int = _SETTLE_POLLS  # fresh polls that confirmed the last switch


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
        self.loads: list[FlexLoadDevice] = [d for d in config.devices if isinstance(d, FlexLoadDevice)]
        self._load_ids = {d.id for d in self.loads}
        self._switching = {d.id: _Switching() for d in self.loads}
        self.dc_restore = DcBusRestore(config)
        self._dcdc_ids = {c.id for c in self.dc_restore.converters}
        self._written = {d.id: _Written() for d in (*self.batteries, *self.pvs, *self.loads,
                                                    *self.dc_restore.converters)}
        self._bess = np.zeros((len(self.batteries), dispatch.NB))
        self._pv = np.zeros((len(self.pvs), dispatch.NV))
        self._loads = np.zeros((len(self.loads), dispatch.NL))
        self._last_sim_s: float | None = None
        self.image: ProcessImage | None = None
        self.decision: Decision | None = None
        self._trouble: tuple = (False, ())
        self.book = InstructionBook()  # fed by DR, park dispatch and the planner
        self.dc_bus = DcBusMonitor(config)
        self.stats = CycleStats()
        self._wake = asyncio.Event()

    @property
    def period_wall_s(self) -> float:
        """Wall seconds between cycles: the configured (simulated) period, sped up, but never
        faster than 50 Hz so an accelerated HIL run cannot starve the devices."""
        return max(self.config.control.cycle_s / self.clock.speed, 0.02)

    def check_revert_timers(self) -> list[str]:
        """Devices whose revert timer would expire before the cycle can re-write them."""
        sim_period = self.period_wall_s * self.clock.speed
        margin = self.config.control.rewrite_margin
        return [d.id for d in (*self.batteries, *self.pvs, *self.loads,
                               *self.dc_restore.converters)
                if d.revert_s * margin < sim_period]

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
        timeout = poll_deadline_s(self.period_wall_s)
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
            states[dev_id] = DeviceState(h.reading, q, h.failed_polls, self._old_slow(h.reading))
        return ProcessImage(self.clock.now(), dt or self.config.control.cycle_s, states)

    def _old_slow(self, reading: Reading | None) -> frozenset[str]:
        """Slow values not refreshed for `slow_stale_after_cycles` cycles (counted in wall
        periods, so an accelerated HIL clock does not age them faster than they are read)."""
        if reading is None or not reading.stamps:
            return frozenset()
        limit = self.config.control.slow_stale_after_cycles * self.period_wall_s
        now = time.monotonic()
        return frozenset(k for k in reading.stamps if reading.value_age_s(k, now) > limit)

    # -- 2. decide -----------------------------------------------------------------------
    def _safe_power(self, image: ProcessImage, b: BatteryDevice) -> float:
        """The configured safe power, but never discharging an empty or charging a full one."""
        p = b.safe_power_kw
        if p and image.good(b.id):
            soc = image.value(b.id, "soc_pct")
            if (p > 0 and soc <= b.soc_min_pct) or (p < 0 and soc >= b.soc_max_pct):
                return 0.0
        return p

    def _safe_load_on(self, load: FlexLoadDevice, now_s: float) -> bool:
        """The configured safe state, once the load's minimum on/off time allows the change
        (until then it stays as it is; its relay's revert timer is the backstop)."""
        sw, safe = self._switching[load.id], load.safe_state == "on"
        if sw.on is None or sw.on == safe:
            return safe
        held = now_s - sw.since_s
        return safe if held >= (load.min_on_s if sw.on else load.min_off_s) else sw.on

    def _held_on(self, load: FlexLoadDevice) -> bool:
        """An unreachable load keeps its last state: its own revert timer is the fallback (it
        returns to its default, the configured safe_state). Commanding the safe state early
        would switch it, whenever a write got through, without the batteries knowing."""
        on = self._switching[load.id].on
        return load.safe_state == "on" if on is None else on

    def _observe_loads(self, image: ProcessImage, now_s: float) -> None:
        """Track each load's on/off state and since when, for its minimum on/off times. A
        contactor's feedback may lag its command by a poll or two, so the command counts
        until _FEEDBACK_POLLS fresh polls read otherwise; then the device did not follow
        (or restarted into its default): its state counts and the command is re-sent."""
        for load in self.loads:
            if not image.good(load.id):
                continue
            on = image.value(load.id, "on") >= 0.5
            w, sw = self._written[load.id], self._switching[load.id]
            fresh = not image.devices[load.id].failed_polls
            if w.value is None or (w.value >= 0.5) == on:
                sw.disagree = 0
                sw.settle += int(fresh)
            else:
                sw.disagree += int(fresh)
                if sw.disagree < _FEEDBACK_POLLS:
                    on = w.value >= 0.5
                else:
                    log.warning("load %s: commanded %s but reads %s; re-commanding", load.id,
                                "on" if w.value >= 0.5 else "off", "on" if on else "off")
                    w.value, sw.disagree, sw.settle = None, 0, _SETTLE_POLLS
            self._switched(load.id, on, now_s)

    def _loads_settling(self, image: ProcessImage) -> bool:
        """Right after a load switch one reading may predate it and another follow it (the
        devices are polled concurrently, not at one instant): the PCC may show the battery's
        new setpoint but not yet the restored load, or a shed load still drawing. Deciding
        on such a mix would back the battery off under a load about to draw, or shed a
        second load for power already gone. A load that cannot be read holds no one up."""
        return any(self._switching[d.id].settle < _SETTLE_POLLS for d in self.loads
                   if image.good(d.id))

    def _switched(self, load_id: str, on: bool, now_s: float) -> None:
        sw = self._switching[load_id]
        if sw.on != on:
            sw.on, sw.since_s = on, now_s

    def _safe_decision(self, image: ProcessImage, mode: str, failed=(),
                       final: bool = False) -> Decision:
        now_s = self.clock.elapsed_s()
        return Decision(
            ts=image.ts,
            mode=mode,
            bounds=SiteBounds(),
            bess_kw={b.id: self._safe_power(image, b) for b in self.batteries},
            pv_limit_kw={p.id: self.config.pv_safe_kw(p) for p in self.pvs},
            expected_grid_kw=math.nan,
            status=0,
            failed_functions=tuple(failed),
            load_on={d.id: self._safe_load_on(d, now_s) for d in self.loads},
            v_ref=self.dc_restore.nominal() if final else self.dc_restore.relax(image.dt_s),
        )

    def decide(self, image: ProcessImage) -> Decision:
        cfg = self.config.control
        grid_id = self.config.grid_meter.id
        now_s = self.clock.elapsed_s()
        self._observe_loads(image, now_s)
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
        if self._loads_settling(image) and self.decision is not None:
            # The setpoints were computed with the switch; they stand until a second fresh
            # poll confirms it.
            return replace(self.decision, ts=image.ts, mode="hold")
        combined = self.book.combine(image.ts)
        natural = image.value(grid_id, "power_kw") + sum(
            image.value(b.id, "power_kw") for b in self.batteries if image.good(b.id))
        bounds, failed = run_functions(cfg.functions, image, cfg, combined, natural)
        self._report_instruction_trouble(bounds, combined)
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
        for i, d in enumerate(self.loads):
            row = self._loads[i]
            sw = self._switching[d.id]
            margin = 0.1 * d.rated_kw if d.restore_margin_kw is None else d.restore_margin_kw
            if image.good(d.id) and sw.on is not None:
                row[:] = (image.value(d.id, "power_kw"), d.rated_kw, float(sw.on), d.priority,
                          now_s - sw.since_s, d.min_on_s, d.min_off_s, margin, 1.0)
            else:
                row[:] = (0.0, d.rated_kw, float(self._held_on(d)), d.priority, 0.0,
                          d.min_on_s, d.min_off_s, margin, 0.0)
        result = dispatch.dispatch(
            self.kernel,
            grid_kw=image.value(grid_id, "power_kw"),
            import_limit_kw=bounds.import_limit_kw,
            export_limit_kw=bounds.export_limit_kw,
            grid_target_kw=bounds.grid_target_kw,
            dt_s=image.dt_s,
            bess=self._bess,
            pv=self._pv,
            loads=self._loads,
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
        load_on = {d.id: bool(result.load_on[i] > 0.5) if image.good(d.id) else self._held_on(d)
                   for i, d in enumerate(self.loads)}
        mode = "+".join(n for n in cfg.functions if n not in failed) or "idle"
        return Decision(image.ts, mode, bounds, bess_kw, pv_kw, result.expected_grid_kw,
                        result.status, tuple(failed), combined.active, load_on,
                        v_ref=self.dc_restore.step(image))

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
            elif dev_id in self._load_ids:
                write = dev.write_on(value >= 0.5, revert_s)  # type: ignore[attr-defined]
            elif dev_id in self._dcdc_ids:
                write = dev.write_v_ref(value, revert_s)  # type: ignore[attr-defined]
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
        if dev_id in self._load_ids and self._switching[dev_id].on != (value >= 0.5):
            log.info("load %s switched %s", dev_id, "on" if value >= 0.5 else "off (shed)")
            self._switched(dev_id, value >= 0.5, now_s)
            self._switching[dev_id].settle = 0

    def _report_instruction_trouble(self, bounds: SiteBounds, combined) -> None:
        """Say once (not every cycle) when instructions cannot all be honoured."""
        trouble = (bounds.clipped, combined.conflicts)
        if trouble == self._trouble:
            return
        self._trouble = trouble
        if bounds.clipped:
            log.warning("instruction bounds [%.1f, %.1f] kW fall outside the site limits; the "
                        "site limits hold", combined.grid_min_kw, combined.grid_max_kw)
        if combined.conflicts:
            log.warning("instructions %s conflict with higher-priority ones and are not in "
                        "force", ", ".join(combined.conflicts))

    def _limit_violated(self, decision: Decision) -> bool:
        """The PCC reading of this cycle is beyond an import or export bound, or above the
        plan's peak cap (a 15-min peak is paid on every tenth of a kW)."""
        image, b = self.image, decision.bounds
        grid = self.config.grid_meter.id
        if image is None or not image.good(grid) or image.devices[grid].failed_polls:
            return False
        kw = image.value(grid, "power_kw")
        cap = min(b.import_limit_kw, b.soft_import_cap_kw)
        return kw > cap + _LIMIT_SLACK_KW or kw < -b.export_limit_kw - _LIMIT_SLACK_KW

    async def write(self, decision: Decision, force: bool = False) -> None:
        now_s = self.clock.elapsed_s()
        timeout = poll_deadline_s(self.period_wall_s)
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
        for c in self.dc_restore.converters:
            v = decision.v_ref.get(c.id)
            if v is not None and (force or self._due(c.id, v, c.revert_s, now_s, _V_REF_DEADBAND_V)):
                jobs.append(self._write_one(c.id, v, c.revert_s, now_s, timeout))
        # Make room before adding load: a shed goes out before the batteries may back off by
        # what it frees, a restore only after they have been told to cover it.
        sheds, restores = [], []
        for d in self.loads:
            on = decision.load_on.get(d.id)
            if on is None or not (force or self._due(d.id, float(on), d.revert_s, now_s, 0.0)):
                continue
            job = self._write_one(d.id, float(on), d.revert_s, now_s, timeout)
            if self._switching[d.id].on is None or self._switching[d.id].on == on:
                jobs.append(job)  # a re-write before the revert timer: no change
            else:
                (restores if on else sheds).append(job)
        await asyncio.gather(*sheds)
        await asyncio.gather(*jobs)
        await asyncio.gather(*restores)

    # -- the loop ------------------------------------------------------------------------
    async def step(self) -> Decision:
        t0 = time.perf_counter()
        await self.poll()
        self.image = self.build_image()
        alarms = self.dc_bus.observe(self.image)
        try:
            decision = self.decide(self.image)
        except Exception:
            self.stats.crashes += 1
            log.exception("control cycle crashed; applying safe state")
            decision = self._safe_decision(self.image, "safe")
        if alarms or decision.alarms:
            decision = replace(decision, alarms=alarms)
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
                await asyncio.wait_for(self._sleep(stop), delay)
            except TimeoutError:
                pass
            if self._wake.is_set():
                self._wake.clear()
                next_at = time.monotonic()  # a woken cycle starts a new period

    def wake(self) -> None:
        """Run the next cycle now rather than at the end of the period, so a new instruction
        (a platform command) reaches the devices within one cycle time. Woken cycles are
        at least _WAKE_GAP_S apart: a flood of commands cannot spin the cycle."""
        self._wake.set()

    async def _sleep(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            ended = time.monotonic()
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not stop.is_set():
                await asyncio.sleep(ended + _WAKE_GAP_S - time.monotonic())
        finally:
            for w in waits:
                w.cancel()

    async def apply_safe_state(self, final: bool = False) -> None:
        """Write every device's safe state now; never raises (it runs on the way down).
        `final`: the daemon stops, nothing will ramp the DC bus reference any more."""
        try:
            image = self.image or self.build_image()
            await self.write(self._safe_decision(image, "safe", final=final), force=True)
        except Exception:  # noqa: BLE001
            log.exception("applying the safe state failed; device revert timers remain")

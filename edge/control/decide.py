"""The decision of one cycle as a function: `(image, book, memory, now_s) -> (decision,
memory)`. No I/O and no clock: the daemon's cycle, the scenario runner's rule-based replay
and the unit tests call the same code.

The cycle is in one of four modes, each with one handler:
- normal: instructions and control functions bound the grid, the kernel sets the devices;
- hold: the PCC reading was missed (bridged by the last value): deciding on it would count
  the last battery step twice, so the setpoints stand until a fresh reading;
- settling: a load just switched and the readings may straddle the switch: the setpoints
  computed with the switch stand until a second fresh poll confirms it;
- safe: the PCC meter is lost: every device to its configured safe state.
Every role is asked through edge/roles; nothing here knows a concrete role.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from drivers.base import Quality
from edge.control import explain
from edge.control import kernel as kernel_mod
from edge.control.bounds import SiteBounds, run_functions
from edge.control.instructions import Combined, InstructionBook
from edge.image.balance import pv_held_back
from edge.image.image import ProcessImage
from edge.roles import ROLES, Memory, Written, grouped
from edge.roles.role import Demand, Room

log = logging.getLogger(__name__)

_BLOCK_WIDTH = {"bess": kernel_mod.NB, "pv": kernel_mod.NV, "loads": kernel_mod.NL}


class Mode(enum.Enum):
    NORMAL = "normal"
    HOLD = "hold"
    SETTLING = "settling"
    SAFE = "safe"
    ISLAND = "island"


@dataclass(frozen=True, slots=True)
class Decision:
    ts: datetime
    mode: str  # what telemetry calls it: the functions in force, "hold", "safe", "idle"
    bounds: SiteBounds
    setpoints: dict[str, dict[str, float]]  # role -> device id -> setpoint
    expected_grid_kw: float
    status: int
    failed_functions: tuple[str, ...] = ()
    instructions: tuple[str, ...] = ()  # ids of the DR/dispatch/plan instructions in force
    alarms: tuple[str, ...] = ()  # standing alarms, e.g. dc_bus_out_of_band:<converter id>
    crashed: bool = False  # the decision failed and this is the safe state in its place
    demands: tuple[Demand, ...] = ()  # energy devices need by a deadline (EV sessions)
    reason: str = ""  # why, in one line: what steers the grid and which limit binds
    reason_key: tuple = ()  # the reason without its numbers: it changes when the reason does
    grid_state: str | None = None  # a microgrid's: on_grid, islanding, island, resync, black_start
    next_look_s: float | None = None  # a role wants the next cycle by this simulated second

    def __getattr__(self, name: str) -> dict:
        """A role's setpoints under the name its role gives them (`bess_kw`, `pv_limit_kw`,
        `load_on`, `v_ref` ...: Role.decision_key), for readers of the decision."""
        for role in ROLES.values():
            if role.decision_key == name:
                return role.view(self.setpoints.get(role.name, {}))
        raise AttributeError(f"Decision has no {name!r}")


@dataclass
class Controller:
    """The site's fixed context for deciding: its configuration, the compiled kernel and the
    devices of each role. Holds no state between cycles; that is the Memory."""

    config: Any
    kernel: Any
    groups: dict[str, list] = field(init=False)

    def __post_init__(self) -> None:
        self.groups = grouped(self.config.devices)

    def initial_memory(self) -> Memory:
        writers = [d for name, devs in self.groups.items() if ROLES[name].writes for d in devs]
        return Memory({d.id: Written() for d in writers},
                      {name: ROLES[name].new_state(devs, self.config)
                       for name, devs in self.groups.items()})

    # -- the decision ---------------------------------------------------------------------
    def decide(self, image: ProcessImage, book: InstructionBook | None, memory: Memory,
               now_s: float) -> tuple[Decision, Memory]:
        mem = memory.clone()
        self._observe(image, mem, now_s)
        try:
            decision = _HANDLERS[self.mode(image, mem)](self, image, book, mem, now_s)
        except Exception:  # noqa: BLE001 - a bug in one decision must not stop the site
            log.exception("control cycle crashed; applying safe state")
            reason, key = explain.safe(self.config.grid_meter.id, "", crashed=True)
            decision = replace(self.safe(image, mem, now_s), crashed=True, reason=reason,
                               reason_key=key)
        demands = tuple(x for n, devs in self.groups.items()
                        for x in ROLES[n].demands(devs, image, mem))
        grid_state = next((s for n, devs in self.groups.items()
                           if (s := ROLES[n].grid_state(devs, mem)) is not None), None)
        looks = [t for n, devs in self.groups.items()
                 if (t := ROLES[n].next_look_s(devs, mem)) is not None]
        decision = replace(decision, alarms=self._alarms(mem), demands=demands,
                           grid_state=grid_state, next_look_s=min(looks, default=None))
        if mem.last is None or mem.last.reason_key != decision.reason_key:
            log.info("control: %s", decision.reason)
        else:
            log.debug("control: %s", decision.reason)
        mem.last = decision
        return decision, mem

    def _observe(self, image: ProcessImage, mem: Memory, now_s: float) -> None:
        """What a new image tells before anything is decided: each role's own state, and
        which devices' last setpoint can no longer be assumed."""
        for name, devs in self.groups.items():
            ROLES[name].observe(devs, image, mem, now_s)
        if not image.good(self.config.grid_meter.id):
            return
        for dev_id, state in image.devices.items():
            if state.quality is not Quality.GOOD and state.failed_polls and dev_id in mem.written:
                # Its revert timer may have moved it since: ramp from what it reports next.
                # (One STALE for an implausible reading still answers: its writes stand.)
                mem.written[dev_id].value = None

    def mode(self, image: ProcessImage, mem: Memory) -> Mode:
        if any(ROLES[n].islanded(devs, mem) for n, devs in self.groups.items()):
            return Mode.ISLAND  # the PCC meter no longer steers anything
        grid = self.config.grid_meter.id
        if not image.good(grid):
            return Mode.SAFE
        if mem.last is None:
            return Mode.NORMAL
        if image.devices[grid].failed_polls:
            return Mode.HOLD
        if any(ROLES[n].settling(devs, image, mem) for n, devs in self.groups.items()):
            return Mode.SETTLING
        return Mode.NORMAL

    def _normal(self, image: ProcessImage, book: InstructionBook | None, mem: Memory,
                now_s: float) -> Decision:
        """The kernel settles the site; roles that share what it leaves (EV chargers) are
        then given that room, and the kernel runs again with their new draw in place."""
        cfg = self.config.control
        combined = (book if book is not None else InstructionBook()).combine(image.ts)
        sharing = [(n, devs) for n, devs in self.groups.items() if ROLES[n].allocates and devs]
        drawn = sum(ROLES[n].drawn_kw(devs, image, mem, now_s) for n, devs in sharing)
        # Devices just cut count at their old draw for the room, but the batteries settle
        # against the limits in force: they bridge the ramps, so the PCC follows at once.
        held = drawn - sum(ROLES[n].drawn_kw(devs, image, mem, now_s, hold=False)
                           for n, devs in sharing)
        grid = image.value(self.config.grid_meter.id, "power_kw") - drawn
        natural = grid + sum(ROLES[n].idle_offset_kw(devs, image)
                             for n, devs in self.groups.items())
        bounds, failed = run_functions(cfg.functions, image, cfg, combined, natural)
        self._report_trouble(mem, bounds, combined)
        result = self._dispatch(image, mem, now_s, bounds, grid)
        setpoints: dict[str, dict[str, float]] = {}
        if sharing:
            room = self._room(image, bounds, result, combined, grid + self._stored_kw(image),
                              grid)
            added = 0.0
            for name, devs in sharing:  # each shares what the ones before it left
                setpoints[name], kw = ROLES[name].allocate(devs, image, mem, now_s,
                                                           self.config, room)
                added += kw
                room = room.after(kw)
            if cfg.ev_from_battery:
                bounds, failed = run_functions(cfg.functions, image, cfg, combined,
                                               natural + held + added)
            elif not math.isnan(bounds.grid_target_kw):
                # The batteries keep what they would do without the added draw.
                bounds = replace(bounds, grid_target_kw=bounds.grid_target_kw + added)
            result = self._dispatch(image, mem, now_s, bounds, grid + held + added)
        outputs = {"bess": result.bess_kw, "pv": result.pv_limit_kw, "loads": result.load_on}
        for name, devs in self.groups.items():
            role = ROLES[name]
            if role.writes and not role.allocates:
                setpoints[name] = role.setpoints(devs, image, mem, self.config,
                                                 outputs.get(role.block))
        functions = "+".join(n for n in cfg.functions if n not in failed) or "idle"
        mode, reason, key = explain.normal(functions, explain.steering(book, combined), bounds,
                                           result)
        return Decision(image.ts, mode, bounds, setpoints, result.expected_grid_kw,
                        result.status, tuple(failed), combined.active, reason=reason,
                        reason_key=key)

    def _dispatch(self, image: ProcessImage, mem: Memory, now_s: float, bounds: SiteBounds,
                  grid_kw: float) -> kernel_mod.DispatchResult:
        blocks = {}
        for name, devs in self.groups.items():
            role = ROLES[name]
            if role.block is not None:
                blocks[role.block] = out = np.zeros((len(devs), _BLOCK_WIDTH[role.block]))
                role.rows(devs, image, mem, now_s, self.config, out)
        return kernel_mod.dispatch(
            self.kernel, grid_kw=grid_kw, import_limit_kw=bounds.import_limit_kw,
            export_limit_kw=bounds.export_limit_kw, grid_target_kw=bounds.grid_target_kw,
            dt_s=image.dt_s, **blocks)

    def _room(self, image: ProcessImage, bounds: SiteBounds,
              result: kernel_mod.DispatchResult, combined: Combined, site_kw: float,
              natural_kw: float) -> Room:
        """What the kernel's settlement leaves: import under the hard limits (plus what the
        batteries could still discharge, where they may feed EVs) and the power the site
        would export or curtail (probed upwards while PV is held back)."""
        g = result.expected_grid_kw
        import_kw = bounds.import_limit_kw - g
        if self.config.control.ev_from_battery:
            for name, devs in self.groups.items():
                if ROLES[name].stores_energy:
                    parts = [ROLES[name].capability(d, image) for d in devs]
                    import_kw += sum(max(p.max_kw - p.push_kw, 0.0) for p in parts if p)
        probe = 0.0
        generators = self.config.devices_that("generates")
        if generators:
            limits = dict(zip([d.id for d in generators], result.pv_limit_kw, strict=False))
            if pv_held_back(generators, limits, image):
                probe = 0.05 * sum(d.rated_kw for d in generators)
        # The grid without the sharing roles: the settlement's, or the reading's where the
        # settlement curtailed PV they would have used.
        grid = min(g, natural_kw) - probe
        return Room(image.ts, max(import_kw, 0.0), max(-g, 0.0) + probe, combined.demand_kw,
                    combined.requests, site_kw, grid)

    def _stored_kw(self, image: ProcessImage) -> float:
        """What the batteries give now (+ discharge): the site's own demand is the PCC
        without them, so a battery bridging a car's ramp does not look like the building
        dropping its load."""
        total = 0.0
        for name, devs in self.groups.items():
            if ROLES[name].stores_energy:
                for d in devs:
                    kw = image.value(d.id, "power_kw") if image.good(d.id) else math.nan
                    total += kw if math.isfinite(kw) else 0.0
        return total

    def _island(self, image, book, mem, now_s) -> Decision:
        """Off the grid: the roles set what the island's balance plans (edge/island)."""
        plan = next(p for n, devs in self.groups.items()
                    if (p := ROLES[n].island_plan(devs, image, mem, now_s, self.config)))
        setpoints = {n: ROLES[n].island_setpoints(devs, image, mem, now_s, self.config, plan)
                     for n, devs in self.groups.items() if ROLES[n].writes}
        off = tuple(sorted(k for k, on in plan.load_on.items() if not on))
        return Decision(image.ts, "island", SiteBounds(), setpoints, math.nan, 0,
                        reason=plan.reason, reason_key=("island", plan.form, off))

    def _hold(self, image, book, mem, now_s) -> Decision:
        reason, key = explain.HOLD
        return replace(mem.last, ts=image.ts, mode="hold", reason=reason, reason_key=key)

    def _settling(self, image, book, mem, now_s) -> Decision:
        reason, key = explain.SETTLING
        return replace(mem.last, ts=image.ts, mode="hold", reason=reason, reason_key=key)

    def _safe(self, image, book, mem, now_s) -> Decision:
        grid = self.config.grid_meter.id
        reason, key = explain.safe(grid, image.devices[grid].quality.value, crashed=False)
        return replace(self.safe(image, mem, now_s), reason=reason, reason_key=key)

    def safe(self, image: ProcessImage, mem: Memory, now_s: float,
             final: bool = False) -> Decision:
        """Every device's safe state (also what a crashed cycle and the shutdown write)."""
        setpoints = {name: ROLES[name].safe(devs, image, mem, now_s, self.config, final)
                     for name, devs in self.groups.items() if ROLES[name].writes}
        return Decision(image.ts, "safe", SiteBounds(), setpoints, math.nan, 0,
                        alarms=self._alarms(mem))

    def _alarms(self, mem: Memory) -> tuple[str, ...]:
        return tuple(a for n, devs in self.groups.items() for a in ROLES[n].alarms(devs, mem))

    # -- after the write phase ------------------------------------------------------------
    def after_writes(self, memory: Memory, outcomes: dict[str, float | None],
                     now_s: float) -> Memory:
        """Record what reached each device (a value) and what failed (None): a failed write
        is re-sent next cycle and the device ramps from what it reports."""
        by_id = {d.id: (name, d) for name, devs in self.groups.items() for d in devs}
        for dev_id, value in outcomes.items():
            w = memory.written[dev_id]
            if value is None:
                w.failed, w.value = True, None
                continue
            w.value, w.at_s, w.failed = value, now_s, False
            name, dev = by_id[dev_id]
            ROLES[name].wrote(dev, value, memory, now_s)
        return memory

    def _report_trouble(self, mem: Memory, bounds: SiteBounds, combined: Combined) -> None:
        """Say once (not every cycle) when instructions cannot all be honoured."""
        trouble = (bounds.clipped, combined.conflicts)
        if trouble == mem.trouble:
            return
        mem.trouble = trouble
        if bounds.clipped:
            log.warning("instruction bounds [%.1f, %.1f] kW fall outside the site limits; the "
                        "site limits hold", combined.grid_min_kw, combined.grid_max_kw)
        if combined.conflicts:
            log.warning("instructions %s conflict with higher-priority ones and are not in "
                        "force", ", ".join(combined.conflicts))


_HANDLERS = {Mode.NORMAL: Controller._normal, Mode.HOLD: Controller._hold,
             Mode.SETTLING: Controller._settling, Mode.SAFE: Controller._safe,
             Mode.ISLAND: Controller._island}

"""The PCC breaker of a microgrid: opened when the grid is lost, closed again only in sync.
Its memory is the grid state machine (edge/island/machine.py), stepped once per cycle from
the breaker's synchronism-check readings and the grid-forming batteries; while the machine
is off grid, the cycle decides in island mode (edge/island/balance.py)."""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Literal

from pydantic import Field

from edge.config.base import DeviceBase
from edge.island import balance
from edge.island.machine import GridMachine, Observation
from edge.island.params import IslandParams
from edge.roles.battery import map_point_problem
from edge.roles.role import Role

RESTART_MARGIN_PCT = 5.0  # SoC above soc_min a battery needs to restart an island


class BreakerDevice(DeviceBase):
    """The PCC breaker (coil command, position feedback, synchronism-check readings)."""

    role: Literal["breaker"]
    protocol: Literal["modbus-tcp", "modbus-rtu"] = "modbus-tcp"
    confirm_timeout_s: float = Field(5.0, gt=0, le=120, description="the position feedback "
                                     "must follow a command within this, else an alarm")
    revert_s: int = Field(60, ge=5, le=3600, description="the position command is repeated "
                          "this often (a breaker has no revert timer; it stays where it is)")
    island: IslandParams = Field(default_factory=IslandParams)


class Context:
    """What the machine's observation needs from the rest of the site (not cloned)."""

    def __init__(self, config) -> None:
        self.batteries = [d for d in config.devices if d.role == "battery"]
        self.forming = [b for b in self.batteries if getattr(b, "grid_forming", False)]
        self.loads = [d for d in config.devices if d.role == "load"]
        self.pv = config.devices_that("generates")


class IslandState:
    """The machine, and (shared by every clone, not state) its step times in ns."""

    def __init__(self, machine: GridMachine | None, ctx: Context, step_ns: deque) -> None:
        self.machine, self.ctx, self.step_ns = machine, ctx, step_ns

    def clone(self) -> IslandState:
        return IslandState(None if self.machine is None else self.machine.clone(), self.ctx,
                           self.step_ns)


def pcs_forms(image, b) -> bool:
    """The PCS forms the grid: its mode as it reports it where its map has `forming` (it may
    have switched on its own), else the read-back of the `grid_mode` command."""
    reading = image.devices[b.id].reading
    key = "forming" if reading is not None and "forming" in reading.values else "grid_mode"
    return image.value(b.id, key) >= 0.5


def observation(dev: BreakerDevice, ctx: Context, image, load_states, now_s: float) -> Observation:
    ok = image.good(dev.id)
    v = (lambda k: image.value(dev.id, k)) if ok else (lambda k: math.nan)
    socs, supply, start = [], False, False
    forming = bool(ctx.forming)
    read = all(image.good(b.id) for b in ctx.forming)
    for b in ctx.forming:
        if not image.good(b.id):
            forming = False
            continue
        soc = image.value(b.id, "soc_pct")
        socs.append((soc, b.capacity_kwh))
        supply |= soc > b.soc_min_pct + 0.1
        start |= soc >= b.soc_min_pct + RESTART_MARGIN_PCT
        forming &= pcs_forms(image, b)
    cap = sum(c for _, c in socs)
    soc = sum(s * c for s, c in socs) / cap if cap else math.nan
    crit = [d for d in ctx.loads if d.critical]
    served = sum(d.rated_kw for d in crit if image.good(d.id) and image.value(d.id, "on") >= 0.5
                 and image.value(d.id, "power_kw") > 0)
    shed = sum(d.rated_kw for d in ctx.loads if not d.critical and load_states.get(d.id)
               and load_states[d.id].on is False)
    reads_on = [d for d in ctx.loads if image.good(d.id) and image.value(d.id, "on") >= 0.5]
    return Observation(now_s, ok, ok and v("closed") >= 0.5, ok and v("tripped") >= 0.5,
                       v("grid_v"), v("grid_hz"), v("bus_v"), v("bus_hz"), v("phase_deg"),
                       forming, supply, start, soc, balance.critical_kw(ctx.loads), served, shed,
                       any(not d.critical for d in reads_on), bool(reads_on), read,
                       bool(ctx.forming) and all(b.auto_transfer for b in ctx.forming))


class Breaker(Role):
    name = "breaker"
    model = BreakerDevice
    writes = True
    decision_key = "breaker_closed"
    setpoint_unit = "(1 close, 0 open)"

    def summary(self, d: BreakerDevice) -> str:
        p = d.island
        return (f"PCC breaker, confirm {d.confirm_timeout_s:g} s; grid lost outside "
                f"±{p.v_band_pct:g} % / ±{p.hz_band:g} Hz for {p.detect_s:g} s, back after "
                f"{p.return_s:g} s; reserve {p.backup_hours:g} h of critical load")

    def site_problems(self, devs) -> list[str]:
        if len(devs) > 1:
            return [f"at most one breaker (the PCC) is supported, found {len(devs)}: "
                    f"{', '.join(d.id for d in devs)}"]
        return []

    def config_problems(self, devs, config) -> list[str]:
        if not devs:
            return []
        dev, ctx = devs[0], Context(config)
        if not ctx.forming:
            return [f"devices.{dev.id}: a breaker (island operation) needs a battery that can "
                    "form the grid: set grid_forming: true on a battery whose PCS offers it "
                    "(its register map has a grid_mode point)"]
        problems = [p for b in ctx.forming
                    if (p := map_point_problem(b, "grid_mode", "grid_forming",
                                               "be told to form the grid"))]
        crit = balance.critical_kw(ctx.loads)
        kw = sum(b.max_discharge_kw for b in ctx.forming)
        if crit > kw:
            problems.append(f"devices: the critical loads draw {crit:g} kW, more than the "
                            f"grid-forming batteries can supply ({kw:g} kW); mark fewer loads "
                            "critical: true or add grid-forming battery power")
        need = balance.reserve_kwh(ctx.loads, dev.island)
        usable = sum((b.soc_max_pct - b.soc_min_pct) / 100 * b.capacity_kwh
                     * b.discharge_efficiency for b in ctx.forming)
        if need > usable:
            problems.append(f"devices.{dev.id}.island.backup_hours: the critical loads need "
                            f"{need:g} kWh for {dev.island.backup_hours:g} h, the grid-forming "
                            f"batteries hold {usable:.4g} kWh between soc_min and soc_max; "
                            "lower backup_hours or mark fewer loads critical")
        return problems

    # -- control ------------------------------------------------------------------------
    def new_state(self, devs, config) -> IslandState:
        ctx, times = Context(config), deque(maxlen=100_000)
        if not devs:
            return IslandState(None, ctx, times)
        return IslandState(GridMachine(devs[0].island, devs[0].confirm_timeout_s), ctx, times)

    def observe(self, devs, image, mem, now_s) -> None:
        st: IslandState = mem.roles["breaker"]
        if st.machine is None or devs[0].id not in image.devices:
            return  # no breaker in this image (the rule-based replay simulates none)
        loads = mem.roles["load"].by_id if mem.roles.get("load") is not None else {}
        t0 = time.perf_counter_ns()  # a measurement for the KPIs, not an input
        st.machine.step(observation(devs[0], st.ctx, image, loads, now_s))
        st.step_ns.append(time.perf_counter_ns() - t0)

    def islanded(self, devs, mem) -> bool:
        st = mem.roles.get("breaker")
        return st is not None and st.machine is not None and st.machine.islanded

    def grid_state(self, devs, mem) -> str | None:
        st = mem.roles.get("breaker")
        return None if st is None or st.machine is None else st.machine.state

    def next_look_s(self, devs, mem) -> float | None:
        st = mem.roles.get("breaker")
        return None if st is None or st.machine is None else st.machine.next_look_s

    def island_plan(self, devs, image, mem, now_s, config):
        st: IslandState = mem.roles["breaker"]
        m = st.machine
        if m is None:
            return None
        loads = mem.roles["load"].by_id if mem.roles.get("load") is not None else {}
        return balance.plan(m.state, m.forming, st.ctx.forming, st.ctx.loads, st.ctx.pv, image,
                            loads, m.params, now_s)

    def _position(self, devs, mem) -> dict[str, float]:
        m = mem.roles["breaker"].machine
        return {d.id: float(m.close) for d in devs}

    def setpoints(self, devs, image, mem, config, kernel_out) -> dict[str, float]:
        return self._position(devs, mem)

    def island_setpoints(self, devs, image, mem, now_s, config, plan) -> dict[str, float]:
        return self._position(devs, mem)

    def safe(self, devs, image, mem, now_s, config, final) -> dict[str, float]:
        """A lost meter or a stop moves no breaker: it stays as the machine commands."""
        return self._position(devs, mem)

    def alarms(self, devs, mem) -> tuple[str, ...]:
        st = mem.roles.get("breaker")
        if not devs or st is None or st.machine is None:
            return ()
        return st.machine.alarms(devs[0].id)

    def view(self, setpoints: dict[str, float]) -> dict[str, bool]:
        return {k: v >= 0.5 for k, v in setpoints.items()}

    def deadband(self, configured_kw: float, dev=None) -> float:
        return 0.0

    def write(self, driver, value: float, revert_s: int):
        return driver.write_switch(value >= 0.5)

    def telemetry(self, devs, image) -> dict:
        if not devs or not image.good(devs[0].id):
            return {"breaker_closed": None}
        return {"breaker_closed": image.value(devs[0].id, "closed") >= 0.5}

"""The `flex` message: what the site can do for the platform over the next hours, per 15-min
interval (docs/domain.md §4: a VPP node reports what it can do, not only what it did).

Per interval, relative to the baseline (the PCC power expected without any request):
- up: the PCC can go this far below the baseline (import less / export more): battery
  discharge room above the baseline's own battery power, plus what the switchable loads
  (role `load`) draw now (shedding them saves it, for one interval at least) and what the
  EV chargers draw now, each only if its car can be paused for the interval and still get
  its energy by its departure at full power (the session's slack, from `demands`), and
  thermal devices (HVAC, thermal storage), which count in interval k only with what they
  can hold from now to its end: an HVAC shed until its zone would reach the comfort band
  (edge/roles/hvac.py `coast_h`), a tank while its stored energy lasts;
- down: this far above it (import more): battery charge room, the PV that could be
  curtailed (reached through a grid floor: a dr_event `increase` or a dispatch grid_min_kw)
  and the EV chargers with a car raised to their maximum;
- up_kwh / down_kwh: the energy behind each from the interval's start, along the baseline's
  SoC path (efficiencies applied); the kW figures are capped so they hold for the whole
  interval. Each device counts as edge/vpp/capability.py says, the same as for DR.

The baseline comes from the planner's plan when the daemon has one (`baseline_source:
plan`), else from the present (`current`): load − PV, PV and battery power as they are now,
held over the horizon, each battery stopping at its SoC window; a plan's batteries are one
pack (the plan knows the site's SoC only). Devices that are not GOOD count for nothing:
the platform must not be promised power the site cannot see.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.config import BatteryDevice, Config
from edge.image.image import ProcessImage
from edge.plan.stats import PlanSummary  # or, in-process, a Plan: the same fields
from edge.roles import Part
from edge.roles.battery import part_at as battery_at
from edge.roles.pv import part_at as pv_at
from edge.roles.role import Demand
from edge.vpp.capability import site_capability, total

INTERVAL_S = 900


def _pack(bats: list[tuple[BatteryDevice, float, float]]) -> BatteryDevice | None:
    """The batteries as one, as the plan sees them: capacity-weighted SoC window and
    efficiencies, summed ratings."""
    cap = sum(b.capacity_kwh for b, _, _ in bats)
    if not bats or cap <= 0:
        return None

    def w(f) -> float:
        return sum(f(b) * b.capacity_kwh for b, _, _ in bats) / cap

    return BatteryDevice.model_construct(
        id="pack", role="battery", capacity_kwh=cap,
        soc_min_pct=w(lambda b: b.soc_min_pct), soc_max_pct=w(lambda b: b.soc_max_pct),
        max_charge_kw=sum(b.max_charge_kw for b, _, _ in bats),
        max_discharge_kw=sum(b.max_discharge_kw for b, _, _ in bats),
        charge_efficiency=w(lambda b: b.charge_efficiency),
        discharge_efficiency=w(lambda b: b.discharge_efficiency))


def _current(image: ProcessImage, pcc: str, bats: list[tuple[BatteryDevice, float, float]],
             pv: float, n: int) -> tuple[list[float | None], list[list[Part]], list[float]]:
    """Baseline held from now: (grid, the batteries, pv at each interval start); each battery
    keeps its power until it reaches its SoC window."""
    grid = image.value(pcc, "power_kw") if image.good(pcc) else None
    native = None if grid is None else grid + sum(p for _, p, _ in bats)  # batteries at 0
    socs, h = [soc for _, _, soc in bats], INTERVAL_S / 3600
    grids, parts = [], []
    for _ in range(n):
        now = []
        for i, (b, p, _) in enumerate(bats):
            if (p > 0 and socs[i] <= b.soc_min_pct) or (p < 0 and socs[i] >= b.soc_max_pct):
                p = 0.0  # the baseline battery stops at its SoC window
            now.append(battery_at(b, p, socs[i]))
            eff = 1 / b.discharge_efficiency if p > 0 else b.charge_efficiency
            socs[i] = min(max(socs[i] - p * h * eff / b.capacity_kwh * 100, b.soc_min_pct),
                          b.soc_max_pct)
        parts.append(now)
        grids.append(None if native is None else native - sum(x.push_kw for x in now))
    return grids, parts, [pv] * n


def _from_plan(plan: PlanSummary, starts: list[datetime]
               ) -> tuple[list[float | None], list[float], list[float], list[float]]:
    n_plan = len(plan.grid_kw)
    grids, bess, socs, pvs = [], [], [], []
    for t in starts:
        k = int((t - plan.start).total_seconds() // plan.step_s)
        k = min(max(k, 0), n_plan - 1)  # hold the plan's last step beyond its horizon
        grids.append(float(plan.grid_kw[k]))
        bess.append(float(plan.bess_kw[k]))
        socs.append(float(plan.soc_pct[min(k, len(plan.soc_pct) - 1)]))
        pvs.append(float(plan.pv_kw[k]))
    return grids, bess, socs, pvs


def _covers(plan: PlanSummary | None, t: datetime) -> bool:
    if plan is None or len(plan.grid_kw) == 0:
        return False
    end = plan.start + timedelta(seconds=plan.step_s * len(plan.grid_kw))
    return plan.start <= t < end


def build(config: Config, image: ProcessImage, now: datetime,
          plan: PlanSummary | None = None, demands: Iterable[Demand] = ()) -> dict[str, Any]:
    """The flex payload (without msg_id) for `now`; `demands`: the last decision's (EV
    sessions), which bound how long a charger may be paused."""
    vpp = config.vpp
    n = max(1, math.ceil(vpp.flex_horizon_h * 3600 / INTERVAL_S))
    t0 = datetime.fromtimestamp(now.timestamp() // INTERVAL_S * INTERVAL_S, UTC)
    starts = [t0 + timedelta(seconds=INTERVAL_S * k) for k in range(n)]
    h = INTERVAL_S / 3600
    cap = site_capability(config, image, h, demands)
    device = {d.id: d for d in config.devices}
    bats = [(device[p.id], p.push_kw, p.soc_pct) for p in cap.of("storage")]
    pack = _pack(bats)
    if _covers(plan, t0):
        assert plan is not None
        source = "plan"
        grids, bess, socs, pvs = _from_plan(plan, starts)
        parts = [[] if pack is None else [battery_at(pack, bess[k], socs[k])] for k in range(n)]
    else:
        source = "current"
        grids, parts, pvs = _current(image, config.grid_meter.id, bats,
                                     sum(p.push_kw for p in cap.of("generation")), n)
    loads, thermal = cap.of("consumption"), cap.of("thermal")
    intervals = []
    for k, t in enumerate(starts):
        c = total([*parts[k], pv_at("pv", pvs[k]), *loads], h)
        reach = (k + 1) * h  # a move that starts now and lasts through this interval
        up = sum(p.up_kw(reach) for p in thermal)
        down = sum(p.down_kw(reach) for p in thermal)
        intervals.append({
            "start": _iso(t),
            "baseline_kw": None if grids[k] is None else round(grids[k], 3),
            "up_kw": round(c.up_kw + up, 3), "down_kw": round(c.down_kw + down, 3),
            "up_kwh": round(c.up_kwh + up * h, 3), "down_kwh": round(c.down_kwh + down * h, 3),
        })
    soc = None if pack is None else sum(b.capacity_kwh * s for b, _, s in bats) / pack.capacity_kwh
    return {
        "ts": _iso(now),
        "interval_s": INTERVAL_S,
        "baseline_source": source,
        "soc_pct": None if soc is None else round(soc, 2),
        "intervals": intervals,
    }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

"""The `flex` message: what the site can do for the platform over the next hours, per 15-min
interval (DOMAIN.md §4: a VPP node reports what it can do, not only what it did).

Per interval, relative to the baseline (the PCC power expected without any request):
- up: the PCC can go this far below the baseline (import less / export more): battery
  discharge room above the baseline's own battery power, plus what the switchable loads
  (role `load`) draw now (shedding them saves it, for one interval at least);
- down: this far above it (import more): battery charge room plus the PV that could be
  curtailed (reached through a grid floor: a dr_event `increase` or a dispatch grid_min_kw);
- up_kwh / down_kwh: the energy behind each from the interval's start, along the baseline's
  SoC path (efficiencies applied); the kW figures are capped so they hold for the whole
  interval.

The baseline comes from the planner's plan when the daemon has one (`baseline_source:
plan`), else from the present (`current`): load − PV, PV and battery power as they are now,
held over the horizon, the battery stopping at its SoC window. Batteries that are not GOOD
count for nothing: the platform must not be promised power the site cannot see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from edge.config import BatteryDevice, Config, PvDevice
from edge.image.image import ProcessImage

INTERVAL_S = 900


class PlanLike(Protocol):
    """What flex reads of the planner's `Plan` (edge/plan/solve.py)."""

    start: datetime
    step_s: int
    grid_kw: np.ndarray
    bess_kw: np.ndarray
    soc_pct: np.ndarray
    pv_kw: np.ndarray


@dataclass(frozen=True, slots=True)
class _Pack:
    """The GOOD batteries as one: capacity-weighted SoC window and efficiencies."""

    capacity_kwh: float
    soc_pct: float
    soc_min_pct: float
    soc_max_pct: float
    max_charge_kw: float
    max_discharge_kw: float
    charge_eff: float
    discharge_eff: float
    power_kw: float

    def up_kwh(self, soc: float) -> float:
        return max(soc - self.soc_min_pct, 0.0) / 100 * self.capacity_kwh * self.discharge_eff

    def down_kwh(self, soc: float) -> float:
        return max(self.soc_max_pct - soc, 0.0) / 100 * self.capacity_kwh / self.charge_eff


def _pack(config: Config, image: ProcessImage) -> _Pack | None:
    bats = [b for b in config.devices if isinstance(b, BatteryDevice) and image.good(b.id)]
    cap = sum(b.capacity_kwh for b in bats)
    if not bats or cap <= 0:
        return None

    def w(f) -> float:
        return sum(f(b) * b.capacity_kwh for b in bats) / cap

    return _Pack(
        capacity_kwh=cap, soc_pct=w(lambda b: image.value(b.id, "soc_pct")),
        soc_min_pct=w(lambda b: b.soc_min_pct), soc_max_pct=w(lambda b: b.soc_max_pct),
        max_charge_kw=sum(b.max_charge_kw for b in bats),
        max_discharge_kw=sum(b.max_discharge_kw for b in bats),
        charge_eff=w(lambda b: b.charge_efficiency), discharge_eff=w(lambda b: b.discharge_efficiency),
        power_kw=sum(image.value(b.id, "power_kw") for b in bats),
    )


def _current(config: Config, image: ProcessImage, pack: _Pack | None, n: int
             ) -> tuple[list[float | None], list[float], list[float], list[float]]:
    """Baseline held from now: (grid, battery, soc at each interval start, pv)."""
    pcc = config.grid_meter.id
    pvs = [p for p in config.devices if isinstance(p, PvDevice)]
    pv = sum(image.value(p.id, "power_kw") for p in pvs if image.good(p.id))
    grid = image.value(pcc, "power_kw") if image.good(pcc) else None
    if pack is None:
        return [grid] * n, [0.0] * n, [math.nan] * n, [pv] * n
    native = None if grid is None else grid + pack.power_kw  # PCC with the batteries at 0
    soc, h = pack.soc_pct, INTERVAL_S / 3600
    grids, bess, socs = [], [], []
    for _ in range(n):
        b = pack.power_kw
        if (b > 0 and soc <= pack.soc_min_pct) or (b < 0 and soc >= pack.soc_max_pct):
            b = 0.0  # the baseline battery stops at its SoC window
        socs.append(soc)
        bess.append(b)
        grids.append(None if native is None else native - b)
        if b > 0:
            soc -= b * h / pack.discharge_eff / pack.capacity_kwh * 100
        else:
            soc -= b * h * pack.charge_eff / pack.capacity_kwh * 100
        soc = min(max(soc, pack.soc_min_pct), pack.soc_max_pct)
    return grids, bess, socs, [pv] * n


def _from_plan(plan: PlanLike, starts: list[datetime]
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


def _covers(plan: PlanLike | None, t: datetime) -> bool:
    if plan is None or len(plan.grid_kw) == 0:
        return False
    end = plan.start + timedelta(seconds=plan.step_s * len(plan.grid_kw))
    return plan.start <= t < end


def build(config: Config, image: ProcessImage, now: datetime,
          plan: PlanLike | None = None) -> dict[str, Any]:
    """The flex payload (without msg_id) for `now`."""
    vpp = config.vpp
    n = max(1, math.ceil(vpp.flex_horizon_h * 3600 / INTERVAL_S))
    t0 = datetime.fromtimestamp(now.timestamp() // INTERVAL_S * INTERVAL_S, UTC)
    starts = [t0 + timedelta(seconds=INTERVAL_S * k) for k in range(n)]
    pack = _pack(config, image)
    shed = sum(max(image.value(d.id, "power_kw"), 0.0) for d in config.of_role("load")
               if image.good(d.id))
    if _covers(plan, t0):
        assert plan is not None
        source = "plan"
        grids, bess, socs, pvs = _from_plan(plan, starts)
    else:
        source = "current"
        grids, bess, socs, pvs = _current(config, image, pack, n)
    h = INTERVAL_S / 3600
    intervals = []
    for k, t in enumerate(starts):
        up_kw = down_kw = up_kwh = down_kwh = 0.0
        if pack is not None:
            soc = pack.soc_pct if math.isnan(socs[k]) else socs[k]
            up_kwh, down_kwh = pack.up_kwh(soc), pack.down_kwh(soc)
            up_kw = min(max(pack.max_discharge_kw - bess[k], 0.0), up_kwh / h)
            down_kw = min(max(pack.max_charge_kw + bess[k], 0.0), down_kwh / h)
        pv = max(pvs[k], 0.0)
        up_kw += shed
        up_kwh += shed * h
        down_kw += pv
        down_kwh += pv * h
        intervals.append({
            "start": _iso(t),
            "baseline_kw": None if grids[k] is None else round(grids[k], 3),
            "up_kw": round(up_kw, 3), "down_kw": round(down_kw, 3),
            "up_kwh": round(up_kwh, 3), "down_kwh": round(down_kwh, 3),
        })
    return {
        "ts": _iso(now),
        "interval_s": INTERVAL_S,
        "baseline_source": source,
        "soc_pct": None if pack is None else round(pack.soc_pct, 2),
        "intervals": intervals,
    }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

"""Energy demands in the plan (EV sessions, 有序充电): each is energy a device must receive
before a deadline at up to `max_kw`; the LP chooses when.

Per demand and step a power `dem` (kW, step average) with
  0 <= dem <= max_kw x (the share of the step before the deadline)   (zero after it)
  sum dt x dem + dem_short >= energy                                  (by the deadline)
and the power adds to the site's load in the balance, so the import limit, the demand
peak, the tariff and the batteries all see it. `dem_short` (kWh) keeps a demand that cannot
be met (too little time, or too little import room) from failing the plan: it costs half
of what a kWh below the battery reserve costs for one step, above any price, so the plan
delivers all it can, gives way to commitments and the reserve, and reports the rest.

A demand already past its deadline is a car still plugged in: the control side charges it
flat out (no slack left, edge/roles/evcharger.py), so the plan takes it as due at
now + energy / max_kw and reports it as overdue.

A tie-break of 1e-5 per kWh, rising over the horizon, has equal-priced energy delivered
early rather than late (a forecast that turns out wrong then finds less still to do).

Not from the batteries (`demand_from_battery` False, config.control.ev_from_battery): the
control side settles the batteries on the site without its EVs and adds their draw on top
(edge/control/decide.py). The plan says the same with two rows per step where a demand may
draw, both empty when it draws nothing:
  dem <= imp + (pv_used - load) in steps with PV above the load, else dem <= imp
    (the demands take grid import and the PV surplus only: the batteries may cover the
    other load, never the cars - equivalently, battery discharge <= the non-EV net load
    plus what is exported);
  imp - exp - dem >= -export_limit
    (the site without its demands stays inside the export limit: the plan's grid target
    for the cycle is the site without EVs, which the cycle clips into the limits). PV the
    plan would curtail is not routed into a car here; the cycle adds it on top of the plan
    (the surplus pool), and the next plan sees the energy delivered.
With `demand_from_battery` neither row exists: the batteries may cover the cars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from edge.plan.inputs import PlanInput

_EPS_EARLY = 1e-5
_TOL_KWH = 1e-3
VALLEY_TOL = 1e-9  # a step is a valley step when its price is this close to the lowest


@dataclass(frozen=True)
class DemandPlan:
    """What the plan does for the demands: kW per device and step, shortfall per device."""

    kw: dict[str, np.ndarray]
    short_kwh: dict[str, float]
    kwh: float  # all demands' energy over the horizon
    valley_kwh: float  # of which in the cheapest-priced steps of the horizon
    notes: tuple[str, ...] = ()


def deadlines(inp: PlanInput) -> list[float]:
    """Each demand's deadline as a Unix time, an overdue one moved to now + energy/max_kw."""
    now = inp.now.timestamp()
    out = []
    for d in inp.demands:
        t = d.deadline.timestamp()
        out.append(t if t > now else now + d.energy_kwh / d.max_kw * 3600)
    return out


def caps(inp: PlanInput) -> np.ndarray:
    """(demands x steps) upper bound on each demand's power: max_kw x the share of the step
    before its deadline."""
    n = inp.n
    b = inp.start.timestamp() + np.arange(1, n + 1) * float(inp.step_s)
    a = b - inp.step_s
    if inp.first_step_s is not None and n:
        a[0] = b[0] - inp.first_step_s
    out = np.zeros((len(inp.demands), n))
    for k, (d, t) in enumerate(zip(inp.demands, deadlines(inp), strict=True)):
        out[k] = d.max_kw * np.clip((t - a) / (b - a), 0.0, 1.0)
    return out


def add(m, inp: PlanInput, dt: np.ndarray, cap: np.ndarray, big: float,
        cols: dict[str, np.ndarray]) -> None:
    """The demand columns and rows on `m` (model.py's block allocator). `cols` holds the
    column indices of imp, exp and pv and the row indices of the balance (per step)."""
    nd, n = cap.shape
    if not nd:
        return
    later = np.tile(_EPS_EARLY * (1 + np.arange(n) / n) * dt, nd)
    dem = m.col("dem", later, 0.0, cap.ravel(), nd * n)  # demand-major: d*n + t
    m.coef(np.tile(cols["balance"], nd), dem, -1.0)
    energy = np.array([d.energy_kwh for d in inp.demands])
    short = m.col("dem_short", big / 2, 0.0, energy, nd)
    rows = m.row("dem_energy", energy, math.inf, nd)
    m.coef(np.repeat(rows, n), dem, np.tile(dt, nd))
    m.coef(rows, short, 1.0)
    if inp.demand_from_battery:
        return
    steps = np.flatnonzero(cap.sum(axis=0) > 0)
    if not len(steps):
        return
    k = len(steps)
    load = np.asarray(inp.load_kw, dtype=float)[steps]
    surplus = np.asarray(inp.pv_kw, dtype=float)[steps] > load
    src = m.row("dem_source", -math.inf, np.where(surplus, -load, 0.0), k)
    m.coef(np.repeat(src, nd), dem.reshape(nd, n)[:, steps].T.ravel(), 1.0)
    m.coef(src, cols["imp"][steps], -1.0)
    m.coef(src[surplus], cols["pv"][steps[surplus]], -1.0)
    if math.isfinite(inp.export_limit_kw):
        ex = m.row("dem_export", -inp.export_limit_kw, math.inf, k)
        m.coef(ex, cols["imp"][steps], 1.0)
        m.coef(ex, cols["exp"][steps], -1.0)
        m.coef(np.repeat(ex, nd), dem.reshape(nd, n)[:, steps].T.ravel(), -1.0)


def valley(inp: PlanInput) -> np.ndarray:
    """The steps wholly in the tariff's cheapest period (without a tariff: at the horizon's
    lowest import price); a step straddling its edge pays a blend and is not one."""
    price = np.asarray(inp.import_price, dtype=float)
    low = price.min(initial=math.inf) if inp.valley_price is None else inp.valley_price
    return price <= low + VALLEY_TOL


def result(inp: PlanInput, cols: dict[str, slice], x: np.ndarray, dt: np.ndarray) -> DemandPlan:
    """The demands' part of a solution: kW per device, shortfalls, valley energy, notes."""
    n, nd = inp.n, len(inp.demands)
    if not nd:
        return DemandPlan({}, {}, 0.0, 0.0)
    kw = np.clip(x[cols["dem"]].reshape(nd, n), 0.0, None)
    kw[kw < 1e-6] = 0.0
    short = x[cols["dem_short"]]
    ids = [d.id for d in inp.demands]
    kwh = kw @ dt
    notes = []
    now = inp.now
    for d, s, t in zip(inp.demands, short, deadlines(inp), strict=True):
        if d.deadline <= now:
            notes.append(f"demand {d.id} is past its deadline {d.deadline.isoformat()}: "
                         f"{d.energy_kwh:.1f} kWh planned flat out")
        if s > _TOL_KWH:
            by = inp.start + timedelta(seconds=t - inp.start.timestamp())
            notes.append(f"demand {d.id} short by {s:.1f} of {d.energy_kwh:.1f} kWh by "
                         f"{by.isoformat(timespec='minutes')} (time or import room)")
    return DemandPlan(
        kw={i: kw[k] for k, i in enumerate(ids)},
        short_kwh={i: float(s) if s > _TOL_KWH else 0.0 for i, s in zip(ids, short, strict=True)},
        kwh=float(kwh.sum()), valley_kwh=float((kw[:, valley(inp)] @ dt[valley(inp)]).sum()),
        notes=tuple(notes))


def kpis(plan) -> str:
    """The planner log's words on the demands: how much energy, how much of it in the
    valley, and which fall short."""
    if not plan.demand_kw:
        return ""
    share = plan.demand_valley_kwh / plan.demand_kwh if plan.demand_kwh > 0 else 0.0
    short = ", ".join(f"{i} {v:.1f} kWh" for i, v in plan.demand_short_kwh.items() if v > 0)
    return (f", demands {plan.demand_kwh:.1f} kWh ({share:.0%} in the valley)"
            + (f", short: {short}" if short else ""))


def usable(demands) -> tuple[list, list[str]]:
    """The demands the LP can take, and why each other one is left out (a bad reading
    must not cost the site its plan)."""
    ok, bad, seen = [], [], set()
    for d in demands:
        if d.id in seen:
            bad.append(f"demand {d.id}: a second one for the same device")
        elif not (math.isfinite(d.energy_kwh) and math.isfinite(d.max_kw) and d.max_kw > 0):
            bad.append(f"demand {d.id}: energy {d.energy_kwh} kWh / max {d.max_kw} kW unusable")
        elif d.deadline.tzinfo is None:
            bad.append(f"demand {d.id}: deadline without a time zone")
        else:
            seen.add(d.id)
            if d.energy_kwh > 0:
                ok.append(d)
    return ok, bad

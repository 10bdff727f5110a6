"""From an LP solution to a `Plan`: grid, battery, PV and demand (EV) schedules, SoC, and
the money."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from edge.plan import demands, thermal
from edge.plan.model import Lp, PlanInput, committed, demand_blocks

_TOL_KW = 1e-4
_TOL_KWH = 1e-3


@dataclass(frozen=True)
class Plan:
    """A schedule per step of `step_s` from `start` (step 0 may be shorter: it runs from the
    moment of planning to the end of that step). Powers are step averages in kW."""

    start: datetime
    step_s: int
    grid_kw: np.ndarray  # (n,) + import / - export
    bess_kw: np.ndarray  # (n,) all batteries, + discharge / - charge
    bess_kw_by_id: dict[str, np.ndarray]
    soc_pct: np.ndarray  # (n+1,) site SoC, capacity-weighted; [0] is the start
    pv_kw: np.ndarray  # (n,) PV used (available minus curtailed)
    objective: float  # energy_cost + demand_charge + degradation_cost (no penalties)
    energy_cost: float  # import cost - export revenue
    demand_charge: float  # demand_charge_per_kw * peak_kw
    status: str  # "optimal" | "time_limit" | "fallback"
    reason: str
    solve_s: float
    build_s: float = 0.0
    degradation_cost: float = 0.0
    peak_kw: float = 0.0  # billing peak: max(peak_so_far, highest 15-min mean net import)
    soc_pct_by_id: dict[str, np.ndarray] = field(default_factory=dict)
    first_step_s: float | None = None
    commitment_short_kw: np.ndarray | None = None  # (n,) kW outside a DR/dispatch bound
    # Energy demands (EV sessions): kW per device and step (part of grid_kw), the kWh each
    # falls short by its deadline, and their energy over the horizon, all and in the valley.
    demand_kw: dict[str, np.ndarray] = field(default_factory=dict)
    demand_short_kwh: dict[str, float] = field(default_factory=dict)
    demand_kwh: float = 0.0
    demand_valley_kwh: float = 0.0
    # HVAC and thermal storage: kW per device and step (part of grid_kw), each zone's
    # temperature and each tank's thermal kWh (n+1, [0] now) and the kelvin-hours the plan
    # leaves outside the bands.
    thermal_kw: dict[str, np.ndarray] = field(default_factory=dict)
    tank_kwh: dict[str, np.ndarray] = field(default_factory=dict)
    zone_c: dict[str, np.ndarray] = field(default_factory=dict)
    comfort_violation_kh: float = 0.0

    @property
    def n(self) -> int:
        return len(self.grid_kw)

    @property
    def bill(self) -> float:
        """What the utility would bill for the plan: energy plus demand charge. No
        degradation, no penalties - the figure to compare with a metered bill."""
        return self.energy_cost + self.demand_charge

    @property
    def commitment_short_kwh(self) -> float:
        """Energy by which the plan misses its DR/dispatch commitments (0: all met)."""
        if self.commitment_short_kw is None:
            return 0.0
        dt = np.full(self.n, self.step_s / 3600.0)
        if self.first_step_s is not None and self.n:
            dt[0] = self.first_step_s / 3600.0
        return float(np.sum(self.commitment_short_kw * dt))

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.n * self.step_s)

    def step_at(self, t: datetime) -> int | None:
        """Index of the step covering `t`, or None outside the plan."""
        k = int((t - self.start).total_seconds() // self.step_s)
        first = self.start + timedelta(seconds=self.step_s) - timedelta(
            seconds=self.first_step_s or self.step_s)
        return k if 0 <= k < self.n and t >= first else None

    def covers(self, t: datetime) -> bool:
        return self.step_at(t) is not None


def to_plan(inp: PlanInput, lp: Lp, x: np.ndarray, status: str, solve_s: float,
            build_s: float) -> Plan:
    n, nb = inp.n, len(inp.batteries)
    dt = inp.dt_h
    col = lambda name: x[lp.cols[name]]  # noqa: E731
    imp, exp, pv = col("imp"), col("exp"), col("pv")
    ch, dis = col("ch").reshape(nb, n), col("dis").reshape(nb, n)
    e = col("e").reshape(nb, n)
    ids = [b.id for b in inp.batteries]
    cap = np.array([b.capacity_kwh for b in inp.batteries])
    net = dis - ch
    energy = np.hstack([lp.e0_kwh[:, None], e]) if nb else np.zeros((0, n + 1))
    site_soc = (energy.sum(axis=0) / cap.sum() * 100) if nb else np.full(n + 1, np.nan)
    grid = imp - exp
    peak = max(inp.peak_so_far_kw, float((demand_blocks(inp) @ grid).max(initial=0.0)))
    short = np.zeros(n)
    if "c_over" in lp.cols:
        rows = np.flatnonzero(committed(inp))
        short[rows] = x[lp.cols["c_over"]] + x[lp.cols["c_under"]]
    short[short < _TOL_KW] = 0.0
    energy_cost = float(np.sum(dt * (inp.import_price * imp - inp.export_price * exp)))
    demand = inp.demand_charge_per_kw * peak
    degradation = float(inp.degradation_cost_per_kwh * np.sum(dt * (ch + dis)))
    dem = demands.result(inp, lp.cols, x, dt)
    th = thermal.result(inp, lp.cols, x, dt)
    reason = "; ".join(r for r in (_notes(inp, lp, x, dt), *dem.notes) if r)
    return Plan(
        start=inp.start, step_s=inp.step_s, grid_kw=grid, bess_kw=net.sum(axis=0),
        bess_kw_by_id={i: net[k] for k, i in enumerate(ids)}, soc_pct=site_soc, pv_kw=pv,
        objective=energy_cost + demand + degradation, energy_cost=energy_cost,
        demand_charge=demand, status=status, reason=reason, solve_s=solve_s,
        build_s=build_s, degradation_cost=degradation, peak_kw=peak,
        soc_pct_by_id={i: energy[k] / cap[k] * 100 for k, i in enumerate(ids)},
        first_step_s=inp.first_step_s, commitment_short_kw=short, demand_kw=dem.kw,
        demand_short_kwh=dem.short_kwh, demand_kwh=dem.kwh, demand_valley_kwh=dem.valley_kwh,
        thermal_kw=th.kw, zone_c=th.zone_c, tank_kwh=th.tank_kwh,
        comfort_violation_kh=th.violation_kh,
    )


def _notes(inp: PlanInput, lp: Lp, x: np.ndarray, dt: np.ndarray) -> str:
    """What a reader of the plan should know: compromises the LP had to make."""
    n, nb = inp.n, len(inp.batteries)
    out = []
    if nb:
        both = np.minimum(x[lp.cols["ch"]], x[lp.cols["dis"]]).reshape(nb, n)
        k = int((both > _TOL_KW).any(axis=0).sum())
        if k:
            out.append(f"charge and discharge overlap in {k} step(s) (burning energy pays: "
                       "negative price or a grid floor); netted per battery")
    if "short" in lp.cols:
        short = x[lp.cols["short"]]
        if short.max() > 1e-3:
            out.append(f"below the reserve SoC by up to {short.max():.1f} kWh "
                       "(a commitment or the starting SoC needs it)")
    if "tshort" in lp.cols:
        t = x[lp.cols["tshort"]].sum()
        if t > 1e-3:
            out.append(f"ends {t:.1f} kWh below the starting energy")
    out.extend(_commitment_notes(inp, lp, x, dt))
    return "; ".join(out)


def _commitment_notes(inp: PlanInput, lp: Lp, x: np.ndarray, dt: np.ndarray) -> list[str]:
    """Per commitment the plan cannot fully meet: how many kWh short, in which steps."""
    if "c_over" not in lp.cols:
        return []
    rows = np.flatnonzero(committed(inp))
    kw = x[lp.cols["c_over"]] + x[lp.cols["c_under"]]
    bad = kw > _TOL_KW
    labels = inp.commitment_ids or ("",) * inp.n
    out = []
    for label in dict.fromkeys(labels[t] for t in rows[bad]):
        mine = np.array([labels[t] == label for t in rows]) & bad
        steps = rows[mine]
        kwh = float(np.sum(kw[mine] * dt[steps]))
        if kwh < _TOL_KWH:
            continue
        first = _step_start(inp, int(steps[0]))
        last = inp.start + timedelta(seconds=(int(steps[-1]) + 1) * inp.step_s)
        name = f"commitment {label}" if label else "a commitment"
        out.append(f"{name} cannot be fully met: short by {kwh:.1f} kWh in steps "
                   f"{_ranges(steps)} ({first.isoformat()} to {last.isoformat()})")
    return out


def _ranges(steps: np.ndarray) -> str:
    """[0 1 2 5 7 8] -> "0-2,5,7-8"."""
    out, start = [], int(steps[0])
    for a, b in zip(steps, [*steps[1:], None]):
        if b is None or b != a + 1:
            out.append(f"{start}-{int(a)}" if a != start else f"{start}")
            if b is not None:
                start = int(b)
    return ",".join(out)


def _step_start(inp: PlanInput, k: int) -> datetime:
    t = inp.start + timedelta(seconds=k * inp.step_s)
    if k == 0 and inp.first_step_s is not None:
        t += timedelta(seconds=inp.step_s - inp.first_step_s)
    return t


def infeasibility_reason(inp: PlanInput, lp: Lp, x: np.ndarray) -> str:
    """Name the steps and configured limits an elastic solve had to break, and by how much
    (commitments are soft in every solve, so only the limits can make a plan infeasible)."""
    over, under = x[lp.cols["over"]], x[lp.cols["under"]]
    parts = []
    for label, amount, source, bound in (
        ("above", over, "import limit", inp.import_limit_kw),
        ("below", under, "export limit", -inp.export_limit_kw),
    ):
        bad = np.flatnonzero(amount > 1e-3)
        if not len(bad):
            continue
        t0 = int(bad[0])
        parts.append(
            f"grid must go up to {amount.max():.1f} kW {label} its bound in {len(bad)} step(s), "
            f"first at {_step_start(inp, t0).isoformat()} ({source} {bound + 0.0:.1f} kW; "
            f"load {inp.load_kw[t0]:.1f} kW, PV {inp.pv_kw[t0]:.1f} kW)"
        )
    return "; ".join(parts) or "no schedule satisfies the SoC and grid bounds"

"""The references a run is compared with, all on the scenario's true series and prices:

- the perfect-foresight optimum: the planner's own LP (edge/plan) solved once over the
  whole run with the true series on 15-min means, and the car park's true sessions as
  energy demands (edge/plan/demands.py): what any controller could at best have done;
- uncontrolled charging: the site's rules replayed with its car park left alone
  (tools/simulate/replay.py `uncontrolled`): the bill and the import-limit excursions of a
  site whose cars all charge flat out from arrival.
(The rule-based reference is the replay itself; the no-battery one the HIL meters beside
the real site.)"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np

from edge.config import Config
from edge.roles.role import Demand
from hil.scenario import BILLING_S, Scenario, Truth
from tools.simulate.events import dr_instruction
from tools.simulate.evkpis import (
    Outcome,
    TrueSession,
    ev_kpis,
    max_kw,
    need_kwh,
    session_rows,
    true_sessions,
)
from tools.simulate.replay import replay_rules
from tools.simulate.thermal import true_thermal
from tools.simulate.tracks import Excess


def uncontrolled(cfg: Config, scenario: Scenario, truth: Truth) -> dict:
    """Every car at its maximum from arrival until full or gone; the rules run the rest of
    the site, which sees the cars only as load at the PCC."""
    return replay_rules(cfg, truth, scenario.duration_s, scenario.dr_windows(),
                        scenario.initial_soc(cfg), uncontrolled=True)


def demands_of(sessions: list[TrueSession], end: datetime) -> list[Demand]:
    """The true sessions as the LP's demands: each its need by its departure at up to the
    car's power. A stay that goes on past the end of the run is due at the end with the
    share of its need that its time inside the run bears."""
    out = []
    for s in sessions:
        need = need_kwh(s.device, s.arrival)
        deadline = s.departs
        if deadline > end:
            need *= (end - s.arrives) / (s.departs - s.arrives)
            deadline = end
        out.append(Demand(s.id, need, deadline, max_kw(s.device, s.arrival)))
    return out


def solve_with_arrivals(inp, arrivals: dict[str, datetime], time_limit_s: float):
    """The LP of `inp` with each demand drawing nothing before its arrival (a plan of the
    daemon's only has cars already plugged in, so edge/plan has no such bound)."""
    from edge.plan.model import build
    from edge.plan.result import to_plan
    from edge.plan.solve import PlanInfeasible, _run

    lp = build(inp)
    n = inp.n
    if "dem" in lp.cols:
        hi = lp.col_hi[lp.cols["dem"]].reshape(len(inp.demands), n)
        b = inp.start.timestamp() + np.arange(1, n + 1) * float(inp.step_s)
        for k, d in enumerate(inp.demands):
            hi[k] *= np.clip((b - arrivals[d.id].timestamp()) / inp.step_s, 0.0, 1.0)
        lp.col_hi[lp.cols["dem"]] = hi.ravel()
    status, x, took = _run(lp, time_limit_s)
    if x is None or status not in ("optimal", "time_limit"):
        raise PlanInfeasible(f"perfect-foresight LP: {status}")
    return to_plan(inp, lp, x, status, took, 0.0)


def optimum(cfg: Config, scenario: Scenario, truth: Truth, value_per_kwh: float,
            time_limit_s: float = 120.0):
    """The perfect-foresight optimum: the planner's LP over the whole run on 15-min means of
    the true series and prices, DR windows as commitments, the true EV sessions as demands,
    end energy worth `value_per_kwh` (a tank's per electric kWh: thermal / COP). Returns
    (kpis, plan)."""
    from edge.plan.model import build_input

    n = int(scenario.duration_s // BILLING_S)
    end = truth.start + timedelta(seconds=n * BILLING_S)
    load, pv = truth.averages(truth.start, n, BILLING_S)
    commitments = [dr_instruction(w) for w in scenario.dr_windows()]
    sessions = true_sessions(cfg, truth.start, end)
    inp = build_input(cfg, truth.start, BILLING_S, load, pv, scenario.initial_soc(cfg), 0.0,
                      commitments, demands=demands_of(sessions, end))
    zones, tanks = true_thermal(cfg, truth.start, n, BILLING_S)
    inp = replace(inp, import_price=truth.import_prices(truth.start, n, BILLING_S),
                  terminal_value_per_kwh=value_per_kwh, zones=zones, tanks=tanks)
    plan = solve_with_arrivals(inp, {s.id: s.arrives for s in sessions}, time_limit_s)
    h = BILLING_S / 3600
    imp, exp = np.maximum(plan.grid_kw, 0), np.maximum(-plan.grid_kw, 0)
    cap = sum(b.capacity_kwh for b in inp.batteries)
    import_cost = float(np.sum(imp * inp.import_price) * h)
    export_revenue = float(np.sum(exp * inp.export_price) * h)
    peak = float(max(imp.max(initial=0.0), 0.0))
    demand = peak * cfg.tariff.demand_charge_per_kw
    kpis = {
        "import_kwh": float(imp.sum() * h), "export_kwh": float(exp.sum() * h),
        "pv_kwh": float(plan.pv_kw.sum() * h), "pv_available_kwh": float(pv.sum() * h),
        "pv_curtailed_kwh": float((pv - plan.pv_kw).sum() * h),
        "load_kwh": float(load.sum() * h) + plan.demand_kwh,
        "import_cost": import_cost, "export_revenue": export_revenue,
        "energy_cost": import_cost - export_revenue, "peak_15min_import_kw": peak,
        "demand_cost": demand, "total_cost": import_cost - export_revenue + demand,
        "stored_kwh_start": float(plan.soc_pct[0]) / 100 * cap if cap else 0.0,
        "stored_kwh_end": float(plan.soc_pct[-1]) / 100 * cap if cap else 0.0,
        "tank_kwh_start": {i: float(e[0]) for i, e in plan.tank_kwh.items()},
        "tank_kwh_end": {i: float(e[-1]) for i, e in plan.tank_kwh.items()},
        "soc_min_pct": float(plan.soc_pct.min()) if cap else None,
        "soc_max_pct": float(plan.soc_pct.max()) if cap else None,
        "status": plan.status, "solve_s": plan.solve_s, "grid_15min_kw": plan.grid_kw,
    }
    if zones:
        kpis.update(comfort_violation_kh=plan.comfort_violation_kh,
                    zone_max_c=float(max(z[1:].max() for z in plan.zone_c.values())),
                    zone_min_c=float(min(z[1:].min() for z in plan.zone_c.values())))
    imports = Excess()
    limit = math.inf if cfg.control.import_limit_kw is None else cfg.control.import_limit_kw
    for g in plan.grid_kw:
        imports.add(float(g) - limit, BILLING_S)
    kpis.update(import_over_min=imports.seconds / 60, import_worst_kw=imports.worst_kw,
                import_over_kwh=imports.kwh)
    if sessions:
        outcomes = [_served(s, plan, end) for s in sessions]
        kpis.update(ev_kpis(plan.demand_kwh, plan.demand_valley_kwh, outcomes, imports),
                    ev_sessions_detail=session_rows(outcomes))
    return kpis, plan


def _served(s: TrueSession, plan, end: datetime) -> Outcome:
    kw = plan.demand_kw.get(s.id)
    delivered = 0.0 if kw is None else float(np.sum(kw) * plan.step_s / 3600)
    return Outcome(s.device.id, s.connector, s.arrives, s.departs, need_kwh(s.device, s.arrival),
                   delivered, None, s.device.target_soc_pct, s.departs <= end)

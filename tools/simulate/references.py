"""The perfect-foresight reference: the planner's own LP (edge/plan) solved once over the
whole run with the true series on 15-min means; what any controller could at best have
done. (The no-battery reference needs no code here: the HIL meters it beside the real
site.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edge.config import Config
from hil.scenario import BILLING_S, Scenario, Truth
from tools.simulate.events import dr_instruction


def optimum(cfg: Config, scenario: Scenario, truth: Truth, value_per_kwh: float,
            time_limit_s: float = 120.0):
    """The perfect-foresight optimum: the planner's LP over the whole run on 15-min means of
    the true series and prices, DR windows as commitments, end energy worth
    `value_per_kwh`. Returns (kpis, plan)."""
    from edge.plan.model import build_input
    from edge.plan.solve import solve

    n = int(scenario.duration_s // BILLING_S)
    load, pv = truth.averages(truth.start, n, BILLING_S)
    commitments = [dr_instruction(w) for w in scenario.dr_windows()]
    inp = build_input(cfg, truth.start, BILLING_S, load, pv, scenario.initial_soc(cfg), 0.0,
                      commitments)
    inp = replace(inp, import_price=truth.import_prices(truth.start, n, BILLING_S),
                  terminal_value_per_kwh=value_per_kwh)
    plan = solve(inp, time_limit_s)
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
        "pv_curtailed_kwh": float((pv - plan.pv_kw).sum() * h), "load_kwh": float(load.sum() * h),
        "import_cost": import_cost, "export_revenue": export_revenue,
        "energy_cost": import_cost - export_revenue, "peak_15min_import_kw": peak,
        "demand_cost": demand, "total_cost": import_cost - export_revenue + demand,
        "stored_kwh_start": float(plan.soc_pct[0]) / 100 * cap,
        "stored_kwh_end": float(plan.soc_pct[-1]) / 100 * cap,
        "soc_min_pct": float(plan.soc_pct.min()), "soc_max_pct": float(plan.soc_pct.max()),
        "status": plan.status, "solve_s": plan.solve_s,
    }
    return kpis, plan



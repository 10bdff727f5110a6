"""The HTML report of a simulated run: the KPI table of every strategy, the notes, and the
series behind the figures (15-min means, the plan in force, the optimum's schedule)."""

from __future__ import annotations

from edge.report.history import INTERVAL_S
from tools.report_html import ReportData, Steps
from tools.simulate.evkpis import unmet
from tools.simulate.kpis import extra_rows, strategies
from tools.simulate.run import RunResult
from tools.simulate.tracks import VIOLATION_TOL_KW


def report_data(res: RunResult) -> ReportData:
    """The HTML report's content for a run (after `evaluate`)."""
    k, sc, cfg = res.kpis, res.scenario, res.config
    cols = strategies(k)
    cur = k["currency"]
    rows = [
        ("Total cost", cur, "total_cost"), ("Energy cost", cur, "energy_cost"),
        ("Demand charge", cur, "demand_cost"), ("Adjusted cost (end energy valued)", cur,
                                                 "adjusted_cost"),
        ("Energy imported", "kWh", "import_kwh"), ("Energy exported", "kWh", "export_kwh"),
        ("Peak import (15-min mean)", "kW", "peak_15min_import_kw"),
        ("PV curtailed", "kWh", "pv_curtailed_kwh"), ("SoC min", "%", "soc_min_pct"),
        ("SoC max", "%", "soc_max_pct"),
        ("Stored energy change (tanks: thermal / COP)", "kWh", "stored_energy_change_kwh"),
    ]
    kpi_rows = [(name, unit, [c.get(key) for _, c in cols]) for name, unit, key in rows]
    kpi_rows += [(name, unit, [c.get(key) for _, c in cols])
                 for name, unit, key, _ in extra_rows(k)]
    kpi_rows.append(("Cost ratio vs optimum", "", [
        k.get("cost_ratio_vs_optimum") if n == "controller" else
        c.get("cost_ratio_vs_optimum", 1.0 if n == "optimum" else None) for n, c in cols]))
    n = int(sc.duration_s // INTERVAL_S)
    means = res.recorder.means()
    actual = Steps(sc.start, INTERVAL_S, means["grid"][:n], means["bess"][:n],
                   res.recorder.soc_end[:n])
    plan = None
    if res.plans.plans:
        f = res.plans.in_force(sc.start, n, INTERVAL_S)
        plan = Steps(sc.start, INTERVAL_S, f["grid"], f["bess"], f["soc"])
    opt = None
    if res.optimum_plan is not None:
        p = res.optimum_plan
        opt = Steps(p.start, p.step_s, p.grid_kw, p.bess_kw, p.soc_pct[1:])
    lv = k["limit_violations"]
    fe = k.get("forecast_error") or {}
    notes = [
        f"Limit excursions beyond {VIOLATION_TOL_KW} kW: import {lv['import']['count']} "
        f"(worst {lv['import']['worst_kw']:.2f} kW), export {lv['export']['count']} (worst "
        f"{lv['export']['worst_kw']:.2f} kW), DR {lv['dr']['count']}.",
        f"Cycles {k['cycles']}, crashes {k['crashes']}; simulated ×{res.speed:g} in "
        f"{res.wall_s:.0f} s wall. End-of-run energy valued at "
        f"{k['terminal_value_per_kwh']:.3f} {cur}/kWh in the adjusted cost.",
    ]
    ctrl = k["controller"]
    if "ev_kwh" in ctrl:
        notes.append(
            f"EV sessions (a car's stay; its need: the energy to the charger's target SoC, "
            f"or its default energy for a car that does not tell its SoC): "
            f"{ctrl['ev_sessions_met']} of {ctrl['ev_sessions']} that left in the run met "
            f"it, {ctrl['ev_sessions_open']} still plugged in at the end"
            + (f"; short: {short}." if (short := unmet(k["ev_sessions"]["controller"]))
               else "."))
    if fe.get("load"):
        notes.append(f"Forecast MAE ({res.forecast}): load {fe['load']['mae_kw']:.2f} kW, "
                     f"PV {fe['pv']['mae_kw']:.2f} kW over {fe['forecasts']} forecasts.")
    c = cfg.control
    mode = (f"planner with {res.forecast} forecasts" if res.planner
            else "rule-based control (no planner)")
    return ReportData(
        title=f"{sc.name}: {cfg.site.id}", tz=res.truth.tz, currency=cur,
        subtitle=f"{sc.spec.description} — {mode}, {sc.duration_s / 3600:g} h from "
                 f"{sc.start.isoformat()}",
        samples=res.samples, import_price=res.truth.price_at, export_price=cfg.tariff.export_price,
        kpi_columns=[name for name, _ in cols], kpi_rows=kpi_rows, notes=notes,
        import_limit_kw=c.import_limit_kw, export_limit_kw=c.export_limit_kw,
        actual=actual, plan=plan, optimum=opt,
        windows=[(w.start, w.end, w.id) for w in sc.windows])



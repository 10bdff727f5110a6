"""The KPI document of a run: the controller next to its references, and how close it came.

Energy left in store at the end is worth `terminal_value_per_kwh` (the scenario's, default
its lowest import price) per electric kWh: every strategy's `adjusted_cost` = total_cost −
value × (stored energy at the end − at the start), where the stored energy is the batteries'
kWh plus each thermal storage tank's thermal kWh divided by its COP (what the tank's model,
edge/plan/thermal.py and the HIL's, charges per electric kWh; its standing loss is already
in the end state). `stored_energy_change_kwh` is that change in electric kWh and
`stored_thermal_kwh_start/_end` the tanks' thermal kWh. The optimum maximises exactly that
(its LP values the end energy of batteries and tanks alike, with no end ≥ start constraint),
so strategies that end fuller or emptier compare fairly. The no-battery site runs the
controller's tanks, so it carries the controller's tank change.

cost_ratio_vs_optimum = 1 + (adjusted controller cost − adjusted optimum) / scale, where
scale is the adjusted optimum when it is > 0 (then the ratio is simply controller/optimum)
and otherwise the no-battery site's gross import cost (a site that earns money overall has
no meaningful cost ratio; the gap is then measured against what the site buys).
`cost_gap_vs_optimum` (money) and `savings_capture` ((no battery − controller) /
(no battery − optimum); none on a site without batteries, whose "no battery" run is the
controller's own) are reported too.

A site with EV chargers adds the uncontrolled-charging reference and, per strategy, the EV
figures of tools/simulate/evkpis.py (energy, valley share, departures met) beside the
minutes and worst kW above the import limit; `ev_sessions` lists each session per strategy.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from edge.report.bill import self_consumption_pct
from hil.scenario import BILLING_S
from tools.simulate.evkpis import ev_kpis, session_rows
from tools.simulate.islandkpis import island_kpis
from tools.simulate.references import optimum, uncontrolled
from tools.simulate.replay import replay_rules
from tools.simulate.run import RunResult
from tools.simulate.thermal import event_kpis, hvacs_of
from tools.simulate.tracks import VIOLATION_TOL_KW, PlanTrack

log = logging.getLogger(__name__)


def strategies(k: dict) -> list[tuple[str, dict]]:
    """The columns of a KPI document that have figures: the controller, then the references
    in the order the tables show them."""
    refs = k["references"]
    cols = [("controller", k["controller"]), ("rule-based", refs.get("rule_based")),
            ("uncontrolled EV", refs.get("uncontrolled")), ("no battery", refs["no_battery"]),
            ("optimum", refs.get("optimum"))]
    return [(name, c) for name, c in cols if c is not None and "error" not in c]


def extra_rows(k: dict) -> list[tuple[str, str, str, int]]:
    """(name, unit, key, decimals) of the rows the console table and the report show after
    the costs: the car park's figures on a site with chargers, the import limit always."""
    rows = [("Time above import limit", "min", "import_over_min", 1),
            ("Worst kW above import limit", "kW", "import_worst_kw", 2)]
    c = k["controller"]
    if "comfort_violation_kh" in c:
        rows = [("Outside comfort band", "K·h", "comfort_violation_kh", 2),
                ("Zone max", "°C", "zone_max_c", 2)] + rows
    if "rebound_peak_kw" in c:
        rows = [("DR delivered / requested", "", "dr_ratio", 3),
                ("Pre-event peak (15 min)", "kW", "pre_event_peak_kw", 1),
                ("Rebound peak (15 min, 2 h)", "kW", "rebound_peak_kw", 1)] + rows
    if "stored_thermal_kwh_end" in c:
        rows = [("Tank energy at start (thermal)", "kWh", "stored_thermal_kwh_start", 1),
                ("Tank energy at end (thermal)", "kWh", "stored_thermal_kwh_end", 1)] + rows
    if "ev_kwh" in c:
        n = c["ev_sessions"]
        rows = [("EV energy delivered", "kWh", "ev_kwh", 1),
                ("EV energy in valley hours", "%", "ev_valley_share_pct", 1),
                ("EV departures met", f"of {n}", "ev_sessions_met", 0)] + rows
    return rows


# The import-limit and EV figures a strategy carries beside its costs.
EV_KEYS = ("import_over_min", "import_worst_kw", "import_over_kwh", "ev_kwh", "ev_valley_kwh",
           "ev_valley_share_pct", "ev_sessions", "ev_sessions_met", "ev_sessions_open",
           "ev_short_kwh")
# The thermal figures (tools/simulate/thermal.py).
THERMAL_KEYS = ("comfort_violation_kh", "zone_max_c", "zone_min_c", "pre_event_peak_kw",
                "rebound_peak_kw", "rebound_under_pre_event_peak", "dr_requested_kwh",
                "dr_delivered_kwh", "dr_ratio")


def costs(k: dict, value: float, cop: dict[str, float]) -> dict:
    """The comparable figures of one strategy: costs and the end-of-run adjustment; `cop`:
    each tank's COP by id."""
    d_e = k.get("stored_kwh_end", 0.0) - k.get("stored_kwh_start", 0.0)
    t0, t1 = k.get("tank_kwh_start", {}), k.get("tank_kwh_end", {})
    d_th = sum((t1[i] - t0[i]) / cop[i] for i in t0)
    out = {key: k[key] for key in ("total_cost", "energy_cost", "demand_cost", "import_cost",
                                   "export_revenue", "import_kwh", "export_kwh",
                                   "peak_15min_import_kw", "pv_curtailed_kwh") if key in k}
    out["stored_energy_change_kwh"] = d_e + d_th
    if t0:
        out.update(stored_thermal_kwh_start=sum(t0.values()),
                   stored_thermal_kwh_end=sum(t1.values()))
    out["adjusted_cost"] = k["total_cost"] - value * (d_e + d_th)
    for key in ("soc_min_pct", "soc_max_pct", "status", "solve_s", *EV_KEYS, *THERMAL_KEYS):
        if key in k:
            out[key] = k[key]
    return out


def _split_sessions(k: dict, name: str, sessions: dict) -> dict:
    """A strategy's figures without its session list, which goes to `sessions[name]`."""
    if "ev_sessions_detail" in k:
        k = dict(k)
        sessions[name] = k.pop("ev_sessions_detail")
    return k


def ratio(controller: float, opt: float, no_battery: float, nb_import_cost: float,
          batteries: bool = True) -> dict:
    """cost_ratio_vs_optimum and its companions (see the module docstring). Without
    `batteries` the "no battery" run is the controller's own site: nothing to capture."""
    gap = controller - opt
    basis, scale = ("optimum", opt) if opt > 1e-9 else ("no_battery_import_cost", nb_import_cost)
    r = 1 + gap / scale if scale > 1e-9 else None
    room = no_battery - opt
    capture = (no_battery - controller) / room if room > 1e-6 and batteries else None
    return {"cost_ratio_vs_optimum": r, "ratio_basis": basis, "cost_gap_vs_optimum": gap,
            "savings_capture": capture}


def _solve_stats(plans: PlanTrack) -> dict:
    times = np.array([p.solve_s for p in plans.plans if math.isfinite(p.solve_s)])
    statuses: dict[str, int] = {}
    for p in plans.plans:
        statuses[p.status] = statuses.get(p.status, 0) + 1
    if not len(times):
        return {"plans": 0, "status": statuses}
    return {"plans": len(plans.plans), "status": statuses, "mean_s": float(times.mean()),
            "p50_s": float(np.percentile(times, 50)), "p95_s": float(np.percentile(times, 95)),
            "max_s": float(times.max())}


def evaluate(res: RunResult, *, with_optimum: bool = True, with_rules: bool = True) -> dict:
    """The KPI document of a run (also stored in `res.kpis`)."""
    sc, cfg, truth = res.scenario, res.config, res.truth
    value = sc.spec.terminal_value_per_kwh
    if value is None:
        value = float(truth.import_prices(truth.start, int(sc.duration_s // BILLING_S),
                                          BILLING_S).min())
    real, nb = res.site_kpis["with_battery"], res.site_kpis["no_battery"]
    e0, e1 = res.stored_kwh
    cop = {d.id: d.cop for d in cfg.devices if d.role == "thermal_storage"}
    tanks = {"tank_kwh_start": res.tank_kwh[0], "tank_kwh_end": res.tank_kwh[1]}
    ctrl = dict(real, stored_kwh_start=e0, stored_kwh_end=e1, **tanks,
                soc_min_pct=res.recorder.soc_min if math.isfinite(res.recorder.soc_min) else None,
                soc_max_pct=res.recorder.soc_max if math.isfinite(res.recorder.soc_max) else None)
    controller = costs(ctrl, value, cop)
    controller.update(
        pv_kwh=real["pv_kwh"], load_kwh=real["load_kwh"], max_import_kw=real["max_import_kw"],
        max_export_kw=real["max_export_kw"], self_consumption_pct=self_consumption_pct(real),
        import_over_min=res.recorder.imports.seconds / 60,
        import_worst_kw=res.recorder.imports.worst_kw, import_over_kwh=res.recorder.imports.kwh)
    sessions: dict = {}
    ev = res.recorder.ev
    if ev is not None:
        outcomes = ev.outcomes()
        controller.update(ev_kpis(ev.kwh, ev.valley_kwh, outcomes, res.recorder.imports))
        sessions["controller"] = session_rows(outcomes)
    thermal = bool(hvacs_of(cfg))
    windows, base = sc.dr_windows(), None
    if thermal:
        controller.update(res.recorder.comfort.kpis())
        if windows and with_rules:  # the site as it would have been without the event
            base = replay_rules(cfg, truth, sc.duration_s, [], sc.initial_soc(cfg))[
                "grid_15min_kw"]
        controller.update(event_kpis(res.recorder.means()["grid"], base, sc.start, windows))
    refs: dict = {"no_battery": costs(dict(nb, **tanks), value, cop)}
    if with_rules:
        rules = replay_rules(cfg, truth, sc.duration_s, windows, sc.initial_soc(cfg))
        if thermal:
            rules.update(event_kpis(rules["grid_15min_kw"], base, sc.start, windows))
        refs["rule_based"] = costs(_split_sessions(rules, "rule_based", sessions), value,
                                    cop)
    if with_rules and ev is not None:
        refs["uncontrolled"] = costs(
            _split_sessions(uncontrolled(cfg, sc, truth), "uncontrolled", sessions), value, cop)
    k: dict = {
        "scenario": sc.name, "site": cfg.site.id, "start": sc.start.isoformat(),
        "hours": sc.duration_s / 3600, "forecast": res.forecast if res.planner else None,
        "planner": res.planner, "speed": res.speed, "wall_s": res.wall_s,
        "currency": cfg.tariff.currency, "terminal_value_per_kwh": value,
        "controller": controller,
        "limit_violations": {"import": res.recorder.imports.as_dict(),
                             "export": res.recorder.exports.as_dict(),
                             "dr": res.recorder.dr_excess.as_dict(),
                             "tolerance_kw": VIOLATION_TOL_KW},
        "solve_times": _solve_stats(res.plans), "planner_rounds": res.planner_stats,
        "forecast_error": (res.forecast_log.errors(truth, sc.end) if res.forecast_log else None),
        "forecaster_own_error": res.forecaster_errors,
        "cycles": res.cycles, "crashes": res.crashes, "device_errors": res.device_errors,
        "references": refs,
        "notes": res.notes,
    }
    if sessions:
        k["ev_sessions"] = sessions
    if res.island is not None:
        k["island"] = island_kpis(res.island)
    if with_optimum:
        try:
            opt, plan = optimum(cfg, sc, truth, value)
            if thermal:
                opt.update(event_kpis(opt["grid_15min_kw"], base, sc.start, windows))
            refs["optimum"] = costs(_split_sessions(opt, "optimum", sessions), value, cop)
            res.optimum_plan = plan
        except Exception as exc:  # noqa: BLE001 - report it, the run's own KPIs still stand
            log.warning("perfect-foresight optimum failed: %s", exc)
            refs["optimum"] = {"error": f"{type(exc).__name__}: {exc}"}
    opt_cost = refs.get("optimum", {}).get("adjusted_cost")
    if opt_cost is not None:
        k.update(ratio(controller["adjusted_cost"], opt_cost, refs["no_battery"]["adjusted_cost"],
                       nb["import_cost"], controller.get("soc_min_pct") is not None))
        for name in ("rule_based", "uncontrolled"):
            if name in refs:
                refs[name]["cost_ratio_vs_optimum"] = ratio(
                    refs[name]["adjusted_cost"], opt_cost, refs["no_battery"]["adjusted_cost"],
                    nb["import_cost"])["cost_ratio_vs_optimum"]
    else:
        k.update(cost_ratio_vs_optimum=None, ratio_basis=None, cost_gap_vs_optimum=None,
                 savings_capture=None)
    res.kpis = k
    return k


def write_json(kpis: dict, path: Path) -> None:
    def clean(x):
        if isinstance(x, float):
            return round(x, 4) if math.isfinite(x) else None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    path.write_text(json.dumps(clean(kpis), indent=2) + "\n", encoding="utf-8")



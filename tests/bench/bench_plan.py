"""Time the planner's LP for the demo site: 24 h @ 15 min (the default) and 48 h @ 5 min,
model build (config -> PlanInput -> sparse LP) and HiGHS solve timed separately.

Two variants of the demo site: as configured (zero export: a pure LP), and with export
allowed at its 0.39 CNY/kWh plus a demand charge (export pays more than the 0.31 valley
import, so every valley step gets a direction binary: a MILP).

For the MILP rows the same model is also solved by HiGHS alone to its default 0.01 % gap
(the reference, one run): its time, and how far the fast path's objective is above it.

Rolling re-plan: REPLANS consecutive rounds one step apart (forecasts shifted with the
horizon, the SoC where the last plan put it plus 0.5 %), each solved cold and warm (from the
previous round's basis, edge/plan/warm.py) in the same run; medians of the solve time over
the rounds after the first, model build (config -> LP) timed apart.

Run: python tests/bench/bench_plan.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

TESTS = Path(__file__).resolve().parents[1]

from benchlib import environment  # noqa: E402

from edge.config import BatteryDevice, load  # noqa: E402
from edge.plan.model import build, build_input  # noqa: E402
from edge.plan.solve import _highs, solve  # noqa: E402
from edge.plan.warm import WarmStart  # noqa: E402
from hil.config import sim_of  # noqa: E402
from hil.physics import clear_sky_kw, load_kw  # noqa: E402

REPEATS = 7
REPLANS = 9
START = datetime.fromisoformat("2026-06-22T00:00:00+08:00")


def profiles(cfg, n: int, step_s: int) -> tuple[np.ndarray, np.ndarray]:
    """The HIL's own PV and office load, averaged per step (1-min samples)."""
    tz = ZoneInfo(cfg.site.timezone)
    pv_sim = sim_of(next(d for d in cfg.devices if d.role == "pv"))
    ld = sim_of(next(d for d in cfg.devices if d.role == "meter" and d.measures == "load"))
    per = step_s // 60
    minutes = [START + timedelta(minutes=m) for m in range(n * per)]
    pv = np.array([clear_sky_kw(t, cfg.site.latitude, cfg.site.longitude, pv_sim.peak_kw)
                   for t in minutes])
    lo = np.array([load_kw(ld.profile, t.astimezone(tz), ld.base_kw, ld.day_kw)
                   for t in minutes])
    return lo.reshape(n, per).mean(1), pv.reshape(n, per).mean(1)


def case(cfg, hours: int, step_min: int) -> dict[str, float]:
    step_s = step_min * 60
    n = hours * 60 // step_min
    lo, pv = profiles(cfg, n, step_s)
    soc = {b.id: 30.0 for b in cfg.devices if isinstance(b, BatteryDevice)}
    builds, solves, plan, lp = [], [], None, None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        inp = build_input(cfg, START, step_s, lo, pv, soc)
        lp = build(inp)
        builds.append(time.perf_counter() - t0)
        plan = solve(inp, time_limit_s=60)
        solves.append(plan.solve_s)
    out = {"n": n, "cols": lp.a.shape[1], "rows": lp.a.shape[0], "bin": len(lp.integer),
           "build_ms": statistics.median(builds) * 1e3,
           "solve_ms": statistics.median(solves) * 1e3,
           "solve_ms_range": [min(solves) * 1e3, max(solves) * 1e3], "cost": plan.objective,
           "status": plan.status}
    if len(lp.integer):
        h = _highs(lp, 120.0)
        h.setOptionValue("mip_rel_gap", 1e-4)
        t0 = time.perf_counter()
        h.run()
        out["reference_ms"] = (time.perf_counter() - t0) * 1e3
        out["reference_cost"] = reference_cost(inp, lp, np.asarray(h.getSolution().col_value))
    return out


def replan(cfg, hours: int, step_min: int) -> dict[str, float]:
    """Cold vs warm solve over REPLANS shifted rounds (same inputs for both)."""
    step_s = step_min * 60
    n = hours * 60 // step_min
    lo, pv = profiles(cfg, n + REPLANS, step_s)
    soc = {b.id: 30.0 for b in cfg.devices if isinstance(b, BatteryDevice)}
    warm, cold_s, warm_s, build_s, gap = WarmStart(), [], [], [], 0.0
    cold_all, warm_all = [], []
    for k in range(REPLANS):
        t0 = time.perf_counter()
        inp = build_input(cfg, START + timedelta(seconds=k * step_s), step_s, lo[k:k + n],
                          pv[k:k + n], soc)
        build(inp)
        build_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cold = solve(inp, time_limit_s=60)
        t1 = time.perf_counter()
        hot = solve(inp, time_limit_s=60, warm=warm)
        t2 = time.perf_counter()
        if k:
            cold_all.append(t1 - t0)
            warm_all.append(t2 - t1)
            assert warm.used, warm.why
            cold_s.append(cold.solve_s)
            warm_s.append(hot.solve_s)
            gap = max(gap, abs(hot.objective - cold.objective) / abs(cold.objective))
        soc = {i: min(v[1] + 0.5, 100.0) for i, v in hot.soc_pct_by_id.items()}
    w, c = statistics.median(warm_s) * 1e3, statistics.median(cold_s) * 1e3
    return {"replan_warm_ms": w, "replan_cold_ms": c, "replan_warm_vs_cold": w / c,
            "replan_build_ms": statistics.median(build_s) * 1e3, "replans": REPLANS - 1,
            "replan_cold_total_ms": statistics.median(cold_all) * 1e3,
            "replan_warm_total_ms": statistics.median(warm_all) * 1e3,
            "replan_warm_ms_range": [min(warm_s) * 1e3, max(warm_s) * 1e3],
            "replan_cold_ms_range": [min(cold_s) * 1e3, max(cold_s) * 1e3],
            "replan_max_rel_cost_diff": gap}


def reference_cost(inp, lp, x) -> float:
    """The bill (energy + demand + degradation) of the reference solution, as Plan counts."""
    from edge.plan.result import to_plan
    return to_plan(inp, lp, x, "optimal", 0.0, 0.0).objective


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    demo = load(TESTS.parent / "configs/demo.yaml")
    milp = demo.model_copy(update={
        "control": demo.control.model_copy(update={"export_limit_kw": None}),
        "tariff": demo.tariff.model_copy(update={"demand_charge_per_kw": 40.0}),
    })
    print("Planner LP solve time (HiGHS via highspy), median of", REPEATS, "runs")
    print(f"{'site':<34}{'horizon':>14}{'steps':>7}{'cols':>7}{'rows':>7}{'binaries':>9}"
          f"{'build ms':>10}{'solve ms':>10}  status")
    results = {}
    for key, name, cfg in (("lp", "demo (zero export: LP)", demo),
                           ("milp", "demo + export + demand (MILP)", milp)):
        for hours, step in ((24, 15), (48, 5)):
            r = case(cfg, hours, step)
            r.update(replan(cfg, hours, step))
            results[f"{key}_{hours}h_{step}min"] = r
            print(f"{name:<34}{f'{hours} h @ {step} min':>14}{r['n']:>7}{r['cols']:>7}"
                  f"{r['rows']:>7}{r['bin']:>9}{r['build_ms']:>10.1f}{r['solve_ms']:>10.1f}"
                  f"  {r['status']}")
            if "reference_ms" in r:
                above = (r["cost"] - r["reference_cost"]) / abs(r["reference_cost"])
                print(f"{'  reference: HiGHS MILP alone, gap 0.01 %':<62}"
                      f"{r['reference_ms']:>20.1f}  bill {r['reference_cost']:.4f}; "
                      f"fast path {r['cost']:.4f} ({above * 100:+.3f} %)")
            print(f"{'  re-plan one step later (median of ' + str(r['replans']) + ')':<62}"
                  f"cold {r['replan_cold_ms']:.1f} ms, warm {r['replan_warm_ms']:.1f} ms "
                  f"(x{r['replan_warm_vs_cold']:.2f}), build {r['replan_build_ms']:.1f} ms, "
                  f"cost diff {r['replan_max_rel_cost_diff']:.1e}")
            print(f"{'    whole solve() call (build, HiGHS, basis, plan)':<62}"
                  f"cold {r['replan_cold_total_ms']:.1f} ms, warm {r['replan_warm_total_ms']:.1f} ms")
    env = list(environment(("highspy", "scipy", "numpy")))
    for line in env:
        print(line)
    if args.json:
        m = results["milp_48h_5min"]
        Path(args.json).write_text(json.dumps({
            "milp_48h_5min_ms": m["solve_ms"], "milp_48h_5min_ms_range": m["solve_ms_range"],
            "milp_48h_5min_vs_reference": m["cost"] / m["reference_cost"],
            **{f"{k}_{field}": results[k][field] for k in ("milp_48h_5min", "lp_24h_15min",
                                                           "milp_24h_15min")
               for field in ("replan_warm_ms", "replan_cold_ms", "replan_warm_vs_cold",
                             "replan_warm_total_ms", "replan_cold_total_ms")},
            "cases": results, "environment": env}, indent=2))


if __name__ == "__main__":
    main()

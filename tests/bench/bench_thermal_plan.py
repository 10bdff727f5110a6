"""Time the planner's LP with thermal states: configs/thermal_office.yaml (two HVAC zones
and a chilled-water tank, no battery) over 24 h @ 15 min on the zones' simulated weather,
the critical-peak tariff of hil/scenarios/hot_summer_dr.yaml and its DR window as a
commitment. Build (config -> PlanInput -> sparse LP) and HiGHS solve timed together,
median of 7; also with the thermal states left out, for the difference they make.

Run: python tests/bench/bench_thermal_plan.py
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent

from benchlib import environment  # noqa: E402

from edge.config import load  # noqa: E402
from edge.plan.model import build_input  # noqa: E402
from edge.plan.solve import solve  # noqa: E402
from hil import scenario as scenario_mod  # noqa: E402
from tools.simulate.events import dr_instruction  # noqa: E402
from tools.simulate.thermal import true_thermal  # noqa: E402

REPEATS = 7
STEP_S, N = 900, 96


def main() -> None:
    sc = scenario_mod.load(str(ROOT / "hil/scenarios/hot_summer_dr.yaml"))
    cfg = sc.apply(load(ROOT / "configs/thermal_office.yaml"))
    truth = sc.truth(cfg)
    load_kw, pv_kw = truth.averages(truth.start, N, STEP_S)
    commitments = [dr_instruction(w) for w in sc.dr_windows()]
    zones, tanks = true_thermal(cfg, truth.start, N, STEP_S)
    print(environment())
    for name, z, t in (("with thermal states", zones, tanks), ("without", (), ())):
        took, plan = [], None
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            inp = build_input(cfg, truth.start, STEP_S, load_kw, pv_kw, {}, 0.0, commitments)
            inp = replace(inp, import_price=truth.import_prices(truth.start, N, STEP_S),
                          zones=z, tanks=t)
            plan = solve(inp, time_limit_s=60)
            took.append(time.perf_counter() - t0)
        assert plan is not None
        cols = 4 * N * len(z) + (3 * N + 1) * len(t)
        print(f"24 h @ 15 min, {name}: median {1e3 * statistics.median(took):.1f} ms build + "
              f"solve ({plan.status}; {len(z)} zones, {len(t)} tanks, {cols} thermal columns); "
              f"bill {plan.bill:.2f}, comfort {plan.comfort_violation_kh:.3f} K·h, "
              f"DR short {plan.commitment_short_kwh:.2f} kWh")
    if zones:
        pre = plan_zone_before_event(zones, tanks, cfg, truth, load_kw, pv_kw, commitments)
        print(f"zone at the event's start: {pre:.2f} °C (band 22-26 °C)")


def plan_zone_before_event(zones, tanks, cfg, truth, load_kw, pv_kw, commitments) -> float:
    inp = build_input(cfg, truth.start, STEP_S, load_kw, pv_kw, {}, 0.0, commitments)
    inp = replace(inp, import_price=truth.import_prices(truth.start, N, STEP_S), zones=zones,
                  tanks=tanks)
    plan = solve(inp, time_limit_s=60)
    k = int((commitments[0].start - truth.start) / timedelta(seconds=STEP_S))
    return float(np.mean([z[k] for z in plan.zone_c.values()]))


if __name__ == "__main__":
    main()

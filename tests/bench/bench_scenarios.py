"""Every shipped scenario (hil/scenarios/*.yaml), full length, on the demo site, with the
planner fed the daemon's own forecasts and with perfect forecasts (the scenario's true
series): cost_ratio_vs_optimum, the costs of the controller and of the three references
(rule-based replay, no battery, perfect-foresight optimum; adjusted for the energy left in
the battery), solve times and forecast MAE. Goals (README): ratio <= 1.02 with perfect
forecasts, <= 1.08 with the own forecasts.

Each run is `pedf-edge simulate` in-process (HIL + daemon on one accelerated clock); the
runs are sequential, ~2.5 min each at the default ×720, so the whole table takes ~25 min.
The machine should be otherwise idle: under CPU contention cycles slow down and Modbus
answers time out, and at ×720 a lost wall second is 12 simulated minutes of a site in its
safe state.

Run: python tests/bench/bench_scenarios.py [--speed 720] [--only NAME ...]
     [--forecast own perfect] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from edge import config as config_mod  # noqa: E402
from hil import scenario as scenario_mod  # noqa: E402
from tools.simulate.kpis import evaluate  # noqa: E402
from tools.simulate.run import DEFAULT_SPEED, run  # noqa: E402


def one(path: Path, forecast: str, speed: float) -> dict:
    cfg = config_mod.load(ROOT / "configs/demo.yaml")
    sc = scenario_mod.load(path)
    t0 = time.monotonic()
    res = asyncio.run(run(sc, cfg, forecast=forecast, speed=speed))
    k = evaluate(res)
    k["bench_wall_s"] = time.monotonic() - t0
    return k


def fmt(x, spec=".2f") -> str:
    return "–" if x is None else format(x, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed", type=float, default=DEFAULT_SPEED)
    ap.add_argument("--only", nargs="*", help="scenario names (default: all shipped)")
    ap.add_argument("--forecast", nargs="*", default=["own", "perfect"],
                    choices=["own", "perfect"])
    ap.add_argument("--json", type=Path, help="also write every KPI document here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    paths = [p for p in scenario_mod.shipped() if not args.only or p.stem in args.only]
    print(f"# bench_scenarios: {len(paths)} scenarios x {args.forecast} forecasts, "
          f"×{args.speed:g}, Python {platform.python_version()}, {platform.machine()}")
    rows, docs = [], []
    for path in paths:
        for fc in args.forecast:
            k = one(path, fc, args.speed)
            docs.append(k)
            refs = k["references"]
            opt = refs.get("optimum", {})
            st, fe = k["solve_times"], k["forecast_error"] or {}
            rows.append((
                k["scenario"], fc, fmt(k["cost_ratio_vs_optimum"], ".4f"),
                fmt(k["controller"]["adjusted_cost"]),
                fmt(refs["rule_based"]["adjusted_cost"]),
                fmt(refs["no_battery"]["adjusted_cost"]), fmt(opt.get("adjusted_cost")),
                fmt(100 * k["savings_capture"], ".1f") if k["savings_capture"] is not None
                else "–",
                str(st["plans"]),
                fmt(1e3 * st["p50_s"], ".0f") if st["plans"] else "–",
                fmt(1e3 * st["max_s"], ".0f") if st["plans"] else "–",
                fmt((fe.get("load") or {}).get("mae_kw")), fmt((fe.get("pv") or {}).get("mae_kw")),
                str(k["limit_violations"]["export"]["count"] + k["limit_violations"]["import"][
                    "count"]),
                str(k["crashes"]), fmt(k["bench_wall_s"], ".0f")))
            print("  done:", " | ".join(rows[-1]), flush=True)
    head = ("scenario", "forecast", "ratio", "controller", "rule-based", "no battery", "optimum",
            "captured %", "plans", "solve p50 ms", "solve max ms", "load MAE kW", "PV MAE kW",
            "limit exc.", "crashes", "wall s")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print()
    print(f"Costs in {docs[0]['currency'] if docs else 'CNY'}, adjusted for the energy left in "
          "the battery (see tools/simulate/kpis.py).")
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
    if args.json:
        args.json.write_text(json.dumps(docs, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

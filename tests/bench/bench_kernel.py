"""Time one dispatch call for 64-device sites: the compiled kernel, the edge.control.kernel wrapper
around it (allocation included), and the pure-Python twin.

Sites: 48 batteries + 16 PV (no loads); and 24 batteries + 16 PV + 24 flexible loads, once
overloaded (the batteries cannot hold the import limit: loads are shed, lowest priority
first) and once with room (a shed load is restored).

Run: python tests/bench/bench_kernel.py
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # kernel_twin; the package itself is the installed one

import kernel_twin as twin  # noqa: E402
from benchlib import environment  # noqa: E402

from edge.control import kernel as layout  # noqa: E402

REPEATS = 7


def batteries(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mixed SoC, different ramps, some off-line."""
    bess = np.empty((n, layout.NB))
    bess[:, layout.B_P] = rng.uniform(-20, 20, n)
    bess[:, layout.B_PREV] = bess[:, layout.B_P] + rng.uniform(-2, 2, n)
    bess[:, layout.B_SOC] = rng.uniform(0, 100, n)
    bess[:, layout.B_SOC_MIN] = 10.0
    bess[:, layout.B_SOC_MAX] = 90.0
    bess[:, layout.B_MAX_CH] = rng.uniform(10, 50, n)
    bess[:, layout.B_MAX_DIS] = rng.uniform(10, 50, n)
    bess[:, layout.B_RAMP] = rng.uniform(1, 20, n)
    bess[:, layout.B_OK] = rng.random(n) > 0.1
    return bess


def inverters(rng: np.random.Generator, n: int) -> np.ndarray:
    """Some curtailed."""
    pv = np.empty((n, layout.NV))
    pv[:, layout.V_RATED] = rng.uniform(20, 100, n)
    pv[:, layout.V_P] = pv[:, layout.V_RATED] * rng.uniform(0.2, 1.0, n)
    pv[:, layout.V_PREV] = pv[:, layout.V_RATED] * rng.uniform(0.5, 1.0, n)
    pv[:, layout.V_RAMP] = rng.uniform(1, 10, n)
    pv[:, layout.V_OK] = 1.0
    return pv


def flex_loads(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mostly on and past their minimum times, a few shed, priorities with ties."""
    loads = np.empty((n, layout.NL))
    loads[:, layout.L_RATED] = rng.uniform(5, 40, n)
    loads[:, layout.L_ON] = rng.random(n) > 0.2
    loads[:, layout.L_P] = loads[:, layout.L_RATED] * loads[:, layout.L_ON]
    loads[:, layout.L_PRIO] = rng.integers(0, 8, n)
    loads[:, layout.L_AGE] = rng.uniform(0, 900, n)
    loads[:, layout.L_MIN_ON] = 60.0
    loads[:, layout.L_MIN_OFF] = 300.0
    loads[:, layout.L_MARGIN] = 0.1 * loads[:, layout.L_RATED]
    loads[:, layout.L_OK] = rng.random(n) > 0.05
    return loads


def per_call_us(fn, calls: int) -> float:
    """Median over REPEATS of the mean time per call, in µs."""
    samples = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(samples)


def measure(kernel, name: str, grid_kw: float, import_kw: float, bess, pv, loads) -> str:
    outs = (np.empty(len(bess)), np.empty(len(pv)), np.empty(3), loads, np.empty(len(loads)))
    args = (grid_kw, import_kw, 50.0, math.nan, 1.0, bess, pv, *outs[:3])
    compiled = per_call_us(lambda: kernel.dispatch(*args, *outs[3:]), 20_000)
    wrapped = per_call_us(lambda: layout.dispatch(
        kernel, grid_kw=grid_kw, import_limit_kw=import_kw, export_limit_kw=50.0,
        grid_target_kw=math.nan, dt_s=1.0, bess=bess, pv=pv, loads=loads), 20_000)
    python = per_call_us(lambda: twin.dispatch(*args, *outs[3:]), 300)
    status = kernel.dispatch(*args, *outs[3:])
    switched = int(np.sum((outs[4] > 0.5) != (loads[:, layout.L_ON] > 0.5))) if len(loads) else 0
    return (f"| {name} | {compiled:.2f} | {wrapped:.2f} | {python:.0f} | {python / compiled:.0f}x "
            f"| {switched} | {status} |")


def main() -> None:
    kernel = layout.load_kernel()
    rng = np.random.default_rng(7)
    no_loads = (batteries(rng, 48), inverters(rng, 16), np.empty((0, layout.NL)))
    mixed = (batteries(rng, 24), inverters(rng, 16), flex_loads(rng, 24))
    print("dispatch per call, 64 devices, median of", REPEATS)
    for line in environment():
        print(line)
    print("| site | compiled µs | edge.control.kernel µs | twin µs | twin / compiled "
          "| loads switched | status |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(measure(kernel, "48 batteries + 16 PV", -150.0, 200.0, *no_loads))
    print(measure(kernel, "24 bat + 16 PV + 24 loads, overloaded (shed)", 900.0, 200.0, *mixed))
    print(measure(kernel, "24 bat + 16 PV + 24 loads, room (restore)", -150.0, 200.0, *mixed))


if __name__ == "__main__":
    main()

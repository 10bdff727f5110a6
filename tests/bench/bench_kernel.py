"""Time one dispatch call for a 64-device site (48 batteries + 16 PV inverters): the compiled
kernel, the edge.dispatch wrapper around it (allocation included), and the pure-Python twin.

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
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

import kernel_twin as twin  # noqa: E402

from edge import dispatch as layout  # noqa: E402

N_BESS, N_PV = 48, 16
REPEATS = 7


def site(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A busy site: mixed SoC, some batteries off-line, some PV curtailed."""
    bess = np.empty((N_BESS, layout.NB))
    bess[:, layout.B_P] = rng.uniform(-20, 20, N_BESS)
    bess[:, layout.B_PREV] = bess[:, layout.B_P] + rng.uniform(-2, 2, N_BESS)
    bess[:, layout.B_SOC] = rng.uniform(0, 100, N_BESS)
    bess[:, layout.B_SOC_MIN] = 10.0
    bess[:, layout.B_SOC_MAX] = 90.0
    bess[:, layout.B_MAX_CH] = rng.uniform(10, 50, N_BESS)
    bess[:, layout.B_MAX_DIS] = rng.uniform(10, 50, N_BESS)
    bess[:, layout.B_RAMP] = rng.uniform(1, 20, N_BESS)
    bess[:, layout.B_OK] = rng.random(N_BESS) > 0.1
    pv = np.empty((N_PV, layout.NV))
    pv[:, layout.V_RATED] = rng.uniform(20, 100, N_PV)
    pv[:, layout.V_P] = pv[:, layout.V_RATED] * rng.uniform(0.2, 1.0, N_PV)
    pv[:, layout.V_PREV] = pv[:, layout.V_RATED] * rng.uniform(0.5, 1.0, N_PV)
    pv[:, layout.V_RAMP] = rng.uniform(1, 10, N_PV)
    pv[:, layout.V_OK] = 1.0
    return bess, pv


def per_call_us(fn, calls: int) -> float:
    """Median over REPEATS of the mean time per call, in µs."""
    samples = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    kernel = layout.load_kernel()
    bess, pv = site(np.random.default_rng(7))
    bess_out, pv_out, site_out = np.empty(N_BESS), np.empty(N_PV), np.empty(3)
    args = (-150.0, 200.0, 50.0, math.nan, 1.0, bess, pv, bess_out, pv_out, site_out)

    compiled = per_call_us(lambda: kernel.dispatch(*args), 20_000)
    wrapped = per_call_us(lambda: layout.dispatch(
        kernel, grid_kw=-150.0, import_limit_kw=200.0, export_limit_kw=50.0,
        grid_target_kw=math.nan, dt_s=1.0, bess=bess, pv=pv), 20_000)
    python = per_call_us(lambda: twin.dispatch(*args), 500)

    print(f"dispatch, {N_BESS} batteries + {N_PV} PV, median of {REPEATS}")
    print("| variant | µs/call | vs compiled |")
    print("|---|---:|---:|")
    for name, us in (("compiled kernel", compiled), ("edge.dispatch wrapper", wrapped),
                     ("python twin", python)):
        print(f"| {name} | {us:.2f} | {us / compiled:.1f}x |")


if __name__ == "__main__":
    main()

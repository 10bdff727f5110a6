"""CPU of the controller polling N simulated SunSpec devices at 1 Hz, for several N.

For each N (`--n 10 50 100`) the site is a realistic mix: 40 % PV inverters, 40 % batteries,
the rest meters - exactly one grid (PCC) meter, the others load meters (N = 10: 4 PV,
4 batteries, 1 grid + 1 load meter). The HIL serves them from its own process
(`python -m edge.cli hil -c site.yaml --speed 1`), so this process is the controller alone:
the ControlCycle the daemon builds (edge.app.devices.build_devices, edge.control.kernel.load_kernel,
edge.app.clock.Clock), every device connected, then `cycle.run(stop)` at its 1 s cycle. After
`--warmup` seconds, this process's CPU time (time.process_time) is taken over a `--seconds`
window: CPU % of one core = CPU seconds / wall seconds x 100. Cycles, p50/p99 cycle duration
(cycle.stats.durations_ms) and device errors (sum of cycle.health[*].errors) are of the same
window. The HIL's own CPU over the window (psutil) is shown for context only; it is not part
of the controller's figure.

Port layout (`--layout`): `per-device` (default) gives each device its own loopback port and
TCP connection; `gateway` puts the units of a role behind gateway ports of at most 10 units
each (unit ids 1-10), so those units share one connection and their requests queue on it -
one at a time by default, or up to `--in-flight N` at once (every device's `max_in_flight`,
pipelined Modbus TCP; the HIL answers requests that arrive together).

Run: python tests/bench/bench_polling.py [--n 10 50 100] [--seconds 30] [--warmup 5]
         [--layout per-device|gateway] [--in-flight N]
Only 127.0.0.1 is used; the HIL subprocess is stopped (SIGTERM) on every exit path.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import benchlib
import psutil
import yaml
from benchlib import connect_all, pct, start_hil, stop_process, wait_listening

from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.config import Config, parse
from edge.control.kernel import load_kernel
from edge.cycle import ControlCycle

CYCLE_S = 1.0  # 1 Hz, the daemon's default
GATEWAY_UNITS = 10  # units per gateway port in --layout gateway
IMPORT_LIMIT_KW_PER_DEVICE = 7.5  # 150 kW for bench_cycle's 20 devices, scaled with N


def mix(n: int) -> tuple[int, int, int]:
    """(PV, batteries, load meters) for N devices: 40 % / 40 % / rest meters, one of them grid."""
    n_pv = n_bess = round(0.4 * n)
    return n_pv, n_bess, n - n_pv - n_bess - 1


@dataclass
class Result:
    n: int
    mix: tuple[int, int, int]
    ports: int
    wall_s: float
    cpu_s: float
    hil_cpu_s: float
    cycles: int
    durations_ms: list[float]
    errors: int
    errors_total: int  # including connect and warm-up
    crashes: int
    last_errors: dict[str, str]

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s

    @property
    def hil_cpu_pct(self) -> float:
        return 100.0 * self.hil_cpu_s / self.wall_s


def _errors(cycle: ControlCycle) -> int:
    return sum(h.errors for h in cycle.health.values())


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


async def measure(config: Config, warmup_s: float, window_s: float,
                  hil: psutil.Process) -> tuple[ControlCycle, dict]:
    cycle = ControlCycle(config, build_devices(config), load_kernel(), Clock())
    await connect_all(cycle)
    stop = asyncio.Event()
    runner = asyncio.create_task(cycle.run(stop), name="control-cycle")
    try:
        await asyncio.sleep(warmup_s)
        c0, d0, e0 = cycle.stats.cycles, len(cycle.stats.durations_ms), _errors(cycle)
        h0, cpu0, t0 = _cpu_s(hil), time.process_time(), time.perf_counter()
        await asyncio.sleep(window_s)
        wall, cpu, h1 = time.perf_counter() - t0, time.process_time() - cpu0, _cpu_s(hil)
        window = {"wall_s": wall, "cpu_s": cpu, "hil_cpu_s": h1 - h0,
                  "cycles": cycle.stats.cycles - c0,
                  "durations_ms": list(cycle.stats.durations_ms)[d0:],
                  "errors": _errors(cycle) - e0}
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10.0)
        for dev in cycle.devices.values():
            await dev.close()
    return cycle, window


def run_one(n: int, layout: str, warmup_s: float, window_s: float, in_flight: int = 1) -> Result:
    n_pv, n_bess, n_load = mix(n)
    data = benchlib.sunspec_site(
        n_pv, n_bess, n_load, layout, CYCLE_S, site_id=f"bench-polling-{n}",
        gateway_units=GATEWAY_UNITS, import_limit_kw=IMPORT_LIMIT_KW_PER_DEVICE * n)
    if in_flight > 1:
        for dev in data["devices"]:
            dev["max_in_flight"] = in_flight
    config = parse(data, f"bench_polling N={n}")
    ports = {d.port for d in config.devices}
    with tempfile.TemporaryDirectory(prefix="bench-polling-") as tmp:
        cfg_path, hil_log = Path(tmp) / "site.yaml", Path(tmp) / "hil.log"
        cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
        hil = start_hil(cfg_path, hil_log)
        try:
            wait_listening(hil, ports, hil_log, timeout=60)
            cycle, w = asyncio.run(measure(config, warmup_s, window_s, psutil.Process(hil.pid)))
            if hil.poll() is not None:
                raise RuntimeError(f"HIL exited during the run:\n{hil_log.read_text()[-3000:]}")
        finally:
            code, _ = stop_process(hil)
        if code not in (0, -signal.SIGTERM):
            print(f"warning: HIL (N={n}) exited {code}; log:\n{hil_log.read_text()[-2000:]}",
                  file=sys.stderr)
    return Result(n=n, mix=(n_pv, n_bess, n_load), ports=len(ports),
                  errors_total=_errors(cycle), crashes=cycle.stats.crashes,
                  last_errors={d: h.last_error for d, h in cycle.health.items() if h.errors},
                  **w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 50, 100],
                    help="device counts to run, one HIL + controller run each (default 10 50 100)")
    ap.add_argument("--seconds", type=float, default=30.0,
                    help="measured window per N, wall seconds (default 30)")
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="seconds of cycles before the window (default 5)")
    ap.add_argument("--layout", choices=["per-device", "gateway"], default="per-device",
                    help=f"one port per device (default) or gateway ports of up to "
                         f"{GATEWAY_UNITS} units")
    ap.add_argument("--in-flight", type=int, default=1, metavar="N",
                    help="requests on the wire at once per connection (max_in_flight, "
                         "1..16; default 1: one at a time)")
    args = ap.parse_args()
    if min(args.n) < 3 or args.seconds < 2 or args.warmup < 0:
        ap.error("--n values must be >= 3 (a PV, a battery and the grid meter), "
                 "--seconds >= 2 and --warmup >= 0")
    if not 1 <= args.in_flight <= 16:
        ap.error("--in-flight must be 1..16")
    if max(args.n) > 2 * 247:
        ap.error("--n at most 494 (loopback ports and unit ids)")
    budget_s = len(args.n) * (args.seconds + args.warmup)
    if budget_s > 200:
        ap.error(f"{len(args.n)} runs x {args.seconds + args.warmup:g} s = {budget_s:.0f} s of "
                 "cycles; keep it under 200 s (fewer --n, or shorter --seconds/--warmup)")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    env_lines = benchlib.environment(("numpy", "pymodbus", "psutil"))
    results = []
    for n in args.n:
        r = run_one(n, args.layout, args.warmup, args.seconds, args.in_flight)
        results.append(r)
        print(f"N={n}: {r.cpu_pct:.1f} % CPU, {r.cycles} cycles, {r.errors} errors",
              file=sys.stderr, flush=True)

    print()
    for line in env_lines:
        print(line)
    print(f"controller at a {CYCLE_S:g} s cycle (ControlCycle.run, all devices polled in "
          f"parallel); HIL in a separate process at speed 1; {args.warmup:g} s warm-up, then a "
          f"{args.seconds:g} s window per N; CPU % of one core = process CPU time / wall time")
    for r in results:
        pv, bess, load = r.mix
        detail = f"N={r.n}: {pv} PV, {bess} battery, 1 grid + {load} load meters on {r.ports} "\
                 f"port(s); errors incl. connect + warm-up: {r.errors_total}; cycle crashes: " \
                 f"{r.crashes}"
        if r.last_errors:
            detail += "; last errors: " + "; ".join(
                f"{d}: {e}" for d, e in list(r.last_errors.items())[:5])
        print(detail)
    print()
    print("| N | layout | in flight | CPU % of one core | cycles | p50 ms | p99 ms | errors "
          "| ports | HIL CPU % (other process) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        d = r.durations_ms
        p50, p99 = (f"{pct(d, 50):.1f}", f"{pct(d, 99):.1f}") if d else ("-", "-")
        print(f"| {r.n} | {args.layout} | {args.in_flight} | {r.cpu_pct:.1f} | {r.cycles} | {p50} | {p99} | "
              f"{r.errors} | {r.ports} | {r.hil_cpu_pct:.1f} |")
    print(f"\n_{env_lines[0]}; {env_lines[1].split(';')[0]}; window {args.seconds:g} s per N._")
    return 1 if any(r.errors_total or r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

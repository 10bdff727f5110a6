"""Overhead of one full control cycle (poll + image + decide + write) against 20 simulated
devices: 8 PV inverters, 8 batteries, 1 grid (PCC) meter and 3 load meters.

The HIL serves the devices from its own process (`python -m edge.cli hil`), so this process
is the controller alone. It builds the ControlCycle the daemon builds, connects every device,
warms up, then times N `await cycle.step()` calls, paced like the daemon's loop (`--period`,
0 = back to back). `decide(image)` (control functions + compiled kernel, the CPU part) is
timed separately inside the same steps.

Port layout (`--layout`): `per-device` (default) gives each device its own loopback port and
so its own TCP connection; `gateway` puts each role behind one port (PV unit ids 1-8,
batteries 1-8, meters 1-4), as a Modbus gateway would, so the units of a role share one
connection and their requests queue on it.

The raw baseline (tests/bench/rawpoll.py): plain pymodbus reading, for every device, the one
register block its poll reads, all devices at once, against the same HIL in the same run.
Its rounds are interleaved with the cycles (half-way between two cycle starts, or right
after each cycle when back to back), so load on the machine weighs on both alike.
`poll_vs_raw_p50` = poll p50 / raw p50 is the controller's overhead over the wire's.

Run: python tests/bench/bench_cycle.py [--cycles 300] [--period 0.2] [--layout gateway]
         [--json cycle.json]
Only 127.0.0.1 is used; the HIL subprocess is stopped (SIGTERM) on every exit path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import benchlib
import yaml
from benchlib import connect_all, pct, start_hil, stop_process, wait_listening
from rawpoll import RawPoll, targets_of

from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.config import Config, parse
from edge.control.kernel import load_kernel
from edge.cycle import ControlCycle

N_PV, N_BESS, N_LOAD = 8, 8, 3


def site_config(layout: str, period_s: float) -> dict:
    """20 devices at noon (PV producing), with import and zero-export limits so every
    control function has work to do."""
    return benchlib.sunspec_site(N_PV, N_BESS, N_LOAD, layout, max(period_s, 0.05),
                                 site_id="bench-cycle")


class Timings:
    """Wraps the stages of one ControlCycle instance so a step records each stage."""

    def __init__(self, cycle: ControlCycle) -> None:
        self.poll_ms: list[float] = []
        self.image_us: list[float] = []
        self.decide_us: list[float] = []
        self.write_ms: list[float] = []
        self.writes: list[int] = []  # setpoint writes issued per step
        self._pending_writes = 0
        self.recording = False
        poller, controller, writer = cycle.poller, cycle.controller, cycle.writer
        poll, build_image, decide = poller.poll, cycle.build_image, controller.decide
        write, write_one = cycle.write, writer._write_one

        async def timed_poll(period_wall_s: float) -> None:
            t0 = time.perf_counter()
            await poll(period_wall_s)
            self._add(self.poll_ms, (time.perf_counter() - t0) * 1e3)

        def timed_image():
            t0 = time.perf_counter()
            image = build_image()
            self._add(self.image_us, (time.perf_counter() - t0) * 1e6)
            return image

        def timed_decide(image, book, memory, now_s):
            t0 = time.perf_counter()
            result = decide(image, book, memory, now_s)
            self._add(self.decide_us, (time.perf_counter() - t0) * 1e6)
            return result

        async def timed_write(decision, force: bool = False) -> None:
            self._pending_writes = 0
            t0 = time.perf_counter()
            await write(decision, force)
            self._add(self.write_ms, (time.perf_counter() - t0) * 1e3)
            self._add(self.writes, self._pending_writes)

        def counted_write_one(*args) -> Awaitable[None]:
            self._pending_writes += 1
            return write_one(*args)

        # Instance attributes shadow the methods step() calls.
        poller.poll, cycle.build_image, controller.decide = timed_poll, timed_image, timed_decide
        cycle.write, writer._write_one = timed_write, counted_write_one

    def _add(self, series: list, value: float) -> None:
        if self.recording:
            series.append(value)


async def measure(config: Config, cycles: int, warmup: int, period_s: float
                  ) -> tuple[list[float], list[float], Timings, ControlCycle]:
    """(cycle ms, raw baseline ms, stage timings, the cycle) over the timed cycles."""
    cycle = ControlCycle(config, build_devices(config), load_kernel(), Clock())
    timings = Timings(cycle)
    await connect_all(cycle)
    await cycle.step()  # every device has read its slow models: its poll block is known
    raw = RawPoll(targets_of(cycle))
    await raw.connect()
    try:
        totals: list[float] = []
        raws: list[float] = []
        next_at = time.monotonic()
        for i in range(warmup + cycles):
            timings.recording = i >= warmup
            t0 = time.perf_counter()
            await cycle.step()
            if timings.recording:
                totals.append((time.perf_counter() - t0) * 1e3)
            if period_s > 0:  # the daemon's pacing: fixed period, no burst after an overrun
                next_at += period_s
                await asyncio.sleep(max(0.0, next_at - period_s / 2 - time.monotonic()))
            raw_ms = await raw.round()
            if timings.recording:
                raws.append(raw_ms)
            if period_s > 0:
                delay = next_at - time.monotonic()
                if delay < 0:
                    next_at, delay = time.monotonic(), 0.0
                await asyncio.sleep(delay)
    finally:
        raw.close()
        for dev in cycle.devices.values():
            await dev.close()
    return totals, raws, timings, cycle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=300, help="timed cycles (default 300)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed cycles first (default 20)")
    ap.add_argument("--period", type=float, default=0.2,
                    help="wall seconds between cycle starts, as the daemon paces them; "
                         "0 = back to back (default 0.2)")
    ap.add_argument("--layout", choices=["per-device", "gateway"], default="per-device",
                    help="one port per device (default) or one gateway port per role")
    ap.add_argument("--json", type=Path, metavar="F",
                    help="also write the figures (poll_vs_raw_p50, p50/p99 of each stage) to F")
    args = ap.parse_args()
    if args.cycles < 1 or args.warmup < 0 or args.period < 0:
        ap.error("--cycles must be >= 1, --warmup >= 0 and --period >= 0")
    expected_s = (args.cycles + args.warmup) * args.period
    if expected_s > 150:
        ap.error(f"{args.cycles + args.warmup} cycles at {args.period} s take {expected_s:.0f} s; "
                 "keep the run under 150 s (fewer --cycles or a shorter --period)")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data = site_config(args.layout, args.period)
    config = parse(data, "bench_cycle")
    ports = {d.port for d in config.devices}
    env_lines = benchlib.environment(("numpy", "pymodbus"))

    with tempfile.TemporaryDirectory(prefix="bench-cycle-") as tmp:
        cfg_path, hil_log = Path(tmp) / "site.yaml", Path(tmp) / "hil.log"
        cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
        hil = start_hil(cfg_path, hil_log)
        try:
            wait_listening(hil, ports, hil_log, timeout=30)
            totals, raws, t, cycle = asyncio.run(
                measure(config, args.cycles, args.warmup, args.period))
            if hil.poll() is not None:
                raise RuntimeError(f"HIL exited during the run:\n{hil_log.read_text()[-3000:]}")
        finally:
            code, _ = stop_process(hil)
        if code not in (0, -signal.SIGTERM):
            print(f"warning: HIL exited {code}; log:\n{hil_log.read_text()[-2000:]}",
                  file=sys.stderr)

    errors = {d: h.errors for d, h in cycle.health.items() if h.errors}
    last_errors = sorted({h.last_error for h in cycle.health.values() if h.errors})
    crashes = cycle.stats.crashes
    n_dev = len(config.devices)
    pacing = f"paced every {args.period:g} s" if args.period else "back to back"
    print()
    for line in env_lines:
        print(line)
    print(f"{n_dev} devices ({N_PV} PV, {N_BESS} battery, 1 grid + {N_LOAD} load meters) on "
          f"{len(ports)} loopback port(s) [{args.layout}]; HIL in a separate process at speed 1")
    print(f"{args.cycles} timed cycles after {args.warmup} warm-up, {pacing}; "
          f"setpoint writes: {sum(t.writes)} in {sum(1 for w in t.writes if w)} of "
          f"{len(t.writes)} cycles; device errors: {errors or 'none'}; cycle crashes: {crashes}; "
          f"last mode: {cycle.decision.mode if cycle.decision else '-'}")
    if last_errors:
        print("last device errors: " + "; ".join(last_errors))
    print()
    print(f"| control cycle, {n_dev} HIL devices ({args.layout}) | p50 | p99 | max |")
    print("|---|---:|---:|---:|")
    wrote = [w for w, n in zip(t.write_ms, t.writes) if n]
    rows = [
        ("full cycle: poll + image + decide + write (ms)", totals, 1),
        ("poll, all devices in parallel (ms)", t.poll_ms, 1),
        ("raw baseline: one pymodbus read per device, in parallel (ms)", raws, 1),
        (f"write, the {len(wrote)} cycles that wrote (ms)", wrote, 1),
        ("build_image (µs)", t.image_us, 1),
        ("decide(image): functions + kernel (µs)", t.decide_us, 1),
    ]
    for name, series, nd in rows:
        if series:
            print(f"| {name} | {pct(series, 50):.{nd}f} | {pct(series, 99):.{nd}f} | "
                  f"{max(series):.{nd}f} |")
        else:
            print(f"| {name} | - | - | - |")
    ratio = pct(t.poll_ms, 50) / pct(raws, 50)
    print(f"\npoll_vs_raw_p50 = {ratio:.2f} (goal <= 1.3)")
    print(f"\n_{env_lines[0]}; {env_lines[1].split(';')[0]}; N={args.cycles}, {pacing}._")
    if args.json:
        figures = {"poll_vs_raw_p50": round(ratio, 3)}
        for key, series in (("cycle_ms", totals), ("poll_ms", t.poll_ms), ("raw_ms", raws),
                            ("write_ms", wrote), ("image_us", t.image_us),
                            ("decide_us", t.decide_us)):
            for q in (50, 99):
                figures[f"{key.rsplit('_', 1)[0]}_p{q}_{key.rsplit('_', 1)[1]}"] = (
                    round(pct(series, q), 3) if series else None)
        figures |= {"layout": args.layout, "devices": n_dev, "cycles": args.cycles,
                    "period_s": args.period, "setpoint_writes": sum(t.writes),
                    "device_errors": sum(errors.values()), "cycle_crashes": crashes,
                    "environment": env_lines}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if crashes or errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""Headroom change -> new limit at the EV charger: how long a park dispatch that lowers the
import cap (`grid_max_kw`) takes from the platform's MQTT publish to the SetChargingProfile
with the lower limit arriving at the (simulated) OCPP charge points.

Three parties, as in production: a private mosquitto on a free loopback port, the daemon as
its own process (`python -m edge.cli run --speed 1`: real time, a 1 s control cycle, its CSMS
on a free port) and this process as both the platform (a paho client publishing
`cmd/dispatch`) and the HIL site: a PCC meter over Modbus TCP with a flat 40 kW building
load behind it, and N OCPP 1.6J charge points (3-phase, 6-32 A, the role's default deadband
1 A and min_interval_s 10 s), each with a car plugged in and charging, that connect to the
daemon's CSMS. Both processes keep one simulated clock (the bench writes the daemon's
sim-clock file before it starts), so the chargers' profile windows agree with the daemon.
Each charger's set_profile is wrapped to stamp every SetChargingProfile of ours (not the
boot-time fail-safe profiles at stack level 0) with time.monotonic(), the clock of the
publish stamp.

The commands alternate: a cut moves the cap from HIGH (every charger at 32 A) to LOW (room
for every minimum plus 3.5 kW: the first charger ~11 A, the others 6 A), a raise moves it
back, so every command changes every charger's limit by far more than its deadband. A
command's latency is publish -> the first SetChargingProfile with a new limit (lower for a
cut, higher for a raise) at the first charger to get one, and at the last. For cuts the
simulated PCC import is watched too: publish -> under the new cap for good (the cars
follow a new limit within ramp_s = 2 s).

Cuts are the headline: they go out at once. Raises are held back on purpose, twice: the
role raises nothing while cars still follow the last change (10 s), and the driver sends a
raise at most every min_interval_s (10 s) after the last change. After a cut the next
command waits a random 12-15 s, so the cars have followed and the raise measures the path
rather than the hold (a raise inside those 10 s waits for them, as the boot shows: 6 A
first, 32 A 10 s later; `--after-cut 3 6` sends them inside it, and then the cut that
follows right after a held raise lands shows a slow, partial cut); after a raise 4-6 s (the
cars ramp up in 2 s; a cut is never held). The random gaps keep the commands off the cycle's phase. 30 cuts and 30 raises take
~10 min.

Where a command falls in the cycle shapes the tail: the daemon wakes its cycle on a command,
but a woken cycle starts no sooner than 50 ms after the last one ended (edge/cycle.py
_WAKE_GAP_S), so a command that comes just after a cycle began waits up to ~50 ms more. The
PCC meter's reads are stamped too (the cycle polls it as it begins) and the latencies are
also shown split by that. (bench_command_latency.py sends its commands 0.1-0.4 s apart: each
comes after the cycle the last one woke, and no periodic cycle runs in between, so it never
meets that gap.)

Run: python tests/bench/bench_ev_limit.py [--commands 60] [--chargers 4] [--after-cut 12 15]
     [--cycle-s 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import benchlib
import yaml
from bench_command_latency import MOSQUITTO, Platform, start_broker
from benchlib import HOST, free_port, stop_process

from edge import config as config_mod
from edge.app.clock import RUN_CLOCK, Clock
from edge.app.statedir import state_dir
from hil.config import hil_of
from hil.site import SimSite

BASE_KW = 40.0  # the building, flat
MAX_A, MIN_A, DEADBAND_A = 32.0, 6.0, 1.0
KW_PER_A = 3 * 230 / 1000  # 3 phases at 230 V
EXTRA_KW = 3.5  # room above the minimums under the low cap
START = "2026-06-22T10:00:00+08:00"
AFTER_CUT_S, AFTER_RAISE_S = (12.0, 15.0), (4.0, 6.0)
TIMEOUT_S = 60.0  # for one command's new limits to reach every charger
OVER_KW = 0.5  # the PCC above the cap by more than this counts as over it
NEAR_POLL_MS = 60.0  # a cycle's poll + decide + write, plus the 50 ms wake gap after it


def caps(n: int) -> tuple[float, float]:
    """(low, high) import caps: room for n minimums plus EXTRA_KW, room for n maximums."""
    low = BASE_KW + n * MIN_A * KW_PER_A + EXTRA_KW
    high = BASE_KW + n * MAX_A * KW_PER_A + 10.0
    return round(low, 1), round(high, 1)


def site(tmp: Path, mqtt_port: int, n: int, cycle_s: float) -> dict:
    chargers = [
        {"id": f"ev{i}", "role": "ev_charger", "charge_point_id": f"CP{i}",
         "max_current_a": MAX_A, "min_current_a": MIN_A, "deadband_a": DEADBAND_A,
         "revert_s": 300,
         "sim": {"meter_every_s": 10, "ramp_s": 2,
                 "arrivals": [{"arrive": "09:00", "depart": "20:00", "soc_pct": 20,
                               "capacity_kwh": 80}]}}
        for i in range(1, n + 1)]
    return {
        "site": {"id": "bench-ev", "timezone": "Asia/Shanghai"},
        "devices": [{"id": "pcc", "host": HOST, "role": "meter", "measures": "grid",
                     "port": free_port(), "timeout_s": 0.5,
                     "sim": {"profile": "flat", "base_kw": BASE_KW, "day_kw": BASE_KW}},
                    *chargers],
        "ocpp": {"host": HOST, "port": free_port(), "heartbeat_s": 60},
        "control": {"cycle_s": cycle_s, "functions": ["peak_shaving"],
                    "import_limit_kw": caps(n)[1] + 50, "deadband_kw": 0.1},
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00",
                                "price": 1.0}]},
        "mqtt": {"port": mqtt_port, "telemetry_s": 5},
        "storage": {"dir": str(tmp / "state")},
        "hil": {"start": START},
    }


def stamp_profiles(evs: dict) -> list[tuple[float, str, float]]:
    """Wrap each simulated charger's set_profile: (arrival monotonic, charger, limit A) of
    every accepted limit of ours (stack level > 0: not the boot-time fail-safe ones)."""
    got: list[tuple[float, str, float]] = []
    for dev_id, dev in evs.items():
        def stamped(connector, payload, dev=dev, dev_id=dev_id, plain=dev.set_profile):
            t = time.monotonic()
            status = plain(connector, payload)
            r = dev.received[-1]
            if (status == "Accepted" and (r["stack_level"] or 0) > 0 and r["limit"] is not None
                    and r["purpose"] in ("TxDefaultProfile", "TxProfile")):
                got.append((t, dev_id, float(r["limit"])))
            return status
        dev.set_profile = stamped
    return got


def in_force(got, evs) -> dict[str, float | None]:
    last: dict[str, float | None] = dict.fromkeys(evs)
    for _, dev_id, amps in got:
        last[dev_id] = amps
    return last


async def wait_until(cond, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(0.001)


def landed(got, mark: int, before: dict, cut: bool, platform: Platform,
           cmd_id: str) -> dict[str, float]:
    """When each charger first got a limit that moved the command's way by at least the
    deadband (monotonic), among the profiles from index `mark` on."""
    if cmd_id in platform.rejected:
        raise RuntimeError(f"{cmd_id} rejected: {platform.rejected[cmd_id]}")
    first: dict[str, float] = {}
    for t, dev_id, amps in got[mark:]:
        moved = before[dev_id] - amps if cut else amps - before[dev_id]
        if dev_id not in first and moved >= DEADBAND_A:
            first[dev_id] = t
    return first


async def measure(cfg, clock: Clock, platform: Platform, n_cmd: int,
                  after_cut: tuple[float, float], proc: subprocess.Popen) -> dict[str, list]:
    sim = SimSite(cfg, clock)
    evs = {d.id: sim.devices[d.id] for d in cfg.devices if d.role == "ev_charger"}
    got = stamp_profiles(evs)
    polls: list[float] = []  # the daemon reads the PCC meter once a cycle, as it begins
    pcc = sim.devices["pcc"]

    def polled(registers, start_address, plain=pcc.refresh):
        polls.append(time.monotonic())
        plain(registers, start_address)

    pcc.refresh = polled
    low, high = caps(len(evs))
    out: dict[str, list] = {"cut": [], "raise": [], "ack": [], "cut_to": [], "changes": [],
                            "under": []}
    grid: list[tuple[float, float]] = []  # (monotonic, PCC kW) every physics step (50 ms)
    sim.on_substep = lambda sample, dt_s: grid.append((time.monotonic(), sample.grid_kw))
    await sim.start()  # the chargers retry until the daemon's CSMS listens
    try:
        ev_kw = lambda: sum(e.power_kw for e in evs.values())  # noqa: E731
        full_kw = len(evs) * MAX_A * KW_PER_A
        await wait_until(lambda: all(a == MAX_A for a in in_force(got, evs).values())
                         and ev_kw() > full_kw - 1.0, 90,
                         "32 A at every charger and every car charging at it", proc)
        await asyncio.sleep(random.uniform(*AFTER_RAISE_S))
        for i in range(n_cmd):
            cut = i % 2 == 0
            before, mark, cmd_id = in_force(got, evs), len(got), f"ev-{i}"
            t0 = platform.send({"cmd_id": cmd_id, "grid_max_kw": low if cut else high,
                                "duration_s": 3600})
            since_poll = (t0 - max((t for t in polls if t < t0), default=-1.0)) * 1000
            check = functools.partial(landed, got, mark, before, cut, platform, cmd_id)
            await wait_until(lambda c=check: len(c()) == len(evs), TIMEOUT_S,
                             f"new limit at every charger for {cmd_id}", proc)
            first = check()
            out["cut" if cut else "raise"].append(
                ((min(first.values()) - t0) * 1000, (max(first.values()) - t0) * 1000,
                 since_poll))
            gap = random.uniform(*(after_cut if cut else AFTER_RAISE_S))
            await asyncio.sleep(max(0.0, t0 + gap - time.monotonic()))
            if cmd_id in platform.accepted:
                out["ack"].append((platform.accepted[cmd_id] - t0) * 1000)
            if cut:  # when the PCC import came under the new cap for good (the cars followed)
                over = [t for t, kw in grid if t >= t0 and kw > low + OVER_KW]
                out["under"].append((over[-1] if over else t0) - t0)
                out["cut_to"].append(tuple(sorted(in_force(got, evs).values(), reverse=True)))
        last: dict[str, float] = {}
        for _, dev_id, amps in got:  # how often a limit changed: the commands' and no more
            out["changes"].append(last.get(dev_id) != amps)
            last[dev_id] = amps
        return out
    finally:
        await sim.stop()


def line(name: str, ms: list[float]) -> str:
    p = benchlib.pct
    if not ms:
        return f"  {name}: none"
    return (f"  {name}: p50 {p(ms, 50):.1f} ms, p99 {p(ms, 99):.1f} ms, max {max(ms):.1f} ms "
            f"({len(ms)})")


def report(rows: list[tuple[float, float, float]]) -> list[str]:
    """The first and last charger's latencies, then split by where in the cycle the command
    came: one just after a cycle began waits for the woken cycle's gap (edge/cycle.py
    _WAKE_GAP_S, 50 ms after the last cycle ended)."""
    near = [r for r in rows if r[2] < NEAR_POLL_MS]
    rest = [r for r in rows if r[2] >= NEAR_POLL_MS]
    return [line("publish -> first charger", [r[0] for r in rows]),
            line("publish -> last charger", [r[1] for r in rows]),
            line(f"  first charger, command < {NEAR_POLL_MS:g} ms after a cycle began",
                 [r[0] for r in near]),
            line("  first charger, the others", [r[0] for r in rest])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commands", type=int, default=60,
                    help="commands, alternately a cut and a raise (default 60: 30 of each)")
    ap.add_argument("--chargers", type=int, default=4)
    ap.add_argument("--after-cut", type=float, nargs=2, default=AFTER_CUT_S, metavar=("LO", "HI"),
                    help="seconds from a cut to the raise after it, drawn uniformly (default "
                    "12 15; under 10 the raises wait for the hold)")
    ap.add_argument("--cycle-s", type=float, default=1.0, help="control.cycle_s of the daemon")
    args = ap.parse_args()
    if MOSQUITTO is None:
        ap.error("mosquitto not found (apt-get install mosquitto)")
    if args.commands < 1 or args.chargers < 1:
        ap.error("--commands and --chargers must be at least 1")
    random.seed(1)
    # The chargers start before the daemon's CSMS listens and retry: not worth a warning.
    logging.getLogger("hil.serve.ocpp_client").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-ev-") as d:
        tmp = Path(d)
        mqtt_port = free_port()
        conf = tmp / "mosquitto.conf"
        conf.write_text(f"listener {mqtt_port} {HOST}\nallow_anonymous true\n"
                        "set_tcp_nodelay true\n")
        data = site(tmp, mqtt_port, args.chargers, args.cycle_s)
        cfg = config_mod.parse(data)
        cfg_path = tmp / "site.yaml"
        cfg_path.write_text(yaml.safe_dump(data))
        # One simulated clock for both processes: `run --speed 1` resumes this file.
        state = state_dir(cfg)
        state.mkdir(parents=True, exist_ok=True)
        clock = Clock(datetime.fromisoformat(START), 1.0)
        assert clock.start == hil_of(cfg).start
        clock.save(state / RUN_CLOCK)
        broker = start_broker(conf, mqtt_port)
        log = tmp / "daemon.log"
        daemon = platform = None
        try:
            with log.open("wb") as out:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg_path), "--speed",
                     "1", "--log-level", "warning"], cwd=tmp, stdout=out,
                    stderr=subprocess.STDOUT)
            platform = Platform(mqtt_port, f"{cfg.mqtt.topic_prefix}/{cfg.site.id}/")
            platform.ready.wait(10)
            t_start = time.monotonic()
            try:
                res = asyncio.run(measure(cfg, clock, platform, args.commands,
                                         tuple(args.after_cut), daemon))
            except RuntimeError as exc:
                print(f"bench failed: {exc}\n--- daemon log ---\n"
                      + log.read_text(errors="replace")[-3000:], file=sys.stderr)
                return 1
            wall = time.monotonic() - t_start
        finally:
            if platform is not None:
                platform.close()
            if daemon is not None:
                stop_process(daemon)
            stop_process(broker)
    low, high = caps(args.chargers)
    cut_to = sorted(set(res["cut_to"]))
    print(f"park dispatch grid_max_kw -> SetChargingProfile at the charger, {args.chargers} "
          f"OCPP 1.6J chargers, building {BASE_KW:g} kW, cap {high:g} <-> {low:g} kW, "
          f"control.cycle_s {args.cycle_s:g} s, daemon in its own process, loopback, "
          f"{wall / 60:.1f} min")
    lo, hi = args.after_cut
    print(f"cuts (sent at once; next command {lo:g}-{hi:g} s later):")
    print("\n".join(report(res["cut"])))
    u = res["under"]
    print(f"  publish -> PCC import under the new cap for good: p50 {benchlib.pct(u, 50):.2f} s, "
          f"p99 {benchlib.pct(u, 99):.2f} s, max {max(u):.2f} s (physics steps of 50 ms)")
    print(f"  limits in force after the cuts (A): {', '.join(map(str, cut_to))}")
    print(f"  limit changes at the chargers: {sum(res['changes'])} (expected: boot 6 A, 32 A "
          f"10 s later, then one per command: {args.chargers * (2 + args.commands)})")
    print(f"raises (next command {AFTER_RAISE_S[0]:g}-{AFTER_RAISE_S[1]:g} s later; each "
          f"{lo:g}-{hi:g} s after its cut{', past' if lo >= 10 else ', inside'} the 10 s raise "
          "hold):")
    print("\n".join(report(res["raise"])))
    print("every command:")
    print(line("publish -> accepted ack back", res["ack"]))
    for env_line in benchlib.environment(("paho-mqtt", "ocpp", "websockets")):
        print(f"  {env_line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the operator API costs the control cycle: the daemon's own cycle durations, p50 and
p99, with the API off, on with no client, and on with dashboards attached, plus the daemon's
resident memory in each case.

The demo site (configs/demo.yaml, as bench_daemon.py sets it up, HIL clock at noon) runs
as in production, each party in its own process: `python -m edge.cli hil`, `python -m
edge.cli run`, a private mosquitto, and for the loaded case api_clients.py (N dashboards,
each holding the live stream open and polling /state and /history every few seconds). The
daemon runs with `--log-level debug`, so its cycle logs each cycle's duration as it measured
it (`edge.cycle: cycle N took X ms`, poll + decide + write); the bench takes the cycles that
completed inside the window, after READY=1, the dashboards' first states and a warm-up.
RSS is the daemon's own (not its planner worker), sampled once a second.

Each round runs the three cases, each with a fresh HIL, daemon and state directory, in an
order rotated from round to round; the rounds show how much of a difference is machine
noise. The pooled p99 of the loaded case over the pooled p99 with the API off is the figure
to keep at or under 1.05. Within the loaded runs, the cycles that began while a dashboard
poll was in flight are set beside the others: the same machine at the same minutes, so what
a request costs a cycle it overlaps shows through the noise between runs.

Run: python tests/bench/bench_api.py [--rounds 6] [--seconds 60] [--cycle-s 0.2]
     [--clients 10] [--poll-s 5] [--save runs.json]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import benchlib
import psutil
import yaml
from bench_command_latency import MOSQUITTO, start_broker
from bench_daemon import NotifySocket, accepts, site_config, wait_until
from benchlib import HOST, free_port, pct, stop_process

CASES = ("off", "on", "clients")
LABEL = {"off": "API off", "on": "API on, no client", "clients": "API on, {n} dashboards"}
_CYCLE_LINE = re.compile(r"^(\S+ \S+) DEBUG +edge\.cycle: cycle (\d+) took ([0-9.]+) ms$", re.M)
TOKEN = "bench-api-token-0123456789abcdef"


@dataclass
class Run:
    case: str
    round: int
    durations_ms: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)  # wall clock when each cycle ended
    rss_mib: list[float] = field(default_factory=list)
    cpu_pct: dict[str, float] = field(default_factory=dict)  # of one core, by process
    clients: dict | None = None
    flagged: list[str] = field(default_factory=list)  # the daemon's WARNING/ERROR in the window


def cycle_durations(log: Path) -> dict[int, tuple[float, float]]:
    """Cycle number -> (wall clock at its end, from the log line's millisecond stamp; ms)."""
    return {int(m[2]): (datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() + 5e-4,
                        float(m[3]))
            for m in _CYCLE_LINE.finditer(log.read_text(errors="replace"))}


def overlapped(run: Run, window_s: float = 0.01) -> list[bool]:
    """For each cycle of a run with dashboards: was one of their polls in flight during the
    cycle's first `window_s`? A window of its own length, not the cycle's: a slow cycle
    would otherwise count as hit just for being long."""
    spans = sorted(run.clients["spans"]) if run.clients else []
    starts = [a for a, _ in spans]
    out = []
    for end, took in zip(run.ends, run.durations_ms):
        begin = end - took / 1e3
        i = bisect.bisect_left(starts, begin + window_s)  # polls sent before the window ends
        out.append(any(b > begin for _, b in spans[max(0, i - 40):i]))
    return out


def write_site(tmp: Path, mqtt_port: int, site_id: str, cycle_s: float, api: bool) -> Path:
    """bench_daemon's demo site with this bench's cycle, the HIL at noon (PV producing, so
    the export limit works), and the API on a free port or off."""
    path = site_config(tmp, mqtt_port, site_id)
    data = yaml.safe_load(path.read_text())
    data["control"]["cycle_s"] = cycle_s
    data["hil"]["start"] = "2026-06-22T12:00:00+08:00"
    if api:
        token = tmp / "api.token"
        token.write_text(TOKEN + "\n")
        taken = {d["port"] for d in data["devices"]}
        port = next(p for p in iter(free_port, None) if p not in taken)
        data["api"] = {"enabled": True, "host": HOST, "port": port,
                       "token_file": str(token)}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def one_run(case: str, rnd: int, args: argparse.Namespace, mqtt_port: int, root: Path) -> Run:
    tmp = root / f"r{rnd}-{case}"
    tmp.mkdir()
    cfg = write_site(tmp, mqtt_port, f"bench-api-{os.getpid()}-{rnd}-{case}", args.cycle_s,
                     case != "off")
    data = yaml.safe_load(cfg.read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}

    def spawn(name: str, cmd: list[str], extra: dict[str, str] | None = None) -> None:
        logs[name] = tmp / f"{name}.log"
        with logs[name].open("wb") as out:
            procs[name] = subprocess.Popen(cmd, cwd=tmp, env={**env, **(extra or {})},
                                           stdout=out, stderr=subprocess.STDOUT)

    run = Run(case, rnd)
    notify = NotifySocket(tmp / "notify.sock")
    try:
        spawn("hil", [sys.executable, "-m", "edge.cli", "hil", "-c", str(cfg), "--speed", "1",
                      "--log-level", "warning"])
        ports = [d["port"] for d in data["devices"]]
        wait_until(lambda: all(accepts(p) for p in ports), 30, "HIL ports", procs, logs)
        # WatchdogSec=10 as in systemd/pedf-edge.service: a ping every 2.5 s, as in production
        spawn("daemon", [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg),
                         "--log-level", "debug"],
              {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "10000000"})
        wait_until(notify.ready.is_set, 30, "daemon READY=1", procs, logs)
        if case == "clients":
            spawn("clients", [sys.executable, str(Path(__file__).with_name("api_clients.py")),
                              "--port", str(data["api"]["port"]), "--clients",
                              str(args.clients), "--poll-s", str(args.poll_s)])
            wait_until(lambda: "streaming" in logs["clients"].read_text(errors="replace"), 30,
                       "the dashboards' first states", procs, logs)
        time.sleep(args.warmup)
        daemon = psutil.Process(procs["daemon"].pid)
        watched = {name: psutil.Process(proc.pid) for name, proc in procs.items()}
        cpu0, t0 = {n: p.cpu_times() for n, p in watched.items()}, time.monotonic()
        first = max(cycle_durations(logs["daemon"]), default=0)
        log_from = logs["daemon"].stat().st_size
        while time.monotonic() < t0 + args.seconds:
            time.sleep(1.0)
            run.rss_mib.append(daemon.memory_info().rss / 2**20)
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode} during the window:\n"
                                       + logs[name].read_text(errors="replace")[-3000:])
        cpu1, window = {n: p.cpu_times() for n, p in watched.items()}, time.monotonic() - t0
        last = max(cycle_durations(logs["daemon"]), default=0)
        with logs["daemon"].open("rb") as f:
            f.seek(log_from)
            inside = f.read().decode(errors="replace")
        run.flagged = [ln for ln in inside.splitlines() if " WARNING " in ln or " ERROR " in ln]
        run.cpu_pct = {n: 100.0 * (cpu1[n].user + cpu1[n].system - cpu0[n].user
                                   - cpu0[n].system) / window for n in watched}
    finally:
        if "clients" in procs:
            stop_process(procs["clients"])
            out = logs["clients"].read_text(errors="replace").strip().splitlines()
            run.clients = json.loads(out[-1]) if out and out[-1].startswith("{") else None
        code = stop_process(procs["daemon"])[0] if "daemon" in procs else 0
        if "hil" in procs:
            stop_process(procs["hil"])
        notify.close()
    durations = cycle_durations(logs["daemon"])
    kept = [durations[n] for n in range(first + 1, last + 1) if n in durations]
    run.ends, run.durations_ms = [e for e, _ in kept], [d for _, d in kept]
    if code != 0:
        raise RuntimeError(f"the daemon exited {code} on SIGTERM:\n"
                           + logs["daemon"].read_text(errors="replace")[-3000:])
    return run


def ms(values: list[float], q: float) -> str:
    return f"{pct(values, q):.2f}" if values else "-"


def report(runs: list[Run], args: argparse.Namespace, env_lines: list[str]) -> None:
    label = {c: LABEL[c].format(n=args.clients) for c in CASES}
    print()
    for line in env_lines:
        print(line)
    print(f"configs/demo.yaml (PV, battery, PCC meter, load meter) on loopback, HIL at speed 1 "
          f"from noon, planner on; cycle {args.cycle_s:g} s; {args.rounds} round(s) of "
          f"{args.seconds:g} s windows after a {args.warmup:g} s warm-up; dashboards poll "
          f"every {args.poll_s:g} s")
    print()
    print("| round | case | cycles | p50 ms | p99 ms | max ms | RSS MiB (end) | CPU % daemon "
          "/ HIL / dashboards |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for r in runs:
        d = r.durations_ms
        print(f"| {r.round + 1} | {label[r.case]} | {len(d)} | {ms(d, 50)} | {ms(d, 99)} | "
              f"{max(d, default=0):.2f} | {r.rss_mib[-1]:.1f} | "
              + " / ".join(f"{r.cpu_pct[n]:.1f}" for n in ("daemon", "hil", "clients")
                           if n in r.cpu_pct) + " |")
    pooled = {c: [x for r in runs if r.case == c for x in r.durations_ms] for c in CASES}
    rss = {c: [r.rss_mib[-1] for r in runs if r.case == c] for c in CASES}
    print()
    print("| daemon, pooled over rounds | cycles | p50 ms | p99 ms | p99 per round ms | "
          "RSS MiB (median of run ends) | RSS max MiB |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for c in CASES:
        rounds = ", ".join(ms(r.durations_ms, 99) for r in runs if r.case == c)
        peak = max(x for r in runs if r.case == c for x in r.rss_mib)
        print(f"| {label[c]} | {len(pooled[c])} | {ms(pooled[c], 50)} | {ms(pooled[c], 99)} | "
              f"{rounds} | {statistics.median(rss[c]):.1f} | {peak:.1f} |")

    def ratio(case: str) -> str:
        base = pct(pooled["off"], 99)
        per_round = []
        for rnd in range(args.rounds):
            one = {r.case: pct(r.durations_ms, 99) for r in runs if r.round == rnd}
            per_round.append(f"{one[case] / one['off']:.3f}")
        return f"{pct(pooled[case], 99) / base:.3f} (rounds: {', '.join(per_round)})"

    print()
    print(f"p99 ratio, {label['clients']} / API off: {ratio('clients')}  (goal <= 1.05)")
    print(f"p99 ratio, {label['on']} / API off: {ratio('on')}")
    print(f"RSS, {label['clients']} - API off (medians): "
          f"{statistics.median(rss['clients']) - statistics.median(rss['off']):+.1f} MiB")
    loaded = [r for r in runs if r.clients is not None]
    split: dict[bool, list[float]] = {True: [], False: []}
    for r in loaded:
        for hit, took in zip(overlapped(r), r.durations_ms):
            split[hit].append(took)
    for hit, what in ((True, "a dashboard poll in flight in their first 10 ms"),
                      (False, "none")):
        print(f"{label['clients']}, cycles with {what}: {len(split[hit])}, p50 "
              f"{ms(split[hit], 50)} ms, p99 {ms(split[hit], 99)} ms")
    for r in loaded:
        t = r.clients
        print(f"round {r.round + 1} dashboards: {t['states']} states read, {t['skipped']} "
              f"skipped, {t['stream_failures']} stream failures; {t['polls']} polls, "
              f"{t['poll_failures']} failed; /state p50 {ms(t['state_ms'], 50)} ms, "
              f"/history p50 {ms(t['history_ms'], 50)} ms, p99 {ms(t['history_ms'], 99)} ms"
              + (f"; last error {t['last_error']}" if t["last_error"] else ""))
    flagged = [(r, ln) for r in runs for ln in r.flagged]
    print(f"daemon WARNING/ERROR lines inside the windows: {len(flagged)}")
    for r, ln in flagged[:8]:
        print(f"  [{r.round + 1} {r.case}] {ln[:200]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="rounds of the three cases (6)")
    ap.add_argument("--seconds", type=float, default=60.0, help="window per run (60)")
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="seconds after READY (and the dashboards' first states) (10)")
    ap.add_argument("--cycle-s", type=float, default=0.2, help="control.cycle_s (0.2)")
    ap.add_argument("--clients", type=int, default=10, help="dashboards (10)")
    ap.add_argument("--poll-s", type=float, default=5.0,
                    help="seconds between one dashboard's polls of /state and /history (5)")
    ap.add_argument("--save", type=Path, metavar="FILE.json",
                    help="write every run's figures (per-cycle durations included) here, "
                         "after each run")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 10 or not 10 <= args.seconds <= 600 or args.warmup < 0:
        ap.error("--rounds must be 1..10, --seconds 10..600 and --warmup >= 0")
    if not 0.05 <= args.cycle_s <= 5 or not 1 <= args.clients <= 16 or args.poll_s <= 0:
        ap.error("--cycle-s must be 0.05..5, --clients 1..16 (the API's stream limit at its "
                 "default max_connections) and --poll-s > 0")
    if MOSQUITTO is None:
        ap.error("mosquitto not found (apt-get install mosquitto)")
    env_lines = [*benchlib.environment(("starlette", "uvicorn", "httpx")),
                 f"RAM {psutil.virtual_memory().total / 2**30:.1f} GiB"]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp_name:
        root = Path(tmp_name)
        mqtt_port = free_port()
        conf = root / "mosquitto.conf"
        conf.write_text(f"listener {mqtt_port} {HOST}\nallow_anonymous true\n"
                        "persistence false\nlog_type error\n")
        broker = start_broker(conf, mqtt_port)
        try:
            for rnd in range(args.rounds):
                for i in range(len(CASES)):
                    case = CASES[(i + rnd) % len(CASES)]
                    print(f"round {rnd + 1}/{args.rounds}: {case}", file=sys.stderr, flush=True)
                    runs.append(one_run(case, rnd, args, mqtt_port, root))
                    if args.save:
                        args.save.write_text(json.dumps([asdict(r) for r in runs]))
        finally:
            stop_process(broker)
    report(runs, args, env_lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

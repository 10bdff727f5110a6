"""Resident memory and CPU of the daemon at a 1 s cycle, against the demo site (configs/
demo.yaml: PV, battery, PCC meter, load meter) served by the HIL, both in real time.

Two processes, as in production: `python -m edge.cli hil` and `python -m edge.cli run`, on
free loopback ports, state in a temporary directory, MQTT to a private mosquitto on a free
port (default) or to a broker you name with `--broker 127.0.0.1:1883`. After the daemon
says READY (sd_notify) and a warm-up, psutil samples the daemon once a second for the
window, and so its planner worker (a child process, edge/plan/worker.py: the forecaster and
the solver); CPU% is of one core, from the process's CPU time over the window.

Cycles are counted from the daemon itself: it sends `WATCHDOG=1` on $NOTIFY_SOCKET after a
completed cycle at most every WATCHDOG_USEC/4; the bench binds that socket and sets
WATCHDOG_USEC=4 (one datagram per cycle, one sendto a second). Telemetry is counted by a
paho subscriber on `pedf/v1/<site>/telemetry`. Both processes are stopped with SIGTERM and
the daemon must exit 0. On a shared broker the site's retained status is cleared after.

Run: python tests/bench/bench_daemon.py [--seconds 60] [--warmup 10] [--broker HOST:PORT]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import benchlib
import paho.mqtt.client as paho
import psutil
import yaml
from benchlib import HOST, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(check, timeout: float, what: str, procs: dict[str, subprocess.Popen],
               logs: dict[str, Path]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode} while waiting for {what}:\n"
                                   + logs[name].read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class NotifySocket:
    """Our end of $NOTIFY_SOCKET: counts READY / WATCHDOG datagrams on a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.ready = threading.Event()
        self.watchdogs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            except OSError:
                return
            if "READY=1" in msg:
                self.ready.set()
            if "WATCHDOG=1" in msg:
                self.watchdogs += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class TelemetryCounter:
    def __init__(self, port: int, topic: str) -> None:
        self.topic = topic
        self.count = 0
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-daemon-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async(HOST, port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        self.count += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def children_rss_mib(proc: psutil.Process) -> float:
    """The planner worker's RSS (all children of the daemon; 0 while it restarts)."""
    total = 0.0
    for child in proc.children():
        try:
            total += child.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            pass
    return total


def environment() -> list[str]:
    return [*benchlib.environment(),
            f"RAM {psutil.virtual_memory().total / 2**30:.1f} GiB; psutil {psutil.__version__}"]


def site_config(tmp: Path, mqtt_port: int, site_id: str) -> Path:
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    data["site"]["id"] = site_id  # own topics, even on a shared broker
    for dev, port in zip(data["devices"], benchlib.free_ports(len(data["devices"]))):
        dev["host"], dev["port"] = HOST, port
    data["control"]["cycle_s"] = 1.0
    data["mqtt"]["host"], data["mqtt"]["port"] = HOST, mqtt_port
    data["storage"]["dir"] = str(tmp / "state")
    data["hil"]["speed"] = 1
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="sampling window (default 60)")
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="seconds after READY before sampling (default 10)")
    ap.add_argument("--broker", default=None, metavar="127.0.0.1:PORT",
                    help="use this loopback broker instead of a private mosquitto")
    args = ap.parse_args()
    if not 5 <= args.seconds <= 140 or not 0 <= args.warmup <= 30:
        ap.error("--seconds must be 5..140 and --warmup 0..30 (the whole run stays under 3 min)")
    if args.broker:
        host, _, port_text = args.broker.rpartition(":")
        if host != HOST or not port_text.isdigit():
            ap.error("--broker must be 127.0.0.1:PORT (this bench uses loopback only)")
    elif MOSQUITTO is None:
        ap.error("mosquitto not found; pass --broker 127.0.0.1:1883 to use a running broker")

    env_lines = environment()
    site_id = f"bench-daemon-{os.getpid()}"
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    notify: NotifySocket | None = None
    telemetry: TelemetryCounter | None = None
    rss_mib: list[float] = []
    worker_mib: list[float] = []
    daemon_exit: tuple[int, float] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp_name:
        tmp = Path(tmp_name)
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)

        def spawn(name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> None:
            logs[name] = tmp / f"{name}.log"
            with logs[name].open("wb") as out:
                procs[name] = subprocess.Popen(cmd, cwd=tmp, env={**env, **(extra_env or {})},
                                               stdout=out, stderr=subprocess.STDOUT)

        try:
            if args.broker:
                mqtt_port, broker_desc = int(args.broker.rpartition(":")[2]), args.broker
            else:
                mqtt_port = free_port()
                conf = tmp / "mosquitto.conf"
                conf.write_text(f"listener {mqtt_port} {HOST}\nallow_anonymous true\n"
                                "persistence false\nlog_type error\nlog_type warning\n")
                spawn("mosquitto", [MOSQUITTO, "-c", str(conf)])
                wait_until(lambda: accepts(mqtt_port), 10, "mosquitto", procs, logs)
                broker_desc = f"private mosquitto {HOST}:{mqtt_port}"
            cfg = site_config(tmp, mqtt_port, site_id)
            ports = [d["port"] for d in yaml.safe_load(cfg.read_text())["devices"]]

            spawn("hil", [sys.executable, "-m", "edge.cli", "hil", "-c", str(cfg), "--speed", "1",
                          "--log-level", "warning"])
            wait_until(lambda: all(accepts(p) for p in ports), 30, "HIL ports", procs, logs)

            telemetry = TelemetryCounter(mqtt_port, f"pedf/v1/{site_id}/telemetry")
            if not telemetry.subscribed.wait(10):
                raise RuntimeError(f"no MQTT subscription on {broker_desc} within 10 s")
            notify = NotifySocket(tmp / "notify.sock")
            spawn("daemon", [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg)],
                  {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "4"})
            wait_until(notify.ready.is_set, 30, "daemon READY=1", procs, logs)
            t_ready = time.monotonic()

            daemon = psutil.Process(procs["daemon"].pid)
            hil = psutil.Process(procs["hil"].pid)
            wait_until(lambda: time.monotonic() - t_ready >= args.warmup, args.warmup + 5,
                       "warm-up", procs, logs)

            cpu0, hil0 = daemon.cpu_times(), hil.cpu_times()
            wd0, tm0, t0 = notify.watchdogs, telemetry.count, time.monotonic()
            rss_mib.append(daemon.memory_info().rss / 2**20)
            worker_mib.append(children_rss_mib(daemon))
            next_at = t0
            while (now := time.monotonic()) < t0 + args.seconds:
                next_at += 1.0
                time.sleep(max(0.0, min(next_at, t0 + args.seconds) - now))
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"{name} exited {proc.returncode} during sampling:\n"
                                           + logs[name].read_text(errors="replace")[-3000:])
                rss_mib.append(daemon.memory_info().rss / 2**20)
            worker_mib.append(children_rss_mib(daemon))
            cpu1, hil1 = daemon.cpu_times(), hil.cpu_times()
            wd1, tm1, window = notify.watchdogs, telemetry.count, time.monotonic() - t0
            threads = daemon.num_threads()
            fds = daemon.num_fds()
        finally:
            if "daemon" in procs:
                daemon_exit = stop_process(procs["daemon"])
            for name in ("hil", "mosquitto"):
                if name in procs:
                    stop_process(procs[name])
            if telemetry is not None:
                if args.broker:  # leave no retained status of this one-off site behind
                    telemetry.client.publish(f"pedf/v1/{site_id}/status", b"", qos=1,
                                             retain=True).wait_for_publish(5)
                telemetry.close()
            if notify is not None:
                notify.close()
        daemon_log = logs["daemon"].read_text(errors="replace")

    def busy(a, b) -> float:
        return 100.0 * ((b.user - a.user) + (b.system - a.system)) / window

    cpu_pct, hil_pct = busy(cpu0, cpu1), busy(hil0, hil1)
    cycles = wd1 - wd0
    per_min = (tm1 - tm0) * 60.0 / window
    flagged = [line for line in daemon_log.splitlines() if " WARNING " in line or " ERROR " in line]
    warnings = len(flagged)
    plans = sum(" plan (" in line for line in daemon_log.splitlines())
    code, exit_s = daemon_exit or (None, 0.0)

    print()
    for line in env_lines:
        print(line)
    print(f"site {site_id}: configs/demo.yaml devices (PV, battery, PCC meter, load meter) on "
          f"free loopback ports; HIL and daemon as separate processes at speed 1; {broker_desc}")
    print(f"warm-up {args.warmup:g} s after READY=1, window {window:.1f} s, RSS sampled every "
          f"1 s ({len(rss_mib)} samples); daemon threads {threads}, open fds {fds}; "
          f"HIL process CPU {hil_pct:.1f}% of one core")
    print(f"daemon log: {warnings} WARNING/ERROR line(s); SIGTERM -> exit {code} "
          f"in {exit_s:.2f} s")
    for line in flagged[:5]:
        print(f"  {line[:200]}")
    print(f"planner worker: {plans} plan(s) adopted (log lines 'plan (...)')")
    print()
    print("| daemon, demo site, 1 s cycle, planner on | value |")
    print("|---|---:|")
    print(f"| control process RSS at end of window (MiB) | {rss_mib[-1]:.1f} |")
    print(f"| control process RSS max over window (MiB) | {max(rss_mib):.1f} |")
    print(f"| planner worker RSS at end of window (MiB) | {worker_mib[-1]:.1f} |")
    print(f"| planner worker RSS max over window (MiB) | {max(worker_mib):.1f} |")
    print(f"| CPU, % of one core (mean over {window:.0f} s) | {cpu_pct:.2f} |")
    print(f"| cycles completed (sd_notify WATCHDOG) | {cycles} ({cycles * 60.0 / window:.1f}/min) |")
    print(f"| telemetry messages/min (telemetry_s 5) | {per_min:.1f} |")
    print(f"| exit code after SIGTERM | {code} |")
    print(f"\n_{env_lines[0]}; {env_lines[1].split(';')[0]}._")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

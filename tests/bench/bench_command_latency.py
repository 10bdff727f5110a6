"""Platform command -> device register: how long a dispatch takes from the platform's MQTT
publish to the battery's power register written on the (simulated) device.

Three parties, as in production: a private mosquitto on a free loopback port, the daemon as
its own process (`python -m edge.cli run`, real time, a 1 s control cycle), and this process
as both the platform (a paho client publishing `cmd/dispatch`) and the HIL site serving the
devices over Modbus TCP. The HIL battery's write callback is wrapped to stamp every write of
its power registers (model 124 OutWRte/InWRte) with time.monotonic(), the same clock as the
publish stamp. The site: flat 40 kW load at night, the battery resting at 0 kW; each command
moves the grid target between 20 and 30 kW, so each must change the battery setpoint by
10 kW. A command's latency is publish -> the first write of its setpoint. Commands are
spaced by a random 0.1-0.4 s so they do not lock onto the cycle's phase. The acks'
round trip is printed too.

The broker runs with `set_tcp_nodelay true`: with mosquitto's default, a message it sends
right after another one to the same client waits for that client's delayed ACK (Nagle,
~40 ms on Linux) - every dispatch that supersedes one answers with two acks, so the
second arrived ~40 ms late. `--nagle` shows it. The daemon sets TCP_NODELAY on its side.

Run: python tests/bench/bench_command_latency.py [--commands 200] [--cycle-s 1.0] [--nagle]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchlib
import paho.mqtt.client as paho
import yaml
from benchlib import HOST, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]

from edge import config as config_mod  # noqa: E402
from edge.app.clock import Clock  # noqa: E402
from hil.config import hil_of  # noqa: E402
from hil.site import SimSite  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
)
LOAD_KW = 40.0


def accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def start_broker(conf: Path, port: int) -> subprocess.Popen:
    """A private mosquitto with `conf`, once it accepts connections on `port`."""
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not accepts(port):
        if broker.poll() is not None or time.monotonic() > deadline:
            stop_process(broker)
            raise RuntimeError("mosquitto did not start")
        time.sleep(0.05)
    return broker


def site(tmp: Path, mqtt_port: int, cycle_s: float) -> dict:
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs/demo.yaml").read_text()))
    for dev in data["devices"]:
        dev["port"] = free_port()
        if dev["role"] in ("pv", "battery"):
            dev["ramp_kw_per_s"] = 1000
            dev["revert_s"] = 60
    batt = next(d for d in data["devices"] if d["role"] == "battery")
    batt["sim"] = {"initial_soc_pct": 70}
    load = next(d for d in data["devices"] if d.get("measures") == "load")
    load["sim"] = {"profile": "flat", "day_kw": LOAD_KW}
    data["control"].update({"functions": ["peak_shaving", "export_limit"], "cycle_s": cycle_s})
    data["mqtt"].update({"port": mqtt_port})
    data["storage"]["dir"] = str(tmp / "state")
    data["hil"]["start"] = "2026-06-22T02:00:00+08:00"
    return data


class Platform:
    """Publishes commands and records the acks (paho's thread)."""

    def __init__(self, port: int, prefix: str) -> None:
        self.prefix = prefix
        self.accepted: dict[str, float] = {}
        self.rejected: dict[str, str] = {}
        self.ready = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-platform")
        self.client.on_connect = lambda c, *a: c.subscribe(prefix + "ack", qos=1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        ack = json.loads(msg.payload)
        if ack["status"] == "accepted":
            self.accepted.setdefault(ack["cmd_id"], time.monotonic())
        elif ack["status"] == "rejected":
            self.rejected[ack["cmd_id"]] = ack["reason"]

    def send(self, cmd: dict) -> float:
        t = time.monotonic()
        self.client.publish(self.prefix + "cmd/dispatch", json.dumps(cmd), qos=1)
        return t

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def measure(cfg, platform: Platform, n: int, proc: subprocess.Popen) -> tuple[list, list]:
    sim = SimSite(cfg, Clock(hil_of(cfg).start, 1.0))
    dev = sim.devices["bess1"]
    writes: list[tuple[float, float]] = []
    plain = dev.on_write

    def stamped(model_id, changes, before):
        plain(model_id, changes, before)
        if model_id == 124 and {"OutWRte", "InWRte"} & changes.keys():
            writes.append((time.monotonic(), dev.command_kw))

    dev.on_write = stamped
    await sim.start()
    try:
        deadline = time.monotonic() + 30
        while not writes:  # the daemon is up and writing the battery
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the daemon never wrote the battery; see its log")
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        write_lat, ack_lat = [], []
        for i in range(n):
            target = 20.0 if i % 2 == 0 else 30.0
            want = LOAD_KW - target  # battery kW that holds the grid at the target
            cmd_id = f"lat-{i}"
            mark = len(writes)
            t0 = platform.send({"cmd_id": cmd_id, "grid_target_kw": target, "duration_s": 600})
            deadline = t0 + 10
            while True:
                hit = next((t for t, kw in writes[mark:] if abs(kw - want) < 1.0), None)
                if hit is not None:
                    break
                if cmd_id in platform.rejected:
                    raise RuntimeError(f"{cmd_id} rejected: {platform.rejected[cmd_id]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd_id}: no write of {want} kW within 10 s")
                await asyncio.sleep(0.001)
            write_lat.append((hit - t0) * 1000)
            while cmd_id not in platform.accepted and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            if cmd_id in platform.accepted:
                ack_lat.append((platform.accepted[cmd_id] - t0) * 1000)
            await asyncio.sleep(random.uniform(0.1, 0.4))
        return write_lat, ack_lat
    finally:
        await sim.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commands", type=int, default=200)
    ap.add_argument("--cycle-s", type=float, default=1.0, help="control.cycle_s of the daemon")
    ap.add_argument("--nagle", action="store_true",
                    help="leave mosquitto's set_tcp_nodelay at its default (false)")
    args = ap.parse_args()
    if MOSQUITTO is None:
        ap.error("mosquitto not found (apt-get install mosquitto)")
    random.seed(1)
    with tempfile.TemporaryDirectory(prefix="bench-cmd-") as d:
        tmp = Path(d)
        mqtt_port = free_port()
        conf = tmp / "mosquitto.conf"
        conf.write_text(f"listener {mqtt_port} {HOST}\nallow_anonymous true\n"
                        + ("" if args.nagle else "set_tcp_nodelay true\n"))
        data = site(tmp, mqtt_port, args.cycle_s)
        cfg = config_mod.parse(data)
        cfg_path = tmp / "site.yaml"
        cfg_path.write_text(yaml.safe_dump(data))
        env = dict(os.environ)
        broker = start_broker(conf, mqtt_port)
        log = tmp / "daemon.log"
        daemon = None
        platform = None
        try:
            with log.open("wb") as out:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg_path),
                     "--log-level", "warning"], cwd=tmp, env=env, stdout=out,
                    stderr=subprocess.STDOUT)
            platform = Platform(mqtt_port, f"{cfg.mqtt.topic_prefix}/{cfg.site.id}/")
            platform.ready.wait(10)
            try:
                write_lat, ack_lat = asyncio.run(measure(cfg, platform, args.commands, daemon))
            except RuntimeError as exc:
                print(f"bench failed: {exc}\n--- daemon log ---\n"
                      + log.read_text(errors="replace")[-3000:], file=sys.stderr)
                return 1
        finally:
            if platform is not None:
                platform.close()
            if daemon is not None:
                stop_process(daemon)
            stop_process(broker)
    p = benchlib.pct
    print(f"MQTT dispatch -> battery register written, {len(write_lat)} commands, "
          f"control.cycle_s {args.cycle_s:g} s, daemon in its own process, loopback, "
          f"mosquitto set_tcp_nodelay {'false' if args.nagle else 'true'}")
    print(f"  publish -> register written: p50 {p(write_lat, 50):.1f} ms, "
          f"p99 {p(write_lat, 99):.1f} ms, max {max(write_lat):.1f} ms")
    if ack_lat:
        print(f"  publish -> accepted ack back: p50 {p(ack_lat, 50):.1f} ms, "
              f"p99 {p(ack_lat, 99):.1f} ms ({len(ack_lat)} acks)")
    for line in benchlib.environment(("paho-mqtt", "pymodbus")):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

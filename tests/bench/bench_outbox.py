"""Outbox drain after an outage against the raw client, same broker, same run.

The link (edge/report/mqtt.py) drains N waiting reports from its SQLite outbox to a
Mosquitto: each QoS 1 PUBLISH handed to paho, each PUBACK deleting its row. The raw client
is plain paho publishing the same N payloads at QoS 1 with its default in-flight window
(20), no disk. Both are timed from the first publish to the last PUBACK and interleaved
(`--rounds` each) so a busy machine weighs on both alike; `drain_vs_raw` is the ratio of the
medians (goal >= 0.5).

The waiting rows are written straight into the outbox file (its own schema, one
transaction), as an outage leaves them, so the fill is not part of the figure.

Run: python tests/bench/bench_outbox.py [--n 20000] [--rounds 3] [--json FILE]
     (Mosquitto at 127.0.0.1:1883 unless --host/--port)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from benchlib import environment
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import MqttConfig
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox

SITE = "bench-outbox"


def payload(i: int) -> dict:
    """About the size of a telemetry report."""
    return {"ts": 1_780_000_000 + i, "site": SITE, "pcc_kw": 41.25, "pv_kw": 63.5,
            "bess_kw": -12.0, "soc_pct": 54.3, "load_kw": 92.75, "mode": "economic",
            "devices": {f"dev{k}": {"p_kw": 3.5 + k, "q": "good"} for k in range(6)}}


def fill(path: Path, n: int, topic: str) -> None:
    with Outbox(path):
        pass  # the schema
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO outbox (msg_id, topic, payload, qos, created_ts) VALUES (?, ?, ?, 1, ?)",
            ((i, topic, json.dumps({**payload(i), "msg_id": i}, separators=(",", ":")),
              time.time()) for i in range(1, n + 1)))
        db.execute("UPDATE meta SET value = ? WHERE key = 'last_msg_id'", (n,))
    db.close()


async def drain(host: str, port: int, n: int, window: int | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outbox.sqlite"
        outbox = Outbox(path)
        kw = {} if window is None else {"window": window}
        link = MqttLink(MqttConfig(host=host, port=port, keepalive_s=30), SITE, outbox, **kw)
        fill(path, n, link.topic("telemetry"))
        await link.start()
        while not link.connected:
            await asyncio.sleep(0.005)
        t0 = time.perf_counter()
        await link.flush(600)
        took = time.perf_counter() - t0
        await link.stop()
        outbox.close()
        assert link.acked == n, (link.acked, n)
        return n / took


def raw(host: str, port: int, n: int) -> float:
    topic = f"pedf/v1/{SITE}-raw/telemetry"
    bodies = [json.dumps({**payload(i), "msg_id": i}, separators=(",", ":"))
              for i in range(1, n + 1)]
    done = threading.Event()
    acked = [0]

    def on_publish(client, userdata, mid, reason, properties):
        acked[0] += 1
        if acked[0] == n:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{SITE}-raw")
    c.on_publish = on_publish
    c.connect(host, port, 30)
    c.loop_start()
    t0 = time.perf_counter()
    for body in bodies:
        c.publish(topic, body, qos=1)
    if not done.wait(600):
        raise RuntimeError(f"raw client: {acked[0]} of {n} acknowledged")
    took = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return n / took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=int, default=None, help="link window (default: its own)")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    links, raws = [], []
    for r in range(a.rounds):
        raws.append(raw(a.host, a.port, a.n))
        links.append(asyncio.run(drain(a.host, a.port, a.n, a.window)))
        print(f"round {r + 1}: raw paho {raws[-1]:,.0f} msg/s, outbox drain {links[-1]:,.0f} msg/s")
    ratio = statistics.median(links) / statistics.median(raws)
    print(f"{a.n} messages, QoS 1, {a.host}:{a.port}: drain {min(links):,.0f}-{max(links):,.0f} "
          f"msg/s, raw paho {min(raws):,.0f}-{max(raws):,.0f} msg/s; "
          f"drain_vs_raw (medians) {ratio:.2f}")
    env = environment(("paho-mqtt",))
    for line in env:
        print(line)
    if a.json:
        Path(a.json).write_text(json.dumps({
            "n": a.n, "drain_msg_s": links, "raw_msg_s": raws, "drain_vs_raw": ratio,
            "environment": env}, indent=2))


if __name__ == "__main__":
    main()

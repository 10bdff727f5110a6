"""A link killed -9 while a backlog drains in batches: rows leave the outbox only after their
PUBACK, in msg_id order, so what is left on disk is a contiguous tail; the next start sends
that tail (the acknowledged part of it again, at most one delete batch), loses nothing and
never reuses an id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import uuid

import paho.mqtt.client as paho
import pytest
from conftest import wait_for

from edge.config import MqttConfig
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox

SITE = "site-kill"
N = 10000
WINDOW = 20
BATCH = 300

DRAIN_PROCESS = """
import asyncio, sys
from pathlib import Path
from edge.config import MqttConfig
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox

async def main():
    link = MqttLink(MqttConfig(host=sys.argv[1], port=int(sys.argv[2]), keepalive_s=5),
                    sys.argv[3], Outbox(Path(sys.argv[4])), window=int(sys.argv[5]),
                    delete_batch=int(sys.argv[6]))
    await link.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Tap:
    """Every telemetry msg_id the broker forwards, in arrival order (QoS 0: the broker
    writes to this socket as it goes and queues nothing it could drop). `kill_at(n, pid)`:
    SIGKILL `pid` from the receiving thread the moment the n-th id arrives, so the kill lands
    mid-drain however late the test's event loop would have noticed."""

    def __init__(self, host: str, port: int) -> None:
        self.ids: list[int] = []
        self._lock = threading.Lock()
        self._kill: tuple[int, int] | None = None
        self.killed = threading.Event()
        self.ready = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                  client_id=f"tap-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *a: c.subscribe(f"pedf/v1/{SITE}/telemetry", qos=0)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, 10)
        self.client.loop_start()

    def kill_at(self, n: int, pid: int) -> None:
        with self._lock:
            self._kill = (n, pid)

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.ids.append(json.loads(msg.payload)["msg_id"])
            if self._kill and len(self.ids) >= self._kill[0] and not self.killed.is_set():
                os.kill(self._kill[1], signal.SIGKILL)  # no stop(), no last delete
                self.killed.set()

    def seen(self) -> list[int]:
        with self._lock:
            return list(self.ids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def backlog(path, n: int) -> None:
    """n reports waiting in the outbox, as an outage leaves them (written in one go)."""
    with Outbox(path):
        pass
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO outbox (msg_id, topic, payload, qos, created_ts) "
                       "VALUES (?, ?, ?, 1, ?)",
                       ((i, f"pedf/v1/{SITE}/telemetry", json.dumps({"msg_id": i, "n": i}),
                         time.time()) for i in range(1, n + 1)))
        db.execute("UPDATE meta SET value = ? WHERE key = 'last_msg_id'", (n,))
    db.close()


def runs(ids: list[int]) -> list[list[int]]:
    """`ids` cut into its increasing runs."""
    out: list[list[int]] = []
    for i in ids:
        if out and i > out[-1][-1]:
            out[-1].append(i)
        else:
            out.append([i])
    return out


@pytest.mark.timeout(120)
async def test_kill_mid_drain_leaves_a_contiguous_tail_that_the_next_start_completes(
        mosquitto, tmp_path):
    path = tmp_path / "outbox.sqlite"
    backlog(path, N)
    tap = Tap(mosquitto.host, mosquitto.port)
    try:
        await wait_for(tap.ready.is_set, 10, "the tap's SUBACK")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DRAIN_PROCESS, mosquitto.host, str(mosquitto.port), SITE,
            str(path), str(WINDOW), str(BATCH), cwd=tmp_path)
        tap.kill_at(2 * BATCH, proc.pid)
        try:
            await wait_for(tap.killed.is_set, 30, "the drain under way")
        finally:
            if not tap.killed.is_set():
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()

        with Outbox(path) as box:
            left = [r.msg_id for r in box.pending(N + 1)]
        assert 0 < len(left) < N, "the kill must land mid-drain"
        assert left == list(range(left[0], N + 1)), "deletes are an acknowledged prefix"
        # every deleted row reached the broker before its row went
        await wait_for(lambda: set(range(1, left[0])) <= set(tap.seen()), 10,
                       "the deleted rows at the tap")
        before = len(tap.seen())

        with Outbox(path) as box:
            link = MqttLink(MqttConfig(host=mosquitto.host, port=mosquitto.port,
                                       keepalive_s=5), SITE, box, window=WINDOW,
                            delete_batch=BATCH)
            await link.start()
            try:
                await link.flush(60)
            finally:
                await link.stop()
            assert len(box) == 0
            assert box.enqueue(f"pedf/v1/{SITE}/telemetry", {"n": 0}) == N + 1  # no reuse
            # (that one stays for a next start: the link has stopped)

        await wait_for(lambda: set(range(1, N + 1)) <= set(tap.seen()), 15, "every id")
        seen = tap.seen()
        assert set(seen) == set(range(1, N + 1)), "an id was lost or invented"
        resent = len(seen) - len(set(seen))
        assert resent <= BATCH + WINDOW, f"{resent} ids sent twice (at most a delete batch)"
        # each process sent in msg_id order; the second began again at the tail
        first, second = seen[:before], seen[before:]
        assert len(runs(first)) == 1 and len(runs(second)) == 1
        assert second[0] == left[0]
    finally:
        tap.close()

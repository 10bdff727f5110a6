"""The MQTT link against real brokers (a private mosquitto per test) and real SQLite files."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from conftest import Subscriber, free_port, wait_for

from edge.config import MqttConfig
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox
from tools.broker import ensure_broker

SITE = "site-1"


async def retained_status(host: str, port: int, timeout: float = 5.0) -> str | None:
    """What a fresh subscriber finds retained on the site's status topic."""
    sub = Subscriber(host, port, f"pedf/v1/{SITE}/status")
    try:
        await wait_for(sub.subscribed.is_set, timeout, "SUBACK")
        try:
            await wait_for(sub.payloads, 1.0, "a retained status")
        except AssertionError:
            return None
        return sub.payloads()[0].decode()
    finally:
        sub.close()


def cfg_for(host: str, port: int, **kw) -> MqttConfig:
    return MqttConfig(host=host, port=port, keepalive_s=5, **kw)


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


async def test_messages_wait_on_disk_while_broker_down_and_drain_in_order(
    mosquitto, outbox, tmp_path
):
    sub = Subscriber(mosquitto.host, mosquitto.port, f"pedf/v1/{SITE}/telemetry", persistent=True)
    await wait_for(sub.subscribed.is_set, 5, "subscriber SUBACK")
    mosquitto.stop()

    link = MqttLink(cfg_for(mosquitto.host, mosquitto.port), SITE, outbox)
    await link.start()
    try:
        ids = [outbox.enqueue(link.topic("telemetry"), {"n": i}) for i in range(25)]
        with Outbox(tmp_path / "outbox.sqlite") as reader:  # on disk, not just in memory
            assert [r.msg_id for r in reader.pending(100)] == ids
        assert not link.connected

        mosquitto.start()
        await wait_for(lambda: link.connected, 15, "the link to reconnect")
        await link.flush(15)
        await wait_for(lambda: len(sub.msg_ids()) >= len(ids), 10, "all messages at the subscriber")
        assert sub.msg_ids() == ids
        assert [json.loads(p)["n"] for p in sub.payloads()] == list(range(25))
        assert link.acked == len(ids)
    finally:
        await link.stop()
        sub.close()


@pytest.mark.timeout(90)
async def test_broker_restart_mid_stream_delivers_each_msg_id_exactly_once_in_order(
    mosquitto, outbox
):
    if not mosquitto.persistent:
        pytest.skip("needs a broker that keeps the subscriber's session across a restart")
    sub = Subscriber(mosquitto.host, mosquitto.port, f"pedf/v1/{SITE}/telemetry", persistent=True)
    await wait_for(sub.subscribed.is_set, 5, "subscriber SUBACK")
    link = MqttLink(cfg_for(mosquitto.host, mosquitto.port), SITE, outbox)
    await link.start()
    ids: list[int] = []
    stop_producing = asyncio.Event()

    async def produce() -> None:
        n = 0
        while not stop_producing.is_set():
            ids.append(outbox.enqueue(link.topic("telemetry"), {"n": n}))
            n += 1
            await asyncio.sleep(0.02)

    producer = asyncio.create_task(produce())
    try:
        await wait_for(lambda: link.acked >= 20, 10, "the first messages to be acknowledged")
        await asyncio.to_thread(mosquitto.stop)
        sent_before_outage = link.sent
        await wait_for(lambda: not link.connected, 10, "the link to notice the outage")
        await asyncio.sleep(2.0)  # outage length, not an assertion
        waiting_during_outage = len(outbox)
        await asyncio.to_thread(mosquitto.start)
        await wait_for(lambda: link.connected, 20, "the link to reconnect")
        acked_after = link.acked
        await wait_for(lambda: link.acked >= acked_after + 20, 10, "traffic after the restart")
    finally:
        stop_producing.set()
        await producer
    try:
        await link.flush(20)
        await wait_for(lambda: len(sub.msg_ids()) >= len(ids), 15, "every id at the subscriber")
        await asyncio.sleep(0.3)  # room for a stray duplicate to show up before comparing
        received = sub.msg_ids()
        assert waiting_during_outage > 0, "the outage must have held messages back"
        assert link.sent > sent_before_outage
        assert len(received) == len(set(received)), "a msg_id arrived twice"
        assert received == sorted(received), "msg_ids arrived out of order"
        assert received == ids
    finally:
        await link.stop()
        sub.close()


LINK_PROCESS = """
import asyncio, sys
from pathlib import Path
from edge.config import MqttConfig
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox

async def main():
    link = MqttLink(MqttConfig(host=sys.argv[1], port=int(sys.argv[2]), keepalive_s=5),
                    sys.argv[3], Outbox(Path(sys.argv[4])))
    await link.start()
    while not link.connected:
        await asyncio.sleep(0.02)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_status_is_retained_online_and_last_will_offline(mosquitto, tmp_path):
    host, port = mosquitto.host, mosquitto.port

    # a link in its own process that dies without sending DISCONNECT
    proc = await asyncio.create_subprocess_exec(  # the installed package, as in production
        sys.executable, "-c", LINK_PROCESS, host, str(port), SITE, str(tmp_path / "crash.sqlite"),
        stdout=asyncio.subprocess.PIPE, cwd=tmp_path,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"ready"
        await wait_for_status(host, port, "online")
    finally:
        proc.kill()
        await proc.wait()
    await wait_for_status(host, port, "offline")  # the broker published the last will

    # an in-process link: online after start, offline after a clean stop
    with Outbox(tmp_path / "clean.sqlite") as box:
        link = MqttLink(cfg_for(host, port), SITE, box)
        await link.start()
        try:
            await wait_for(lambda: link.connected, 10, "the link to connect")
            await wait_for_status(host, port, "online")
        finally:
            await link.stop()
        await wait_for_status(host, port, "offline")


async def wait_for_status(host: str, port: int, expected: str, timeout: float = 10.0) -> None:
    seen: list[str | None] = []

    async def poll() -> None:
        while (status := await retained_status(host, port)) != expected:
            seen.append(status)
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"retained status never became {expected!r}; saw {seen[-3:]}") from None


async def test_embedded_broker_used_when_none_answers(outbox):
    port = free_port()
    handle = await ensure_broker("127.0.0.1", port)
    try:
        assert handle.embedded
        assert (handle.host, handle.port) != ("127.0.0.1", port)
        sub = Subscriber(handle.host, handle.port, f"pedf/v1/{SITE}/telemetry")
        link = MqttLink(cfg_for(handle.host, handle.port), SITE, outbox)
        try:
            await wait_for(sub.subscribed.is_set, 10, "subscriber SUBACK on the embedded broker")
            await link.start()
            msg_id = outbox.enqueue(link.topic("telemetry"), {"p_kw": 1.0})
            await link.flush(10)
            await wait_for(sub.msg_ids, 10, "the message through the embedded broker")
            assert sub.msg_ids() == [msg_id]
        finally:
            await link.stop()
            sub.close()
    finally:
        await handle.close()


async def test_external_broker_is_used_when_it_answers(mosquitto):
    handle = await ensure_broker(mosquitto.host, mosquitto.port)
    assert not handle.embedded
    assert (handle.host, handle.port) == (mosquitto.host, mosquitto.port)
    await handle.close()


class FakeBroker:
    """Just enough MQTT 3.1.1 to script a broker: CONNACK every CONNECT, record every
    PUBLISH per connection, and PUBACK only when told to."""

    def __init__(self) -> None:
        self.connections: list[list[tuple[str, bytes, bool]]] = []  # (topic, payload, dup)
        self.ack = False
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def data(self, conn: int) -> list[int]:
        return [json.loads(p)["msg_id"] for t, p, _ in self.connections[conn]
                if t.endswith("/telemetry")]

    def drop_connections(self) -> None:
        for w in self._writers:
            w.transport.abort()  # no DISCONNECT, no PUBACKs: a broker crash
        self._writers.clear()

    async def close(self) -> None:
        self.drop_connections()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        received: list[tuple[str, bytes, bool]] = []
        self.connections.append(received)
        try:
            while True:
                head = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:
                    b = (await reader.readexactly(1))[0]
                    length |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                body = await reader.readexactly(length)
                kind = head >> 4
                if kind == 1:  # CONNECT
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 3:  # PUBLISH
                    qos = (head >> 1) & 3
                    tlen = int.from_bytes(body[:2], "big")
                    topic = body[2:2 + tlen].decode()
                    pos = 2 + tlen
                    pid = body[pos:pos + 2] if qos else b""
                    received.append((topic, body[pos + (2 if qos else 0):], bool(head & 0x08)))
                    if qos == 1 and (self.ack or topic.endswith("/status")):
                        writer.write(b"\x40\x02" + pid)
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_messages_in_flight_at_a_drop_are_resent_once_by_the_outbox_not_also_by_paho(outbox):
    broker = FakeBroker()
    await broker.start()
    link = MqttLink(cfg_for("127.0.0.1", broker.port), SITE, outbox, window=5,
                    reconnect_min_s=0.1, reconnect_max_s=0.2)
    try:
        ids = [outbox.enqueue(link.topic("telemetry"), {"n": i}) for i in range(12)]
        await link.start()
        # the first connection takes a full window and never acknowledges it
        await wait_for(lambda: broker.connections and len(broker.data(0)) == 5, 10,
                       "a full window in flight")
        broker.ack = True
        broker.drop_connections()
        await link.flush(15)
        resent = [d for c in range(1, len(broker.connections)) for d in broker.data(c)]
        assert broker.data(0) == ids[:5]
        assert resent == ids, "each unacknowledged id must be sent exactly once more, in order"
        assert link.acked == len(ids)
    finally:
        await link.stop()
        await broker.close()

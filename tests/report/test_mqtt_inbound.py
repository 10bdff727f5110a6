"""Inbound messages on the MQTT link (platform commands) against a real Mosquitto: the
subscription outlives a broker restart, and a flood cannot grow the queue without bound."""

from __future__ import annotations

import asyncio

import paho.mqtt.client as paho
import pytest
from conftest import wait_for

from edge.config import MqttConfig
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox

CMD = "pedf/v1/site-1/cmd/"


def publisher(host: str, port: int) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-platform")
    c.connect(host, port)
    c.loop_start()
    return c


async def probe(pub: paho.Client, link: MqttLink, topic: str, payload: bytes):
    """Publish until the link hands it over (its SUBSCRIBE may still be on the way); then
    drop the extra copies so the queue is empty again."""
    async def arrived():
        while True:
            pub.publish(topic, payload, qos=1)
            try:
                return await asyncio.wait_for(link.inbound.get(), 0.2)
            except TimeoutError:
                pass
    item = await asyncio.wait_for(arrived(), 10)
    await asyncio.sleep(0.3)
    while not link.inbound.empty():
        assert link.inbound.get_nowait().payload == payload
    return item


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


async def test_subscription_is_renewed_after_a_broker_restart(mosquitto, outbox):
    link = MqttLink(MqttConfig(host=mosquitto.host, port=mosquitto.port, keepalive_s=5),
                    "site-1", outbox, reconnect_min_s=0.1, reconnect_max_s=0.5)
    link.subscribe(CMD + "+")
    await link.start()
    pub = publisher(mosquitto.host, mosquitto.port)
    try:
        await wait_for(lambda: link.connected, 10, "connect")
        first = await probe(pub, link, CMD + "dispatch", b"one")
        assert (first.topic, first.payload) == (CMD + "dispatch", b"one")

        pub.loop_stop()
        mosquitto.stop()
        await wait_for(lambda: not link.connected, 10, "the link to notice")
        mosquitto.start()
        await wait_for(lambda: link.connected, 15, "the link to reconnect")
        pub.reconnect()
        pub.loop_start()
        pub.publish(CMD + "other/level", b"not ours", qos=1)
        item = await probe(pub, link, CMD + "mode", b"two")
        assert (item.topic, item.payload) == (CMD + "mode", b"two")
    finally:
        pub.loop_stop()
        pub.disconnect()
        await link.stop()


async def test_a_flood_beyond_the_inbound_queue_is_dropped_and_counted(mosquitto, outbox):
    link = MqttLink(MqttConfig(host=mosquitto.host, port=mosquitto.port, keepalive_s=5),
                    "site-1", outbox, inbound_max=5)
    link.subscribe(CMD + "+")
    await link.start()
    pub = publisher(mosquitto.host, mosquitto.port)
    try:
        await wait_for(lambda: link.connected, 10, "connect")
        await probe(pub, link, CMD + "probe", b"x")
        dropped = link.inbound_dropped
        for i in range(20):
            pub.publish(CMD + "dispatch", str(i).encode(), qos=1)
        await wait_for(lambda: link.inbound.qsize() + link.inbound_dropped - dropped >= 20, 10,
                       "all 20 handed over or counted")
        assert link.inbound.qsize() == 5
        assert link.inbound_dropped - dropped == 15
        assert link.inbound.get_nowait().payload == b"0"  # the oldest are kept
    finally:
        pub.loop_stop()
        pub.disconnect()
        await link.stop()

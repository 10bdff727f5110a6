"""The MQTT link's failover between brokers (`mqtt.hosts`), against two real Mosquittos:
the outbox keeps every message across the move, in order."""

from __future__ import annotations

import asyncio

import pytest
from conftest import MosquittoBroker, Subscriber, free_port, wait_for

from edge.config import MqttConfig
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox

SITE = "site-1"


@pytest.fixture
def two_brokers(tmp_path_factory):
    brokers = [MosquittoBroker(tmp_path_factory.mktemp(f"b{i}"), free_port()) for i in range(2)]
    for b in brokers:
        b.start()
    yield brokers
    for b in brokers:
        b.stop()


def link_to(hosts: list[str], outbox: Outbox) -> MqttLink:
    cfg = MqttConfig(hosts=hosts, keepalive_s=5)
    return MqttLink(cfg, SITE, outbox, reconnect_min_s=0.2, reconnect_max_s=1.0)


async def test_a_dead_first_broker_is_skipped_for_the_next_one(two_brokers, tmp_path):
    live = two_brokers[0]
    sub = Subscriber(live.host, live.port, f"pedf/v1/{SITE}/telemetry")
    await wait_for(sub.subscribed.is_set, 5, "SUBACK")
    with Outbox(tmp_path / "outbox.sqlite") as box:
        link = link_to([f"127.0.0.1:{free_port()}", f"{live.host}:{live.port}"], box)
        await link.start()
        try:
            ids = [box.enqueue(link.topic("telemetry"), {"n": i}) for i in range(5)]
            await wait_for(lambda: sub.msg_ids() == ids, 20, "the messages via the 2nd broker")
            assert link.broker == (live.host, live.port)
            assert link.failovers >= 1
        finally:
            await link.stop()
            sub.close()


async def test_killing_the_connected_broker_moves_the_link_and_loses_nothing(
        two_brokers, tmp_path):
    a, b = two_brokers
    subs = [Subscriber(x.host, x.port, f"pedf/v1/{SITE}/telemetry") for x in (a, b)]
    for s in subs:
        await wait_for(s.subscribed.is_set, 5, "SUBACK")
    with Outbox(tmp_path / "outbox.sqlite") as box:
        link = link_to([f"{a.host}:{a.port}", f"{b.host}:{b.port}"], box)
        await link.start()
        try:
            await wait_for(lambda: link.connected, 10, "connected to the first broker")
            ids = []
            for i in range(200):
                ids.append(box.enqueue(link.topic("telemetry"), {"n": i}))
                if i == 60:
                    a.stop()  # mid-stream, with messages in flight
                await asyncio.sleep(0.005)
            await wait_for(lambda: len(box) == 0, 30, "the outbox drained via the 2nd broker")
            assert link.broker == (b.host, b.port)
            got_a, got_b = subs[0].msg_ids(), subs[1].msg_ids()
            assert got_b, "nothing reached the second broker"
            assert set(got_a) | set(got_b) == set(ids)  # none lost
            assert got_a == sorted(got_a) and got_b == sorted(set(got_b))  # order per broker
            assert min(got_b) <= max(got_a) + 1  # B starts where A's acknowledged ones end
            a.start()
            await asyncio.sleep(0.5)
            assert link.broker == (b.host, b.port)  # sticky: stays on B while connected
        finally:
            await link.stop()
            for s in subs:
                s.close()

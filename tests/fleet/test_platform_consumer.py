"""The platform's subscription on a NATS cluster outlives the node that leads it.

NATS's MQTT front end turns each QoS 1 subscription into a JetStream consumer on the
replicated message stream, with the cluster's `consumer_replicas`: three, on file, in
the fleet's cluster (the sites subscribe at QoS 0 there and have none). Kill the node
leading the aggregator's consumer: another node takes it over and every site's messages
keep arriving while it is down; none is missing or out of order at the end. (With one
replica in memory the aggregator hears nothing until the node is back; raised from one
to three replicas after its creation, the consumer elected no new leader within 90 s in
a third of our trials with NATS 2.9.10. Born with three it did every time.)"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import pytest
from conftest import wait_for

from hil.fleet.aggregator import Aggregator
from hil.fleet.brokers import NATS, NatsCluster
from hil.fleet.sim import Fleet

SITES = 12
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None

pytestmark = pytest.mark.skipif(not Path(NATS).exists(), reason="nats-server not installed")


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(dir=SHM) as d:
        yield Path(d)


async def test_the_aggregator_keeps_receiving_while_the_node_leading_its_consumer_is_down(
        workdir):
    cluster = NatsCluster(workdir / "nats")
    cluster.start()
    agg = Aggregator(cluster.hosts)
    fleet = Fleet(SITES, 10_000, cluster.hosts, workdir / "sites", telemetry_s=1.0,
                  flex_s=10.0)
    try:
        agg.start()
        await wait_for(agg.subscribed.is_set, 20, "the aggregator's SUBACK")
        fleet.start()
        await wait_for(lambda: len(agg.flex) == SITES, 60, "a flex message from every site")
        info = cluster.consumer_current("pedf/v1/+/+")
        assert len(info["cluster"]["replicas"]) == 2  # three copies: two outlive the kill
        leader = cluster.node(info["cluster"]["leader"])
        assert leader is not None
        killed_at = time.monotonic()
        leader.kill()  # if the aggregator was on it, it resumes its session on another node
        try:
            await wait_for(lambda: len(agg.heard_since(killed_at + 1.0)) == SITES, 90,
                           f"every site's messages while {leader.name} is down")
        except AssertionError as exc:  # say who was silent, where, and what the platform saw
            silent = {s: st for s, st in fleet.sites().items()
                      if s not in agg.heard_since(killed_at + 1.0)}
            events = [(round(t - killed_at, 1), e) for t, e in agg.events]
            raise AssertionError(f"{exc}: silent {silent}; aggregator {events}; consumer "
                                 f"{cluster.consumer('pedf/v1/+/+')}") from None
        assert not leader.running
        leader.start()
        cluster.wait_ready(60, [leader])
    finally:
        final = fleet.stop() if fleet._procs else []
        await asyncio.sleep(2)  # the last acknowledged messages reach the aggregator
        agg.stop()
        cluster.stop()
    last = {s["site"]: s["last_id"] for w in final for s in w["sites"]}
    assert all(s["outbox"] == 0 for w in final for s in w["sites"])
    assert agg.lost(last) == {}
    assert agg.out_of_order() == []

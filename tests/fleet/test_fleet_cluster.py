"""A fleet on a 3-node NATS cluster (MQTT + JetStream, loopback) and on one Mosquitto: the
sites run the node's real link, outbox and command code (hil/fleet/site.py); the reference
aggregator (hil/fleet/aggregator.py) dispatches them and checks what arrived."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import MosquittoBroker, Subscriber, free_port, wait_for

from hil.fleet.aggregator import Aggregator
from hil.fleet.brokers import NATS, NatsCluster, mqtt_works
from hil.fleet.sim import Fleet

CAPACITY_KW = 1.2e6  # 1.2 GW of battery rating over the fleet
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # 1,000 SQLite outboxes: no disk fsyncs

pytestmark = pytest.mark.skipif(not Path(NATS).exists(), reason="nats-server not installed")


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(dir=SHM) as d:
        yield Path(d)


def on(fleet: Fleet, address: str) -> list[str]:
    return [s for s, st in fleet.sites().items() if st["broker"] == address]


async def test_a_1000_site_fleet_on_a_nats_cluster_dispatches_and_survives_a_node_loss(workdir):
    await dispatch_then_lose_nodes(workdir, 1000, losses=1)


@pytest.mark.soak
async def test_a_1000_site_fleet_survives_its_consumer_leader_lost_three_times(workdir):
    await dispatch_then_lose_nodes(workdir, 1000, losses=3)


async def dispatch_then_lose_nodes(workdir: Path, SITES: int, losses: int) -> None:
    """One group dispatch to every site, every site answers and the fleet delivers; then
    `losses` times: SIGKILL the node leading the platform's consumer (a third of the sites
    are on it): they fail over, the platform hears every site again without it, the
    cluster heals when it comes back. At the end no msg_id of any site is missing or out
    of order. (Losing a node also moves JetStream leaders: sites on the other nodes may
    drop too.)"""
    cluster = NatsCluster(workdir / "nats")
    cluster.start()
    agg = Aggregator(cluster.hosts[1:])  # on n2 or n3; if its node is lost, it resumes its
    # session on the other
    fleet = Fleet(SITES, CAPACITY_KW, cluster.hosts, workdir / "sites", groups=("fleet",),
                  telemetry_s=2.0, flex_s=10.0)
    try:
        agg.start()
        await wait_for(agg.subscribed.is_set, 20, "the aggregator's SUBACK")
        fleet.start()
        await wait_for(lambda: len(agg.flex) == SITES, 120, "a flex message from every site")
        offered = sum(kw for _, kw in agg.offer("reduce").values())  # latest flex, now
        assert offered == pytest.approx(CAPACITY_KW, rel=1e-6)  # each battery's rating, idle

        target = 1e6  # reduce 1 GW for 2 h, one message to the whole group
        d = agg.dispatch_group("fleet", "fleet-1", target, 7200)
        await wait_for(lambda: len(agg.answers(d)) == SITES, 120, "an answer from every site")
        assert set(agg.answers(d).values()) == {"accepted"}
        await wait_for(lambda: agg.report(d)["delivered_kw"] >= 0.99 * target, 60,
                       "the fleet's response to reach the target")
        for site, kw in agg.responses(d).items():  # nobody went beyond what it declared
            assert d.shares[site] <= d.offered[site] + 1e-6
            assert kw <= d.offered[site] + 0.01

        kills: list[float] = []
        moves: Counter[str] = Counter()  # site -> how many of the lost nodes it was on
        for k in range(losses):
            t_kill, victims = await lose_the_consumer_leader(cluster, fleet, agg, SITES)
            if k == 0:  # the fleet spread over the nodes: a third of it on each
                assert len(victims) == pytest.approx(SITES / 3, abs=1)
            kills.append(t_kill)
            moves.update(victims)
    finally:
        final = fleet.stop() if fleet._procs else []
        last = {s["site"]: s["last_id"] for w in final for s in w["sites"]}
        await asyncio.sleep(2)  # the last PUBACKed messages reach the aggregator
        agg.stop()
        cluster.stop()
    assert all(s["outbox"] == 0 for w in final for s in w["sites"])
    assert agg.lost(last) == {}  # every msg_id of every site arrived, across the failover
    assert agg.out_of_order() == [], agg.disorder(kills[0])
    failovers = {s["site"]: s["failovers"] for w in final for s in w["sites"]}
    stayed = [(site, n) for site, n in moves.items() if failovers[site] < n]
    assert not stayed, stayed[:5]  # every site on a lost node moved off it


async def lose_the_consumer_leader(cluster: NatsCluster, fleet: Fleet, agg: Aggregator,
                                   sites: int) -> tuple[float, list[str]]:
    """SIGKILL the node leading the aggregator's consumer (three replicas on file), wait
    for its sites to fail over and for the aggregator to hear every site without it, then
    bring it back and check the routes heal. Returns (when, the sites that were on it:
    the sites stay where they moved, so after a first loss a node may hold more or none)."""
    info = cluster.consumer_current("pedf/v1/+/+", 120)  # a node back catches up first
    n1 = cluster.node(info["cluster"]["leader"])
    assert n1 is not None
    other = next(n for n in cluster.nodes if n is not n1)
    victims = on(fleet, n1.address)
    t_kill = time.monotonic()
    n1.kill()
    await wait_for(lambda: not on(fleet, n1.address), 300, f"the sites to leave {n1.name}")
    await wait_for(lambda: all(s["connected"] for s in fleet.sites().values()), 300,
                   "every site connected again")
    await wait_for(lambda: len(agg.heard_since(t_kill + 1.0)) == sites, 120,
                   f"the aggregator to hear every site without {n1.name}")
    assert not n1.running
    n1.start()
    cluster.wait_ready(60, [n1])  # back with its store: JetStream and MQTT serve again
    sub = Subscriber("127.0.0.1", other.mqtt_port, "pedf/heal")
    await wait_for(sub.subscribed.is_set, 10, f"SUBACK on {other.name}")
    assert mqtt_works(n1.mqtt_port, topic="pedf/heal")
    await wait_for(sub.payloads, 20, f"a message from {n1.name} on {other.name} (routes "
                   "healed)")
    sub.close()
    return t_kill, victims


async def test_a_fleet_on_one_mosquitto_redispatches_what_opted_out(workdir):
    broker = MosquittoBroker(workdir, free_port())
    broker.start()
    hosts = [f"{broker.host}:{broker.port}"]
    agg = Aggregator(hosts, share="aggregators")  # a shared subscription: one of N gets each
    fleet = Fleet(100, 50_000, hosts, workdir / "sites", broker="mqtt", opt_out=10,
                  telemetry_s=1.0, flex_s=5.0)
    try:
        agg.start()
        await wait_for(agg.subscribed.is_set, 20, "the aggregator's SUBACK")
        fleet.start()
        await wait_for(lambda: len(agg.flex) == 100, 60, "a flex message from every site")
        target = 20_000.0
        d = agg.dispatch("d-1", target, 3600)
        await wait_for(lambda: len(agg.answers(d)) == 100, 60, "an answer from every site")
        refused = [s for s, a in agg.answers(d).items() if a == "rejected"]
        assert sorted(refused) == [f"s{i:05d}" for i in range(10)]  # the opted-out ones
        short = sum(d.shares[s] for s in refused)
        assert agg.redispatch(d) == 0.0  # the others have room for it
        assert sum(d.shares.values()) == pytest.approx(target)
        await wait_for(lambda: len(agg.answers(d)) == 90, 60, "answers to the new commands")
        assert set(agg.answers(d).values()) == {"accepted"}
        await wait_for(lambda: agg.report(d)["delivered_kw"] >= 0.99 * target, 60,
                       f"the response to reach the target after moving {short:.0f} kW")
        assert agg.report(d)["refused"] == 0
    finally:
        fleet.stop() if fleet._procs else None
        agg.stop()
        broker.stop()

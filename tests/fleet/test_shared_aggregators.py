"""Several reference aggregators on one shared subscription (Mosquitto `$share/`): the
broker hands each message to one of them, so a platform scales its ingestion out. Each
takes a part, no message reaches two, and together they hold every msg_id every site
sent."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from conftest import MosquittoBroker, free_port, wait_for

from hil.fleet.aggregator import Aggregator
from hil.fleet.sim import Fleet

SITES = 20


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


async def test_aggregators_sharing_a_subscription_each_take_a_part_and_together_all_once(
        workdir):
    broker = MosquittoBroker(workdir, free_port())
    broker.start()
    hosts = [f"{broker.host}:{broker.port}"]
    aggs = [Aggregator(hosts, share="platform", client_id=f"platform-{i}") for i in range(2)]
    fleet = Fleet(SITES, 10_000, hosts, workdir / "sites", broker="mqtt", telemetry_s=0.5,
                  flex_s=5.0)
    final = []
    try:
        for a in aggs:
            a.start()
        for a in aggs:
            await wait_for(a.subscribed.is_set, 20, "each aggregator's SUBACK")
        fleet.start()
        await wait_for(lambda: sum(a.received for a in aggs) >= 20 * SITES, 60,
                       "twenty messages a site")
    finally:
        final = fleet.stop() if fleet._procs else []
        await asyncio.sleep(1)  # the last acknowledged messages reach an aggregator
        for a in aggs:
            a.stop()
        broker.stop()
    last = {s["site"]: s["last_id"] for w in final for s in w["sites"]}
    assert len(last) == SITES and all(s["outbox"] == 0 for w in final for s in w["sites"])
    sent = {(site, i) for site, n in last.items() for i in range(1, n + 1)}
    got = [[(site, i) for site, ids in a.ids.items() for i in ids] for a in aggs]
    assert all(len(g) == len(set(g)) for g in got)  # none twice to one aggregator
    assert not set(got[0]) & set(got[1])  # none to both
    assert set(got[0]) | set(got[1]) == sent  # none lost
    assert all(len(g) >= len(sent) / 4 for g in got), [len(g) for g in got]  # both work

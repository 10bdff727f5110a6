"""The reference aggregator's arithmetic, fed messages directly (no broker): the fleet's
flex per interval, the split of a target by declared flex, lost and reordered msg_ids."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from hil.fleet.aggregator import Aggregator


def feed(agg: Aggregator, site: str, kind: str, doc: dict) -> None:
    agg._on_message(None, None, SimpleNamespace(topic=f"pedf/v1/{site}/{kind}",
                                                payload=json.dumps(doc).encode()))


def flex(msg_id: int, *rows: tuple[str, float, float, float]) -> dict:
    return {"msg_id": msg_id, "intervals": [
        {"start": t, "baseline_kw": base, "up_kw": up, "down_kw": 1.0, "up_kwh": kwh,
         "down_kwh": 0.25} for t, base, up, kwh in rows]}


@pytest.fixture
def agg():
    return Aggregator(["127.0.0.1:1"])  # never started: publishes go nowhere


def test_fleet_flex_sums_each_interval_over_the_sites_latest_messages(agg):
    feed(agg, "a", "flex", flex(1, ("T0", 10, 100, 25), ("T1", 10, 80, 20)))
    feed(agg, "b", "flex", flex(1, ("T0", 5, 50, 12.5)))
    feed(agg, "a", "flex", flex(2, ("T0", 10, 60, 15), ("T1", 10, 40, 10)))  # replaces a's
    rows = agg.fleet_flex()
    assert [(r["start"], r["sites"], r["up_kw"], r["up_kwh"]) for r in rows] == [
        ("T0", 2, 110, 27.5), ("T1", 1, 40, 10)]


def test_a_target_is_split_by_the_flex_each_site_can_hold_for_the_window(agg):
    feed(agg, "a", "flex", flex(1, ("T0", 100, 300, 300)))  # 300 kW, but 150 kW for 2 h
    feed(agg, "b", "flex", flex(1, ("T0", 50, 150, 1000)))
    d = agg.dispatch("c1", 150, 7200)
    assert d.shares == {"a": pytest.approx(75), "b": pytest.approx(75)}
    assert d.offered == {"a": 150, "b": 150}
    g = agg.dispatch_group("g", "c2", 150, 7200)  # the nodes' rule reads the declared kW
    assert g.shares == {"a": pytest.approx(100), "b": pytest.approx(50)}


def test_refused_shares_move_to_the_sites_with_room(agg):
    feed(agg, "a", "flex", flex(1, ("T0", 100, 100, 1000)))
    feed(agg, "b", "flex", flex(1, ("T0", 100, 100, 1000)))
    d = agg.dispatch("c1", 100, 3600)
    feed(agg, "a", "ack", {"msg_id": 2, "cmd_id": "c1", "status": "accepted"})
    feed(agg, "b", "ack", {"msg_id": 2, "cmd_id": "c1", "status": "rejected"})
    assert agg.redispatch(d) == 0.0
    assert d.shares == {"a": pytest.approx(100)} and d.cmd_ids == {"a": "c1-r1"}
    assert agg.answers(d) == {}  # the new command is not answered yet


def test_missing_and_reordered_msg_ids_are_named(agg):
    for i in (1, 2, 4, 3, 3):
        feed(agg, "a", "telemetry", {"msg_id": i, "grid_kw": 0})
    for i in (1, 2, 3, 2):  # a re-send after a failover is not a reordering
        feed(agg, "b", "telemetry", {"msg_id": i, "grid_kw": 0})
    assert agg.lost({"a": 5, "b": 3}) == {"a": [5]}
    assert agg.out_of_order() == ["a"]

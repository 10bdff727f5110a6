"""The operator API's reads against the HIL office building with a real broker, a planner
worker and a prefilled history: every answer over a real socket fits the OpenAPI document
the daemon serves, and says what the daemon holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from api_helpers import check, client, prefill_history, with_api
from prometheus_client.parser import text_string_to_metric_families
from site_harness import running_site, site_dict

from edge import config as config_mod
from edge.api import reads
from edge.api.openapi import document
from edge.report.history import History, Interval
from edge.vpp.shaping import DrEvent

SPEED = 60.0
SH = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 6, 22, 10, 0, tzinfo=SH)  # Monday morning: peak tariff from 10:00
READS = ("state", "devices", "plan", "dr", "flex", "today", "tariff")


def planned_site(tmp_path: Path, broker_port: int) -> tuple[dict, int]:
    data = site_dict(tmp_path, broker_port)
    data["hil"]["start"] = START.isoformat()
    data["planner"] = {"enabled": True, "horizon_h": 6, "step_min": 15}
    port = with_api(data, tmp_path)
    prefill_history(Path(data["storage"]["dir"]) / "history.sqlite", START, days=14)
    return data, port


async def test_every_read_fits_the_openapi_document_and_tells_what_the_daemon_holds(
        tmp_path, mosquitto):
    data, port = planned_site(tmp_path, mosquitto.port)
    async with running_site(data, mosquitto, SPEED) as run, client(port) as c:
        now = run.clock.now()
        run.daemon.dr.add(DrEvent("ev-api", "grid_operator", "reduce", now + timedelta(
            minutes=30), now + timedelta(minutes=60), kw=5.0), now)
        openapi = (await c.get("/api/v1/openapi.json")).json()
        docs = {}
        for name in READS:
            r = await c.get(f"/api/v1/{name}")
            assert r.status_code == 200, (name, r.text)
            assert r.headers["content-type"] == "application/json"
            check(openapi, f"/api/v1/{name}", 200, r.json())
            docs[name] = r.json()
        day = {"from": (START - timedelta(days=1)).isoformat(), "to": START.isoformat()}
        r = await c.get("/api/v1/history", params=day)
        assert r.status_code == 200, r.text
        check(openapi, "/api/v1/history", 200, r.json())
        history = r.json()
        bad = await c.get("/api/v1/history", params={"from": "yesterday", "to": day["to"]})
        assert bad.status_code == 422
        check(openapi, "/api/v1/history", 422, bad.json())
        assert bad.json()["detail"].startswith("from:")
        backwards = await c.get("/api/v1/history", params={"from": day["to"], "to": day["from"]})
        assert backwards.status_code == 200 and backwards.json()["intervals"] == []
        long = await c.get("/api/v1/history", params={
            "from": (START - timedelta(days=40)).isoformat(), "to": START.isoformat()})
        assert long.status_code == 200
        assert long.json()["to"] == "2026-06-13T02:00:00.000Z"  # 31 days from `from`
        cycles = run.daemon.cycle.stats.cycles

    state = docs["state"]
    assert 0 < state["cycle"] <= cycles
    assert state["bounds"]["import_limit_kw"] == 80.0  # configs/demo.yaml
    assert set(state["setpoints"]["battery"]) == {"bess1"}
    assert state["not_good"] == {} and state["stale"] == []
    assert None not in (state["grid_kw"], state["pv_kw"], state["load_kw"], state["soc_pct"])
    assert [d["id"] for d in docs["devices"]["devices"]] == ["pv1", "bess1", "pcc", "load"]
    assert all(d["quality"] == "good" and "power_kw" in d["values"]
               for d in docs["devices"]["devices"])
    plan = docs["plan"]
    assert plan["enabled"] and plan["status"] in ("optimal", "time_limit")
    assert 20 <= len(plan["steps"]) <= 24  # 6 h of 15 min, the first one maybe partial
    local = [(datetime.fromisoformat(s["start"]).astimezone(SH), s) for s in plan["steps"]]
    peak = [s for t, s in local if 10 <= t.hour < 15]  # steps inside 10:00-15:00 local
    assert peak and all(s["import_price"] == 1.12 for s in peak)  # configs/demo.yaml
    assert all(s["import_price"] == 0.68 for t, s in local if 15 <= t.hour < 18)
    assert plan["planner"]["solves"] >= 1
    assert [e["event_id"] for e in docs["dr"]["events"]] == ["ev-api"]
    assert docs["dr"]["events"][0]["phase"] in ("scheduled", "ramp")
    assert len(docs["flex"]["intervals"]) == 16  # vpp.flex_horizon_h 4 h
    assert len(history["intervals"]) == 96
    assert all(iv["import_kwh"] == 7.5 for iv in history["intervals"])

    today = docs["today"]
    assert (today["day"], today["from"], today["currency"]) == (
        "2026-06-22", "2026-06-21T16:00:00.000Z", "CNY")
    # Midnight to 10:00 from the prefill: 40 quarter hours of 7.5 kWh, 32 of them in the
    # valley (0.31), 8 at the flat price (0.68); since 10:00 the peak price (1.12).
    live = today["import_kwh"] - 300.0
    assert live >= 0
    assert today["covered_s"] > 40 * 900, "the time measured since the start counts"
    assert today["import_cost"] == pytest.approx(32 * 7.5 * 0.31 + 8 * 7.5 * 0.68 + live * 1.12,
                                                 abs=0.01)
    assert today["export_revenue"] == pytest.approx(today["export_kwh"] * 0.39, abs=0.01)
    assert today["bill"] == pytest.approx(today["import_cost"] - today["export_revenue"],
                                          abs=0.001)
    assert today["co2_kg"] == pytest.approx(today["import_kwh"] * 0.5366, abs=0.01)  # default
    tariff = docs["tariff"]
    spans = tariff["spans"]
    assert all(a["end"] == b["start"] for a, b in zip(spans, spans[1:]))
    t0, t1 = (datetime.fromisoformat(spans[i][k]) for i, k in ((0, "start"), (-1, "end")))
    assert t1 - t0 == timedelta(hours=48), "a day either side of now"
    at_start = next(s for s in spans if datetime.fromisoformat(s["start"]) <= START
                    < datetime.fromisoformat(s["end"]))
    assert (at_start["name"], at_start["price"]) == ("peak", 1.12)
    assert [p["start"] for p in tariff["periods"]] == [
        "00:00", "08:00", "10:00", "15:00", "18:00", "21:00"]


async def test_the_stream_sends_a_state_per_cycle_with_advancing_ts(tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port)
    port = with_api(data, tmp_path)
    async with running_site(data, mosquitto, SPEED) as run, client(port) as c:
        openapi = (await c.get("/api/v1/openapi.json")).json()
        states = []
        async with c.stream("GET", "/api/v1/stream") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "state":
                    states.append(json.loads(line.removeprefix("data: ")))
                    if len(states) == 20:
                        break
        cycles = run.daemon.cycle.stats.cycles
    for s in states:
        check(openapi, "/api/v1/state", 200, s)
    stamps = [s["ts"] for s in states]
    numbers = [s["cycle"] for s in states]
    assert stamps == sorted(set(stamps)), "each state is a newer cycle's"
    assert numbers == sorted(set(numbers)) and numbers[-1] <= cycles


async def test_metrics_parse_as_prometheus_text_with_the_daemons_families(tmp_path, mosquitto):
    data, port = planned_site(tmp_path, mosquitto.port)
    async with running_site(data, mosquitto, SPEED) as run, client(port) as c:
        r = await c.get("/metrics")
        cycles = run.daemon.cycle.stats.cycles
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    expected = {
        "pedf_cycle_duration_seconds": "histogram", "pedf_cycle_overruns": "counter",
        "pedf_cycles": "counter", "pedf_device_poll_errors": "counter",
        "pedf_device_quality": "gauge", "pedf_outbox_depth": "gauge",
        "pedf_outbox_oldest_age_seconds": "gauge", "pedf_mqtt_connected": "gauge",
        "pedf_plan_age_seconds": "gauge", "pedf_plan_fallbacks": "counter",
        "pedf_plan_solve_seconds": "gauge", "pedf_site_power_kw": "gauge",
        "pedf_soc_percent": "gauge", "pedf_ev_kw": "gauge"}
    assert {n: families[n].type for n in expected if n in families} == expected

    def value(name: str, sample: str | None = None, **labels) -> float:
        return next(s.value for s in families[name].samples
                    if s.name == (sample or name) and labels.items() <= s.labels.items())

    assert 0 < value("pedf_cycle_duration_seconds", "pedf_cycle_duration_seconds_count") \
        <= cycles
    assert value("pedf_mqtt_connected") == 1.0
    assert all(value("pedf_device_quality", device=d, quality="good") == 1.0
               for d in ("pv1", "bess1", "pcc", "load"))
    assert 0 <= value("pedf_soc_percent", device="bess1") <= 100
    assert {s.labels["term"] for s in families["pedf_site_power_kw"].samples} == {
        "grid", "pv", "bess", "load", "ev"}
    assert value("pedf_plan_solves", "pedf_plan_solves_total") >= 1
    assert value("pedf_plan_age_seconds") >= 0


def test_today_adds_the_open_quarter_hour_to_the_stored_ones(tmp_path):
    """After a restart the history holds the first part of the running quarter hour and the
    meter the rest: the day so far is both, and nothing of yesterday."""
    cfg = config_mod.parse(site_dict(tmp_path, 1883))
    path = tmp_path / "history.sqlite"
    now = datetime(2026, 6, 22, 0, 40, tzinfo=SH)
    h = History(path)
    for start, kwh in ((now - timedelta(hours=1), 99.0), (now.replace(minute=0), 5.0),
                       (now.replace(minute=30), 1.0)):
        h.put(Interval(start.astimezone(UTC), import_kwh=kwh, load_kwh=kwh, covered_s=300))
    h.close()
    reader = History.reader(path)
    try:
        open_part = Interval(now.replace(minute=30).astimezone(UTC), import_kwh=2.0,
                             load_kwh=2.0, covered_s=300)
        doc = reads.today(reader, cfg, now, open_part)
        alone = reads.today(reader, cfg, now, None)
    finally:
        reader.close()
    check(document(), "/api/v1/today", 200, doc)
    assert (doc["import_kwh"], alone["import_kwh"]) == (8.0, 6.0)
    assert doc["import_cost"] == pytest.approx(8.0 * 0.31)
    assert doc["covered_s"] == 900.0

"""Unit tests of the VEN's pieces: events as openleadr parses them off the wire (built with
openleadr's own message templates) -> normalised requests -> opt decision and the DR events
handed to DR execution; the event store; the config section."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from openleadr import objects
from openleadr.messaging import create_message, parse_message

from drivers.base import Quality, Reading
from edge import config as config_mod
from edge.app.clock import Clock
from edge.config import ControlConfig
from edge.image.image import DeviceState, ProcessImage
from edge.vpp.eventstore import DrRequest, EventStore, StoredEvent
from edge.vpp.openadr.mapping import (
    Flexibility,
    decide,
    dr_events,
    flexibility,
    needed_kw,
    normalise,
)

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {1: 10.0, 2: 20.0, 3: 40.0}
NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)  # events are in the future


def wire(*signals: objects.EventSignal, start: datetime = NOW, event_id: str = "ev1") -> dict:
    """An event as the VEN receives it: rendered to XML by openleadr and parsed back."""
    duration = sum((i.duration for i in signals[0].intervals), timedelta())
    event = objects.Event(
        event_descriptor=objects.EventDescriptor(
            event_id=event_id, modification_number=0, market_context="oadr://grid",
            event_status="far", created_date_time=start),
        active_period=objects.ActivePeriod(dtstart=start, duration=duration),
        event_signals=list(signals), targets=[{"ven_id": "ven1"}])
    xml = create_message("oadrDistributeEvent", request_id="r1", vtn_id="VTN", events=[event],
                         response={"response_code": 200, "response_description": "OK",
                                   "request_id": "r1"})
    _, payload = parse_message(xml)
    return payload["events"][0]


def signal(name: str, typ: str, values: list[float], seconds: float = 60, unit: str | None = None,
           scale: str = "none", start: datetime = NOW) -> objects.EventSignal:
    intervals = [objects.Interval(dtstart=start + timedelta(seconds=i * seconds),
                                  duration=timedelta(seconds=seconds), signal_payload=v, uid=i)
                 for i, v in enumerate(values)]
    measurement = None if unit is None else objects.Measurement(
        name="powerReal", description="RealPower", unit=unit, scale=scale,
        power_attributes=objects.PowerAttributes())
    return objects.EventSignal(intervals=intervals, signal_name=name, signal_type=typ,
                               signal_id=f"{name}-{typ}", current_value=0, measurement=measurement)


# -- normalising ------------------------------------------------------------------------------
def test_simple_levels_become_the_configured_shed_per_interval_and_level_0_nothing():
    received = NOW - timedelta(minutes=5)
    reqs, ignored = normalise(wire(signal("SIMPLE", "level", [0, 2, 3])), LEVELS, 80.0, received)
    assert ignored == []
    assert [(r.direction, r.kw) for r in reqs] == [("reduce", 0.0), ("reduce", 20.0),
                                                     ("reduce", 40.0)]
    assert [r.start - NOW for r in reqs] == [timedelta(minutes=m) for m in (0, 1, 2)]
    assert all(r.end - r.start == timedelta(minutes=1) for r in reqs)
    assert reqs[0].notice_s == pytest.approx(300)
    assert all(math.isnan(r.target_kw) for r in reqs)


def test_load_dispatch_setpoint_in_watts_is_a_kw_target_on_the_side_it_moves_to():
    ev = wire(signal("LOAD_DISPATCH", "setpoint", [40_000], unit="W", scale="none"))
    (down,), _ = normalise(ev, LEVELS, 60.0, NOW)
    (up,), _ = normalise(ev, LEVELS, 25.0, NOW)
    assert (down.direction, down.target_kw) == ("reduce", 40.0)
    assert (up.direction, up.target_kw) == ("increase", 40.0)
    assert needed_kw(down, 60.0) == 20.0 and needed_kw(up, 25.0) == 15.0


def test_load_dispatch_delta_sign_gives_direction_and_scale_codes_are_honoured():
    ev = wire(signal("LOAD_DISPATCH", "delta", [-15, 0.01], unit="W", scale="M"))
    reqs, _ = normalise(ev, LEVELS, 60.0, NOW)
    assert [(r.direction, r.kw) for r in reqs] == [("reduce", 15_000.0), ("increase", 10.0)]
    (kw,), _ = normalise(wire(signal("LOAD_DISPATCH", "delta", [-15], unit="W", scale="k")),
                         LEVELS, 60.0, NOW)
    assert (kw.direction, kw.kw) == ("reduce", 15.0)


def test_load_control_capacity_and_percent_offset_are_relative_to_the_baseline():
    cap = wire(signal("LOAD_CONTROL", "x-loadControlCapacity", [0.75]))
    pct = wire(signal("LOAD_CONTROL", "x-loadControlPercentOffset", [-10, 20]))
    point = wire(signal("LOAD_CONTROL", "x-loadControlSetpoint", [30], unit="W", scale="k"))
    (c,), _ = normalise(cap, LEVELS, 80.0, NOW)
    p, _ = normalise(pct, LEVELS, 80.0, NOW)
    (s,), _ = normalise(point, LEVELS, 80.0, NOW)
    assert (c.direction, c.kw) == ("reduce", 20.0)
    assert [(r.direction, r.kw) for r in p] == [("reduce", 8.0), ("increase", 16.0)]
    assert (s.direction, s.target_kw) == ("reduce", 30.0)


def test_price_only_event_is_not_acted_on_and_opted_out_naming_the_signal():
    ev = wire(signal("ELECTRICITY_PRICE", "price", [1.2]))
    reqs, ignored = normalise(ev, LEVELS, 80.0, NOW)
    assert reqs == [] and ignored == ["ELECTRICITY_PRICE/price"]
    opt, reason = decide(reqs, ignored, 80.0, Flexibility(60, 60, ""), {}, ControlConfig(), 0.8)
    assert opt == "optOut" and "ELECTRICITY_PRICE/price" in reason


# -- deciding ---------------------------------------------------------------------------------
def req(kw: float = math.nan, target: float = math.nan, direction: str = "reduce") -> DrRequest:
    return DrRequest("ev1", "0.0", direction, kw, target, NOW, NOW + timedelta(hours=1), 0.0)


def test_opt_in_needs_the_configured_share_of_the_request():
    flex = Flexibility(reduce_kw=16.0, increase_kw=0.0, detail="bess1")
    assert decide([req(20)], [], 50.0, flex, {}, ControlConfig(), 0.8)[0] == "optIn"
    opt, reason = decide([req(20)], [], 50.0, flex, {}, ControlConfig(), 0.9)
    assert opt == "optOut"
    assert "reduce 20.0 kW" in reason and "can deliver 16.0 kW" in reason and "90%" in reason


def test_commitments_overlapping_the_event_use_up_flexibility():
    flex = Flexibility(30.0, 0.0, "bess1")
    assert decide([req(20)], [], 50.0, flex, {"reduce": 5.0}, ControlConfig(), 0.8)[0] == "optIn"
    opt, reason = decide([req(20)], [], 50.0, flex, {"reduce": 20.0}, ControlConfig(), 0.8)
    assert opt == "optOut" and "20.0 kW already committed" in reason


def test_zero_export_site_cannot_reduce_below_zero_import():
    ctrl = ControlConfig(export_limit_kw=0)
    opt, reason = decide([req(20)], [], 5.0, Flexibility(60, 60, ""), {}, ctrl, 0.8)
    assert opt == "optOut" and "site limits allow 5.0 kW" in reason
    up = decide([req(target=90, direction="increase")], [], 50.0, Flexibility(60, 60, ""), {},
                ControlConfig(import_limit_kw=80), 0.8)
    assert up[0] == "optOut" and "site limits allow 30.0 kW" in up[1]


def test_without_a_pcc_reading_the_site_opts_out_and_level_0_is_always_in():
    assert decide([req(20)], [], math.nan, Flexibility(60, 60, ""), {}, ControlConfig(), 0.8)[0] \
        == "optOut"
    assert decide([req(0)], [], 40.0, Flexibility(0, 0, ""), {}, ControlConfig(), 0.8) == \
        ("optIn", "normal operation requested (nothing to change)")


def test_flexibility_is_power_or_energy_limited_and_counts_no_stale_battery():
    cfg = config_mod.load(ROOT / "configs/demo.yaml")  # bess1 200 kWh, 60/60 kW, SoC 10-95 %

    def image(power: float, soc: float, quality: Quality = Quality.GOOD) -> ProcessImage:
        states = {d.id: DeviceState(Reading(d.id, {"power_kw": 0.0}), Quality.GOOD, 0)
                  for d in cfg.devices}
        states["bess1"] = DeviceState(Reading("bess1", {"power_kw": power, "soc_pct": soc}),
                                      quality, 0)
        return ProcessImage(NOW, 1.0, states)

    short = flexibility(cfg, image(0.0, 80.0), hours=0.25)
    assert short.reduce_kw == pytest.approx(60.0) and short.increase_kw == pytest.approx(60.0)
    low = flexibility(cfg, image(0.0, 20.0), hours=2.0)  # 20 kWh x 0.95 over 2 h
    assert low.reduce_kw == pytest.approx(9.5)
    full = flexibility(cfg, image(0.0, 90.0), hours=2.0)  # 10 kWh of room / 0.95 over 2 h
    assert full.increase_kw == pytest.approx(10 / 0.95 / 2)
    busy = flexibility(cfg, image(25.0, 80.0), hours=0.25)  # already discharging 25 kW
    assert busy.reduce_kw == pytest.approx(35.0)
    assert flexibility(cfg, image(0.0, 80.0, Quality.STALE), hours=0.25).reduce_kw == 0.0


# -- handing over to DR execution --------------------------------------------------------------
def test_dr_events_group_intervals_per_signal_and_direction_and_skip_level_0():
    clock = Clock()
    reqs, _ = normalise(wire(signal("SIMPLE", "level", [0, 2, 3]),
                             signal("LOAD_DISPATCH", "delta", [10, -5, 0], unit="W", scale="k")),
                        LEVELS, 60.0, NOW - timedelta(hours=2))
    events = {e.id: e for e in dr_events("ev1", reqs, clock)}
    assert sorted(events) == ["oadr:ev1:0-", "oadr:ev1:1+", "oadr:ev1:1-"]
    simple_ = events["oadr:ev1:0-"]
    assert (simple_.source, simple_.direction, simple_.notice) == ("grid_operator", "reduce", "hour")
    assert [s.kw for s in simple_.segments] == [20.0, 40.0]
    assert simple_.start == simple_.segments[0].start and simple_.end == simple_.segments[1].end
    assert (simple_.end - simple_.start).total_seconds() == pytest.approx(120, abs=0.1)
    assert [s.kw for s in events["oadr:ev1:1+"].segments] == [10.0]
    assert [s.kw for s in events["oadr:ev1:1-"].segments] == [5.0]


def test_targets_go_over_as_target_segments():
    reqs, _ = normalise(wire(signal("LOAD_DISPATCH", "setpoint", [35], unit="W", scale="k")),
                        LEVELS, 60.0, NOW)
    (ev,) = dr_events("ev2", reqs, Clock())
    assert ev.direction == "reduce" and ev.segments[0].target_kw == 35.0
    assert ev.segments[0].kw is None and ev.notice == "second"


def test_wall_clock_windows_land_on_a_faster_hil_clock():
    clock = Clock(datetime(2026, 6, 22, 10, tzinfo=UTC), speed=60)
    before = clock.now()
    wall = datetime.now(UTC)  # on the HIL clock: between `before` and `after`
    after = clock.now()
    r = DrRequest("ev1", "0.0", "reduce", 10, math.nan, wall + timedelta(seconds=10),
                  wall + timedelta(seconds=20), 10)
    (ev,) = dr_events("ev1", [r], clock)
    # 10 wall seconds ahead is 600 s ahead on the HIL clock, however long this test takes
    slack = timedelta(milliseconds=100)  # wall vs monotonic drift (NTP slew), times 60
    assert before + timedelta(seconds=600) - slack <= ev.start <= after + timedelta(seconds=600) + slack
    assert (ev.end - ev.start).total_seconds() == pytest.approx(600, abs=0.1)
    assert ev.notice == "second"


# -- the store --------------------------------------------------------------------------------
def stored(event_id: str, opt: str = "optIn", status: str = "far", hours: float = 1) -> StoredEvent:
    start = NOW
    return StoredEvent(event_id, 2, status, opt, "why", start, start + timedelta(hours=hours),
                       42.5, (req(10), req(target=30)), [{"signal_name": "SIMPLE",
                                                            "at": start}], NOW)


def test_store_round_trips_events_and_lists_only_live_ones_after_reopening(tmp_path):
    path = tmp_path / "state" / "openadr.sqlite"
    store = EventStore(path)
    store.put(stored("in"), NOW)
    store.put(stored("out", opt="optOut"), NOW)
    store.put(stored("cancelled"), NOW)
    store.set_status("cancelled", "cancelled", NOW)
    store.put(stored("over", hours=-0.5), NOW)
    store.close()
    again = EventStore(path)
    assert [e.id for e in again.live(NOW)] == ["in"]
    ev = again.get("in")
    assert ev.modification == 2 and ev.baseline_kw == 42.5 and ev.opt == "optIn"
    assert ev.requests[0].kw == 10 and math.isnan(ev.requests[0].target_kw)
    assert ev.requests[1].target_kw == 30 and math.isnan(ev.requests[1].kw)
    assert ev.start == NOW and ev.signals == [{"signal_name": "SIMPLE", "at": NOW.isoformat()}]
    assert again.get("cancelled").status == "cancelled" and again.get("nope") is None
    again.close()


def test_store_forgets_only_ended_events_older_than_the_cut(tmp_path):
    store = EventStore(tmp_path / "openadr.sqlite")
    store.put(stored("done"), NOW)
    store.set_status("done", "completed", NOW)
    store.put(stored("running"), NOW)  # ended long ago on paper, but never completed
    assert store.prune(NOW + timedelta(days=60)) == 1
    assert store.get("done") is None and store.get("running") is not None
    assert store.prune(NOW) == 0
    store.close()


# -- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("section", "message"), [
    ({"vtn_url": "vtn:8080"}, "openadr.vtn_url"),
    ({"vtn_url": "http://v/", "cert_file": "c.pem"}, "give cert_file and key_file together"),
    ({"vtn_url": "http://v/", "cert_file": "c.pem", "key_file": "k.pem"}, "give ca_file too"),
    ({"report_interval_s": 7}, "report_interval_s must divide a minute"),
    ({"simple_levels_kw": {2: 30}}, "missing [1, 3]"),
    ({"simple_levels_kw": {4: 30}}, "simple_levels_kw[4].[key]: must be one of 1, 2 or 3"),
])
def test_bad_openadr_config_names_the_field_and_the_fix(section, message):
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    data["openadr"] = section
    with pytest.raises(config_mod.ConfigError) as err:
        config_mod.parse(data)
    assert any(message in p for p in err.value.problems), err.value.problems

"""The simulated charge point without a CSMS: the car model (SoC, taper, 1-phase cars, the
6 A rule, the ramp), the composite charging-profile limit, the charger's sessions stepped in
simulated time, its `sim:` settings refused with clear errors, and its draw at the PCC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from conftest import free_port
from pydantic import ValidationError

from edge.app.clock import Clock
from edge.config import parse
from hil.config import SimParams, problems
from hil.devices import simulator_for
from hil.devices.base import Env
from hil.devices.car import Car
from hil.devices.chargingprofiles import Profile, ProfileRejected, ProfileStore, Tx
from hil.devices.evcharger import EvChargerSim
from hil.site import SimSite

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 6, 22, 7, 55, tzinfo=TZ)
V = 230.0


def car(**kw) -> Car:
    return Car(**{"capacity_kwh": 60.0, "soc_pct": 20.0, "max_a": 32.0, "phases": 3,
                  "ramp_s": 0.0, **kw})


def run(c: Car, offer_a: float, seconds: int, phases: int = 3) -> float:
    """Step a car `seconds` at `offer_a`; the mean kW."""
    kwh = sum(c.step(offer_a, 1.0, V, phases) for _ in range(seconds)) / 3600
    return kwh * 3600 / seconds


# -- the car ------------------------------------------------------------------------------
def test_soc_rises_with_the_energy_the_car_takes() -> None:
    c = car()
    kw = run(c, 32, 3600)
    assert kw == pytest.approx(32 * V * 3 / 1000)
    assert c.energy_kwh == pytest.approx(kw)
    assert c.soc_pct == pytest.approx(20 + kw / 60 * 100)


def test_car_tapers_near_full_and_stops_at_100_percent() -> None:
    c = car(soc_pct=70.0, capacity_kwh=20.0)
    assert run(c, 32, 60) == pytest.approx(22.08, rel=1e-3)  # below the taper: full power
    c.soc_pct = 90.0
    assert c.taper_a() == pytest.approx(16.0)  # half way from 80 % to 100 %: half the current
    c.step(32, 1.0, V, 3)
    assert c.amps == pytest.approx(16.0)
    run(c, 32, 60)
    assert c.amps < 16.0
    run(c, 32, 4 * 3600)
    assert c.soc_pct == 100.0 and c.amps == 0.0 and c.full
    assert c.step(32, 1.0, V, 3) == 0.0


def test_one_phase_car_draws_on_one_phase_of_a_three_phase_charger() -> None:
    c = car(phases=1)
    assert run(c, 32, 60) == pytest.approx(32 * V / 1000)
    assert c.phases_used(3) == 1


@pytest.mark.parametrize("offer, normal_a, ignoring_a", [(0, 0, 0), (3, 0, 6), (6, 6, 6), (10, 10, 10)])
def test_below_the_minimum_a_car_stops_unless_it_ignores_the_limit(offer, normal_a, ignoring_a) -> None:
    normal, ignoring = car(), car(ignores_below_min=True)
    run(normal, offer, 10)
    run(ignoring, offer, 10)
    assert normal.amps == normal_a
    assert ignoring.amps == ignoring_a


def test_car_follows_a_new_limit_over_its_ramp() -> None:
    c = car(ramp_s=4.0)
    run(c, 32, 10)
    assert c.amps == 32
    c.step(16, 1.0, V, 3)
    assert c.amps == pytest.approx(28)  # a quarter of the way after 1 s of 4
    run(c, 16, 3)
    assert c.amps == 16


# -- the charging profiles ----------------------------------------------------------------
def profile(purpose="TxDefaultProfile", amps=10.0, stack=0, connector=0, pid=1, unit="A",
            duration=None, start=None, kind="Absolute", tx=None) -> Profile:
    sched = {"charging_rate_unit": unit, "duration": duration,
             "start_schedule": start.isoformat() if start else None,
             "charging_schedule_period": [{"start_period": 0, "limit": amps}]}
    return Profile.parse(connector, {
        "charging_profile_id": pid, "stack_level": stack, "charging_profile_purpose": purpose,
        "charging_profile_kind": kind, "charging_schedule": sched, "transaction_id": tx}, T0)


def store(**kw) -> ProfileStore:
    return ProfileStore(1, 8, kw.get("rejects_tx_default", False))


def test_highest_stack_level_wins_and_lapses_to_the_one_beneath() -> None:
    s = store()
    s.install(profile(amps=6, stack=0, pid=1, kind="Relative"), None)  # the fail-safe
    s.install(profile(amps=16, stack=1, pid=2, duration=300, start=T0), None)
    assert s.limit_a(1, T0 + timedelta(seconds=299), None, 32, V, 3) == 16
    assert s.limit_a(1, T0 + timedelta(seconds=300), None, 32, V, 3) == 6
    assert s.limit_a(1, T0 - timedelta(seconds=1), None, 32, V, 3) == 6  # not yet started


def test_tx_profile_beats_tx_default_during_its_transaction_and_max_caps_both() -> None:
    s = store()
    tx = Tx("42", T0)
    s.install(profile(amps=10, pid=1), None)
    s.install(profile("TxProfile", amps=20, connector=1, pid=2, tx="42"), tx)
    assert s.limit_a(1, T0, tx, 32, V, 3) == 20
    assert s.limit_a(1, T0, None, 32, V, 3) == 10  # no transaction: the default
    s.install(profile("ChargePointMaxProfile", amps=16, pid=3), None)
    assert s.limit_a(1, T0, tx, 32, V, 3) == 16
    s.end_transaction(1)
    assert s.limit_a(1, T0, tx, 32, V, 3) == 10


def test_power_limits_are_turned_into_amps_per_phase() -> None:
    s = store()
    s.install(profile(unit="W", amps=6900), None)
    assert s.limit_a(1, T0, None, 32, V, 3) == pytest.approx(10)


def test_relative_profile_runs_from_the_transaction_start() -> None:
    s = store()
    s.install(profile(amps=16, kind="Relative", duration=600, stack=1), None)
    tx = Tx("1", T0)
    assert s.limit_a(1, T0 + timedelta(seconds=599), tx, 32, V, 3) == 16
    assert s.limit_a(1, T0 + timedelta(seconds=600), tx, 32, V, 3) == 32  # lapsed: no other


@pytest.mark.parametrize("prof, tx, why", [
    (dict(purpose="TxProfile", connector=1), None, "needs a transaction"),
    (dict(purpose="TxProfile", connector=1, tx="7"), Tx("8", T0), "not running"),
    (dict(purpose="ChargePointMaxProfile", connector=1), None, "connector 0"),
    (dict(stack=9), None, "stack level"),
    (dict(connector=2), None, "no connector"),
])
def test_profiles_a_charge_point_refuses(prof, tx, why) -> None:
    with pytest.raises(ProfileRejected, match=why):
        store().install(profile(**prof), tx)


def test_rejects_tx_default_refuses_only_the_default() -> None:
    s = store(rejects_tx_default=True)
    with pytest.raises(ProfileRejected, match="TxDefaultProfile"):
        s.install(profile(), None)
    s.install(profile("TxProfile", connector=1), Tx("1", T0))


# -- the charger, stepped ------------------------------------------------------------------
def charger(**sim) -> EvChargerSim:
    cfg = parse(site_dict(free_port(), **sim))
    dev = next(d for d in cfg.devices if d.role == "ev_charger")
    return EvChargerSim(dev, 0.0)


def site_dict(ocpp_port: int, **sim) -> dict:
    arrivals = sim.pop("arrivals", [{"arrive": "08:00", "depart": "17:00", "capacity_kwh": 60,
                                     "soc_pct": 20, "reports_soc": True}])
    return {
        "site": {"id": "ev", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pcc", "role": "meter", "measures": "grid", "host": "127.0.0.1",
             "port": free_port(), "sim": {"profile": "flat", "base_kw": 20, "day_kw": 20}},
            {"id": "ev1", "role": "ev_charger", "charge_point_id": "CP1", "max_current_a": 32,
             "sim": {"arrivals": arrivals, **sim}},
        ],
        "ocpp": {"port": ocpp_port},
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
    }


def advance(dev: EvChargerSim, start_s: float, end_s: float) -> None:
    t = start_s
    while t < end_s:
        utc = (T0 + timedelta(seconds=t)).astimezone(UTC)
        dev.step(Env(t, utc, utc.astimezone(TZ), 31.2, 121.5), 1.0)
        t += 1


def test_arrival_starts_a_session_and_departure_ends_it() -> None:
    dev = charger()
    advance(dev, 0, 600)  # 07:55 - 08:05: the car came at 08:00
    kinds = [e.kind for e in dev.outbox]
    assert kinds[:4] == ["status", "authorize", "start", "status"]
    assert dev.state()["status"] == "Charging" and dev.transactions == 1
    assert dev.power_kw == pytest.approx(22.08)
    assert kinds.count("meter") == 5  # one a minute
    advance(dev, 600, 9 * 3600 + 600)  # past 17:00
    assert [e.kind for e in dev.outbox][-2:] == ["stop", "status"]
    assert dev.state()["status"] == "Available" and dev.power_kw == 0


def test_limit_below_the_minimum_pauses_the_car_unless_it_ignores_it() -> None:
    normal, ignoring = charger(), charger(ignores_below_min=True)
    for dev in (normal, ignoring):
        advance(dev, 0, 400)
        assert dev.set_profile(0, {
            "charging_profile_id": 1, "stack_level": 0,
            "charging_profile_purpose": "TxDefaultProfile", "charging_profile_kind": "Relative",
            "charging_schedule": {"charging_rate_unit": "A", "charging_schedule_period": [
                {"start_period": 0, "limit": 3}]}}) == "Accepted"
        advance(dev, 400, 500)
        assert dev.state()["limit_a"] == 3
        assert dev.received[-1]["t_s"] == 399 and dev.limits[-1] == (400, 1, 3)
    assert normal.power_kw == 0 and normal.state()["status"] == "SuspendedEVSE"
    assert ignoring.power_kw == pytest.approx(6 * V * 3 / 1000)


def test_two_connectors_charge_two_cars_and_a_default_on_connector_0_limits_both() -> None:
    data = site_dict(free_port(), arrivals=[
        {"arrive": "08:00", "depart": "12:00"}, {"arrive": "08:02", "depart": "12:00", "connector": 2}])
    data["devices"][1]["connectors"] = 2
    dev = EvChargerSim(parse(data).devices[1], 0.0)
    advance(dev, 0, 600)
    assert dev.power_kw == pytest.approx(2 * 22.08)
    assert [c["status"] for c in dev.state()["by_connector"]] == ["Charging", "Charging"]
    dev.set_profile(0, {"charging_profile_id": 1, "stack_level": 0,
                        "charging_profile_purpose": "TxDefaultProfile",
                        "charging_profile_kind": "Relative", "charging_schedule": {
                            "charging_rate_unit": "A",
                            "charging_schedule_period": [{"start_period": 0, "limit": 10}]}})
    advance(dev, 600, 700)
    assert dev.power_kw == pytest.approx(2 * 6.9)
    assert dev.transactions == 2


def test_arrivals_repeat_every_day_and_overnight_stays_wrap() -> None:
    dev = charger(arrivals=[{"arrive": "22:00", "depart": "06:00"}])
    advance(dev, 0, 3600)
    assert dev.transactions == 0
    advance(dev, 3600, 2 * 86400)  # two nights
    assert dev.transactions == 2


def test_drops_at_asks_the_client_to_drop_the_connection() -> None:
    dev = charger(drops_at=["08:00"], offline_s=120)
    advance(dev, 0, 299)
    assert not dev.drop_requested
    advance(dev, 299, 301)
    assert dev.drop_requested and not dev.may_connect()
    advance(dev, 301, 301 + 120)
    assert dev.may_connect()


# -- settings ------------------------------------------------------------------------------
@pytest.mark.parametrize("sim, where", [
    ({"arrivals": [{"arrive": 450, "depart": "17:00"}]}, "quoted 'HH:MM'"),
    ({"drops_at": ["24:10"]}, "drops_at.0"),
    ({"arrivals": [{"arrive": "08:00", "depart": "08:00"}]}, "depart must differ"),
    ({"arrivals": [{"arrive": "07:00", "depart": "12:00"}, {"arrive": "11:00", "depart": "13:00"}]},
     "overlaps arrivals"),
    ({"ocpp_version": "2.0"}, "ocpp_version"),
    ({"arrivals": [{"arrive": "08:00", "depart": "09:00", "car_phases": 2}]}, "car_phases"),
])
def test_bad_charger_settings_are_refused_naming_the_field(sim, where) -> None:
    with pytest.raises(ValidationError, match=where):
        SimParams.model_validate(sim)
    data = site_dict(free_port())
    data["devices"][1]["sim"] = sim
    found = problems(parse(data))
    assert found and found[0].startswith("devices[1].sim")


def test_car_on_a_connector_the_charger_lacks_is_refused() -> None:
    data = site_dict(free_port(), arrivals=[{"arrive": "08:00", "depart": "09:00", "connector": 2}])
    assert problems(parse(data)) == [
        "devices[1].sim.arrivals[0].connector: 2, but the device has 1 connector(s)"]
    data["devices"][1]["connectors"] = 2
    assert problems(parse(data)) == []


def test_charger_is_simulated_as_an_ocpp_client() -> None:
    cfg = parse(site_dict(free_port()))
    assert simulator_for(cfg.devices[1]) is EvChargerSim and EvChargerSim.connects_out


# -- the site --------------------------------------------------------------------------------
def test_site_counts_the_chargers_power_at_the_pcc() -> None:
    site = SimSite(parse(site_dict(free_port())), Clock(T0, 1.0))
    site.step_to(240)  # 07:59: no car yet
    assert site.last.grid_kw == pytest.approx(20.0, abs=0.5)
    site.step_to(600)
    ev = site.state("ev1")["power_kw"]
    assert ev == pytest.approx(22.08)
    assert site.last.load_kw == pytest.approx(20.0 + ev, abs=0.5)
    assert site.last.grid_kw == pytest.approx(site.last.load_kw)
    assert site.devices["pcc"].power_kw == pytest.approx(site.last.grid_kw)

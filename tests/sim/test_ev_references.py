"""The car park in the offline references (tools/simulate): the replay's chargers and cars
(evpark.py) behave as the HIL's charge points and the OCPP driver report them, uncontrolled
charging breaks an import limit the rules hold, the perfect-foresight LP charges no car
before it arrives, and the EV figures (evkpis.py) add up."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from drivers.base import CHARGER_STATUS
from edge.config import load, parse
from hil.devices.car import Car
from hil.scenario import Truth
from tools.simulate.evkpis import (
    EvLedger,
    Outcome,
    ev_kpis,
    need_kwh,
    true_sessions,
)
from tools.simulate.evpark import Charger, EvPark, chargers_of
from tools.simulate.references import demands_of, solve_with_arrivals
from tools.simulate.replay import replay_rules
from tools.simulate.run import isolated
from tools.simulate.tracks import Excess

TZ = ZoneInfo("Asia/Shanghai")
DAY = datetime(2026, 7, 1, tzinfo=TZ)
T0 = DAY.astimezone(UTC)
CAR_PARK = "configs/workplace_car_park.yaml"


def site(chargers: list[dict], limit: float = 60.0, periods=None):
    """A PCC meter and the given chargers (each with its `sim` arrivals)."""
    periods = periods or [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]
    return parse({
        "site": {"id": "s", "timezone": "Asia/Shanghai"},
        "devices": [{"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
                    *({"role": "ev_charger", "charge_point_id": f"CP-{c['id']}",
                       "max_current_a": 32, **c} for c in chargers)],
        "control": {"import_limit_kw": limit, "cycle_s": 2.0},
        "tariff": {"periods": periods},
    })


def stay(arrive: str, depart: str, **car) -> dict:
    return {"arrive": arrive, "depart": depart, "capacity_kwh": 60, "soc_pct": 30, **car}


def one_charger(uncontrolled=False, **charger) -> Charger:
    sim = charger.pop("sim", {"arrivals": [stay("08:00", "10:00")]})
    cfg = site([{"id": "ev1", "sim": sim, **charger}])
    return Charger(chargers_of(cfg)[0], uncontrolled)


def at(hhmm: str) -> datetime:
    h, m = map(int, hhmm.split(":"))
    return (DAY + timedelta(hours=h, minutes=m)).astimezone(UTC)


def run_for(c: Charger, start: str, seconds: int, want: float | None = None,
            now_s: float = 0.0) -> None:
    t = at(start)
    for k in range(seconds):
        c.presence(t + timedelta(seconds=k), (t + timedelta(seconds=k)).astimezone(TZ))
        if want is not None:
            c.wanted = want
        c.send(now_s + k)
        c.step(1.0)


# -- the replay's chargers ------------------------------------------------------------------
def test_a_car_plugs_in_at_its_arrival_and_its_session_ends_when_it_leaves() -> None:
    c = one_charger()
    run_for(c, "07:59", 30)
    v = c.values(0.0)
    assert v["connected"] == 0 and v["session"] == 0 and math.isnan(v["session_start_s"])
    assert CHARGER_STATUS[int(v["status"])] == "Available"
    run_for(c, "08:00", 30)
    v = c.values(0.0)
    assert v["connected"] == v["charging"] == 1 and v["session"] == 1
    assert v["session_start_s"] == at("08:00").timestamp()
    run_for(c, "10:00", 1)
    assert c.values(0.0)["session"] == 0 and c.values(0.0)["power_kw"] == 0


def test_before_any_limit_the_car_draws_the_chargers_fail_safe_current() -> None:
    c = one_charger()
    run_for(c, "08:00", 10)
    v = c.values(0.0)
    assert math.isnan(v["offered_a"])
    assert v["current_a"] == pytest.approx(6.0)  # min_current_a: the fail-safe default
    assert v["power_kw"] == pytest.approx(6 * 230 * 3 / 1000)


def test_the_car_draws_the_limit_on_the_phases_its_charger_uses() -> None:
    c = one_charger(sim={"arrivals": [stay("08:00", "10:00", car_phases=1)]})
    run_for(c, "08:00", 20, want=16.0)
    v = c.values(0.0)
    assert v["offered_a"] == 16 and v["current_a"] == pytest.approx(16)
    assert (v["l1_a"], v["l2_a"], v["l3_a"]) == (pytest.approx(16), 0.0, 0.0)
    assert v["power_kw"] == pytest.approx(16 * 230 / 1000)
    assert v["session_kwh"] == pytest.approx(c.plugs[0].car.energy_kwh)
    assert v["session_kwh"] > 0 and CHARGER_STATUS[int(v["status"])] == "Charging"


def test_the_limit_in_force_follows_the_drivers_writer_rules() -> None:
    c = one_charger(deadband_a=1.0, min_interval_s=10.0)
    c.presence(at("08:00"), at("08:00").astimezone(TZ))
    c.wanted = 16.0
    c.send(0.0)
    assert c.offered == 16.0  # the first limit goes at once
    c.wanted = 16.5
    c.send(20.0)
    assert c.offered == 16.0  # inside the deadband
    c.wanted = 10.0
    c.send(21.0)
    assert c.offered == 10.0  # a cut goes at once
    c.wanted = 20.0
    c.send(25.0)
    assert c.offered == 10.0  # a raise waits min_interval_s after the last change
    c.send(31.0)
    assert c.offered == 20.0
    wide = one_charger(deadband_a=10.0)
    wide.wanted = 6.0
    wide.send(0.0)
    wide.wanted = 0.0
    wide.send(100.0)
    assert wide.offered == 0.0  # a pause is sent whatever the deadband


def test_only_a_car_that_tells_its_soc_has_one_in_the_reading() -> None:
    quiet = one_charger()
    telling = one_charger(sim={"arrivals": [stay("08:00", "10:00", reports_soc=True)]})
    for c in (quiet, telling):
        run_for(c, "08:00", 5)
    assert math.isnan(quiet.values(0.0)["soc_pct"])
    assert telling.values(0.0)["soc_pct"] == pytest.approx(telling.plugs[0].car.soc_pct)


def test_uncontrolled_the_car_takes_the_chargers_maximum_until_it_is_full() -> None:
    c = one_charger(uncontrolled=True,
                    sim={"arrivals": [stay("08:00", "10:00", capacity_kwh=10, soc_pct=95)]})
    run_for(c, "08:00", 5, want=6.0)  # a controller's wish changes nothing
    assert c.values(0.0)["offered_a"] == 32.0 and c.values(0.0)["current_a"] > 6.0
    run_for(c, "08:00", 3600)
    car = c.plugs[0].car
    assert car.full and c.values(0.0)["power_kw"] == 0
    assert car.energy_kwh == pytest.approx(0.5, abs=1e-6)


# -- replayed with the rules, and left alone --------------------------------------------------
def test_uncontrolled_cars_break_the_import_limit_that_the_replayed_rules_hold() -> None:
    big = {"capacity_kwh": 100}  # no taper in these two hours
    cfg = site([{"id": "ev1", "sim": {"arrivals": [stay("00:15", "01:45", **big)]}},
                {"id": "ev2", "sim": {"arrivals": [stay("00:30", "01:30", car_phases=1,
                                                        **big)]}}], limit=45)
    truth = Truth(T0, 900, np.zeros(8), np.full(8, 30.0), cfg.tariff, TZ, [])
    rules = replay_rules(cfg, truth, 7200, [], {})
    free = replay_rules(cfg, truth, 7200, [], {}, uncontrolled=True)
    both_kw = (32 * 230 * 3 + 32 * 230) / 1000
    assert free["import_worst_kw"] == pytest.approx(30 + both_kw - 45, abs=0.5)
    assert free["import_over_min"] == pytest.approx(90, abs=1)  # while any car charges
    assert free["ev_kwh"] == pytest.approx(22.08 * 1.5 + 7.36 * 1.0, rel=0.01)
    assert rules["import_over_min"] < 0.5 and rules["import_worst_kw"] < 1.0
    assert 0 < rules["ev_kwh"] < free["ev_kwh"]
    assert rules["ev_sessions"] == free["ev_sessions"] == 2
    assert free["total_cost"] > rules["total_cost"]


# -- perfect foresight -------------------------------------------------------------------------
def test_the_optimum_charges_no_car_before_it_arrives_and_meets_each_need() -> None:
    night = [{"name": "valley", "start": "00:00", "end": "06:00", "price": 0.3},
             {"name": "day", "start": "06:00", "end": "00:00", "price": 1.0}]
    cfg = site([{"id": "ev1", "sim": {"arrivals": [stay("08:00", "12:00")]}},
                {"id": "ev2", "sim": {"arrivals": [stay("10:00", "14:00", reports_soc=True)]}}],
               limit=100, periods=night)
    from edge.plan.model import build_input

    end = T0 + timedelta(hours=12)
    sessions = true_sessions(cfg, T0, end)
    assert [s.device.id for s in sessions] == ["ev1", "ev2"]
    inp = build_input(cfg, T0, 900, np.full(48, 10.0), np.zeros(48), {},
                      demands=demands_of(sessions, end))
    plan = solve_with_arrivals(inp, {s.id: s.arrives for s in sessions}, 10.0)
    first, second = (plan.demand_kw[s.id] for s in sessions)
    assert not first[:32].any() and not second[:40].any()  # nothing before 08:00 / 10:00
    assert first.sum() * 0.25 == pytest.approx(need_kwh(sessions[0].device, sessions[0].arrival))
    # 30 -> 80 % of 60 kWh, half of it: half of its stay lies inside the run
    assert second.sum() * 0.25 == pytest.approx(0.5 * 30)


# -- the figures -----------------------------------------------------------------------------
def test_the_need_is_the_energy_to_the_target_capped_by_the_default_for_a_silent_car() -> None:
    dev = chargers_of(site([{"id": "ev1", "target_soc_pct": 80, "default_energy_kwh": 20}]))[0]
    from hil.config import Arrival

    assert need_kwh(dev, Arrival(arrive="08:00", depart="17:00", capacity_kwh=77, soc_pct=35,
                                 reports_soc=True)) == pytest.approx(34.65)
    assert need_kwh(dev, Arrival(arrive="08:00", depart="17:00", capacity_kwh=60,
                                 soc_pct=30)) == 20.0
    assert need_kwh(dev, Arrival(arrive="08:00", depart="17:00", capacity_kwh=18,
                                 soc_pct=10)) == pytest.approx(12.6)
    assert need_kwh(dev, Arrival(arrive="08:00", depart="17:00", soc_pct=90)) == 0.0


def outcome(need, delivered, soc=None, done=True) -> Outcome:
    return Outcome("ev1", 1, T0, T0 + timedelta(hours=2), need, delivered, soc, 80.0, done)


def test_departures_met_count_the_sessions_that_left_and_the_figures_add_up() -> None:
    imports = Excess()
    for kw in (0.05, 5.0, 12.0, 0.0, 3.0):  # one reading within noise, two episodes
        imports.add(kw, 60.0)
    outcomes = [outcome(20, 19.98), outcome(20, 12, soc=80.0), outcome(20, 12, soc=70.0),
                outcome(20, 5, done=False)]
    k = ev_kpis(100.0, 25.0, outcomes, imports)
    assert k["ev_valley_share_pct"] == 25.0
    assert (k["ev_sessions"], k["ev_sessions_met"], k["ev_sessions_open"]) == (3, 2, 1)
    assert k["ev_short_kwh"] == pytest.approx(8.0)
    assert k["import_over_min"] == 3.0 and k["import_worst_kw"] == 12.0
    assert k["import_over_count"] == 2
    assert k["import_over_kwh"] == pytest.approx((5 + 12 + 3) / 60)
    assert ev_kpis(0.0, 0.0, [], Excess())["ev_valley_share_pct"] is None


def test_the_ledger_books_energy_in_the_cheapest_period_and_follows_each_car() -> None:
    periods = [{"name": "valley", "start": "11:00", "end": "14:00", "price": 0.3},
               {"name": "peak", "start": "14:00", "end": "11:00", "price": 1.1}]
    cfg = site([{"id": "ev1", "sim": {"arrivals": [stay("10:00", "12:00")]}}], periods=periods)
    dev = chargers_of(cfg)[0]
    ledger = EvLedger(cfg, at("13:00"))
    car = Car(60.0, 30.0, 32.0, 3)
    plug = SimpleNamespace(number=1, stay=(0, DAY.date()), car=car, power_kw=10.0)
    t = at("10:30")
    for k in range(3600):  # 10:30 - 11:30 at 10 kW: half of it in the valley
        car.energy_kwh += 10.0 / 3600
        ledger.see(t + timedelta(seconds=k), 1.0, [(dev, [plug])])
    assert ledger.kwh == pytest.approx(10.0) and ledger.valley_kwh == pytest.approx(5.0)
    (o,) = ledger.outcomes()
    assert o.arrived == at("10:30") and o.departs == at("12:00") and o.done
    assert o.delivered_kwh == pytest.approx(10.0) and not o.met  # needs 20 kWh


def test_true_sessions_cover_the_run_with_a_stay_past_midnight_cut_at_the_start() -> None:
    cfg = site([{"id": "ev1", "sim": {"arrivals": [stay("22:00", "06:00"),
                                                   stay("08:00", "17:00")]}}])
    got = [(s.arrives.astimezone(TZ).strftime("%d %H:%M"), s.departs.astimezone(TZ)
            .strftime("%d %H:%M")) for s in true_sessions(cfg, T0, T0 + timedelta(days=1))]
    assert got == [("01 00:00", "01 06:00"), ("01 08:00", "01 17:00"), ("01 22:00", "02 06:00")]


# -- the run's ports -------------------------------------------------------------------------
def test_isolated_moves_the_csms_to_a_free_port_and_leaves_the_charge_points_be() -> None:
    cfg = load(CAR_PARK)
    iso = isolated(cfg)
    assert iso.ocpp.host == "127.0.0.1" and iso.ocpp.port != cfg.ocpp.port
    ports = [d.port for d in iso.devices if d.port is not None]
    assert iso.ocpp.port not in ports and len(set(ports)) == len(ports)
    assert all(d.host is None and d.port is None for d in chargers_of(iso))
    assert EvPark(chargers_of(iso), TZ).values(0.0).keys() == {d.id for d in chargers_of(iso)}

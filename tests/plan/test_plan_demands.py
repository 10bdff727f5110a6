"""Energy demands (EV sessions) in the planning LP: the energy goes into the cheapest hours
before the departure, EV power counts in the grid balance and so under the import limit,
a demand that cannot be met is a shortfall in an adopted plan, and the home battery does not
discharge into the cars unless the site allows it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge.config import parse
from edge.plan.model import PlanBattery, PlanInput, build, build_input
from edge.plan.solve import solve
from edge.roles.role import Demand

TZ = ZoneInfo("Asia/Shanghai")
TOU = [  # the demo tariff: valley 00-08, peaks 10-15 and 18-21
    {"name": "valley", "start": "00:00", "end": "08:00", "price": 0.31},
    {"name": "flat", "start": "08:00", "end": "10:00", "price": 0.68},
    {"name": "peak", "start": "10:00", "end": "15:00", "price": 1.12},
    {"name": "flat", "start": "15:00", "end": "18:00", "price": 0.68},
    {"name": "peak", "start": "18:00", "end": "21:00", "price": 1.12},
    {"name": "flat", "start": "21:00", "end": "00:00", "price": 0.68},
]


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 6, day, hour, minute, tzinfo=TZ)


def site(import_limit=80.0, **control):
    return parse({
        "site": {"id": "s", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
            {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1503,
             "capacity_kwh": 100, "max_charge_kw": 30, "max_discharge_kw": 30},
        ],
        "control": {"import_limit_kw": import_limit, **control},
        "tariff": {"periods": TOU},
    })


def tou_input(start: datetime, hours: int, demands, load_kw=20.0, config=None,
              step_s=900) -> PlanInput:
    n = hours * 3600 // step_s
    return build_input(config or site(), start.astimezone(UTC), step_s, np.full(n, load_kw),
                       np.zeros(n), {"bess1": 50.0}, demands=demands)


def step_hours(plan, inp: PlanInput) -> np.ndarray:
    """Local hour of each step's start."""
    return np.array([(inp.start + timedelta(seconds=k * inp.step_s)).astimezone(TZ).hour
                     for k in range(inp.n)])


def energy(plan, inp: PlanInput, device: str, mask=None) -> float:
    kw = plan.demand_kw[device]
    mask = np.ones(inp.n, bool) if mask is None else mask
    return float(np.sum(kw[mask] * inp.dt_h[mask]))


def test_a_car_parked_overnight_charges_in_the_valley_hours():
    # arrives 21:00, leaves 08:00: 40 kWh at up to 11 kW fit in the 00:00-08:00 valley
    inp = tou_input(local(22, 21), 24, [Demand("ev1", 40.0, local(23, 8), 11.0)])
    plan = solve(inp)
    assert plan.status == "optimal"
    hours = step_hours(plan, inp)
    assert energy(plan, inp, "ev1") == pytest.approx(40.0, abs=1e-3)
    assert energy(plan, inp, "ev1", hours < 8) == pytest.approx(40.0, abs=1e-3)
    assert plan.demand_kwh == pytest.approx(40.0, abs=1e-3)
    assert plan.demand_valley_kwh == pytest.approx(40.0, abs=1e-3)  # a 100 % valley share
    assert plan.demand_short_kwh == {"ev1": 0.0}
    # what it pays for: the grid carries load, car and battery at every step
    np.testing.assert_allclose(plan.grid_kw, 20.0 + plan.demand_kw["ev1"] - plan.bess_kw,
                               atol=1e-6)


def test_a_car_leaving_before_the_valley_charges_in_the_cheapest_hours_it_is_there():
    # arrives 08:00, leaves 18:00; the valley comes after it has left: flat hours, no peak
    inp = tou_input(local(22, 8), 24, [Demand("ev1", 30.0, local(22, 18), 11.0)])
    plan = solve(inp)
    hours = step_hours(plan, inp)
    assert energy(plan, inp, "ev1") == pytest.approx(30.0, abs=1e-3)
    assert energy(plan, inp, "ev1", hours >= 18) == pytest.approx(0.0, abs=1e-6)  # departure
    assert energy(plan, inp, "ev1", (hours >= 10) & (hours < 15)) == pytest.approx(0, abs=1e-6)
    assert plan.demand_valley_kwh == pytest.approx(0.0, abs=1e-6)
    assert plan.demand_short_kwh == {"ev1": 0.0}


def test_the_valley_share_counts_the_tariffs_valley_not_the_horizons_cheapest_hours():
    inp = tou_input(local(22, 8), 6, [Demand("ev1", 11.0, local(22, 10), 11.0)])
    plan = solve(inp)  # 08:00-10:00 is the cheapest this horizon has, but it is flat
    assert plan.demand_kwh == pytest.approx(11.0, abs=1e-3)
    assert plan.demand_valley_kwh == 0.0


def test_a_deadline_inside_a_step_allows_only_that_share_of_the_step():
    # 15-min steps, leaves at 08:05: the 08:00 step allows a third of 11 kW
    inp = tou_input(local(22, 7), 4, [Demand("ev1", 50.0, local(22, 8, 5), 11.0)])
    plan = solve(inp)
    kw = plan.demand_kw["ev1"]
    assert kw[4] == pytest.approx(11.0 / 3)
    assert kw[5:].max() == 0.0
    assert plan.demand_short_kwh["ev1"] == pytest.approx(50.0 - 11.0 * (1 + 5 / 60), abs=1e-3)


def test_the_import_limit_holds_with_the_cars_in_the_balance():
    # 40 kW limit, 30 kW of building: 10 kW for two 11 kW cars, whatever the price
    inp = tou_input(local(22, 1), 3, [Demand("ev1", 30.0, local(22, 4), 11.0),
                                      Demand("ev2", 30.0, local(22, 4), 11.0)],
                    load_kw=30.0, config=site(import_limit=40.0))
    inp = replace(inp, batteries=())  # nothing to cover the cars with
    plan = solve(inp)
    assert plan.status == "optimal"
    assert plan.grid_kw.max() <= 40.0 + 1e-6
    total = plan.demand_kw["ev1"] + plan.demand_kw["ev2"]
    np.testing.assert_allclose(total, 10.0, atol=1e-6)
    assert sum(plan.demand_short_kwh.values()) == pytest.approx(60.0 - 30.0, abs=1e-3)
    assert "short by" in plan.reason


def test_an_impossible_demand_is_a_shortfall_in_an_adopted_plan():
    # 100 kWh in one hour at 11 kW: 89 kWh cannot be had
    inp = tou_input(local(22, 2), 6, [Demand("ev1", 100.0, local(22, 3), 11.0)])
    plan = solve(inp)
    assert plan.status == "optimal"
    assert energy(plan, inp, "ev1") == pytest.approx(11.0, abs=1e-3)
    assert plan.demand_short_kwh["ev1"] == pytest.approx(89.0, abs=1e-3)
    assert "demand ev1 short by 89.0 of 100.0 kWh" in plan.reason


def test_a_car_past_its_departure_is_planned_flat_out_from_now():
    inp = tou_input(local(22, 12), 4, [Demand("ev1", 11.0, local(22, 11), 11.0)])
    plan = solve(inp)
    np.testing.assert_allclose(plan.demand_kw["ev1"][:4], 11.0, atol=1e-6)  # peak or not
    assert plan.demand_kw["ev1"][4:].max() == 0.0
    assert "past its deadline" in plan.reason


def hourly(price, load, pv, demands, from_battery: bool) -> PlanInput:
    n = len(price)
    t0 = datetime(2026, 6, 22, tzinfo=UTC)
    bat = PlanBattery("b1", 100.0, 50.0, 0.0, 100.0, 50.0, 50.0, 1.0, 1.0)
    return PlanInput(t0, 3600, np.asarray(load, float), np.asarray(pv, float),
                     np.asarray(price, float), np.zeros(n), (bat,), demands=demands,
                     demand_from_battery=from_battery)


def test_the_battery_does_not_discharge_into_the_cars_unless_allowed():
    # Dear now, cheap later: the battery discharges now and recharges later. The car must
    # charge now (it leaves in two hours).
    t0 = datetime(2026, 6, 22, tzinfo=UTC)
    car = (Demand("ev1", 22.0, t0 + timedelta(hours=2), 11.0),)
    price, load, pv = [1.0, 1.0, 0.2, 0.2], [10, 10, 10, 10], [0, 0, 0, 0]
    kept = solve(hourly(price, load, pv, car, from_battery=False))
    np.testing.assert_allclose(kept.demand_kw["ev1"][:2], 11.0, atol=1e-6)
    np.testing.assert_allclose(kept.bess_kw[:2], 10.0, atol=1e-6)  # the building's load only
    np.testing.assert_allclose(kept.grid_kw[:2], 11.0, atol=1e-6)  # the car from the grid
    allowed = solve(hourly(price, load, pv, car, from_battery=True))
    np.testing.assert_allclose(allowed.bess_kw[:2], 21.0, atol=1e-6)
    np.testing.assert_allclose(allowed.grid_kw[:2], 0.0, atol=1e-6)
    assert allowed.objective < kept.objective


def test_a_car_may_take_the_pv_surplus_when_the_battery_may_not_feed_it():
    t0 = datetime(2026, 6, 22, tzinfo=UTC)
    car = (Demand("ev1", 11.0, t0 + timedelta(hours=1), 11.0),)
    # 15 kW of PV over 10 kW of load: 5 kW of surplus for the car, 6 kW from the grid
    plan = solve(hourly([1.0, 0.2], [10, 10], [15, 0], car, from_battery=False))
    assert plan.demand_kw["ev1"][0] == pytest.approx(11.0)
    assert plan.grid_kw[0] == pytest.approx(6.0)
    assert plan.bess_kw[0] == pytest.approx(0.0, abs=1e-6)


def test_a_site_without_demands_plans_as_before():
    inp = tou_input(local(22, 21), 24, [])
    plan = solve(inp)
    assert plan.demand_kw == {} and plan.demand_kwh == 0.0 and plan.demand_short_kwh == {}
    lp = build(inp)
    assert not {"dem", "dem_short", "dem_energy", "dem_source"} & (set(lp.cols) | set(lp.rows))

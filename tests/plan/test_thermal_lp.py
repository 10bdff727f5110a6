"""The LP with thermal states: a zone kept in its comfort band at every step, HVAC power as a
decision, a tank's SoC. Pre-cooling before a critical-peak price or a DR window must come
out of the optimisation, not from a rule."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from edge.plan.model import PlanInput
from edge.plan.solve import solve
from edge.plan.thermal import PlanTank, PlanZone
from edge.roles.zone import Rc

START = datetime(2026, 7, 1, 0, tzinfo=UTC)  # hours below are of this clock
N, STEP = 96, 900
HOURS = np.arange(N) * 0.25
R, C, RATED = 2.5, 12.0, 20.0


def zone(t0=24.0, lo=22.0, hi=26.0) -> PlanZone:
    t_out = 31 - 5 * np.cos(np.pi * (HOURS - 5) / 10)
    gains = np.where((HOURS >= 8) & (HOURS < 19), 8.0, 1.0)
    return PlanZone("ahu", RATED, R, C, t0, t_out, gains, np.full(N, 3.0),
                    np.full(N, lo), np.full(N, hi))


def inp(prices, zones=(), tanks=(), grid_max=None) -> PlanInput:
    return PlanInput(START, STEP, np.full(N, 30.0), np.zeros(N), prices, np.zeros(N), (),
                     grid_max_kw=grid_max, zones=zones, tanks=tanks)


PEAK = (HOURS >= 14) & (HOURS < 16)
CPP = np.where(PEAK, 5.0, 1.0)  # critical peak at five times the price


def test_the_zone_stays_in_band_and_its_temperature_follows_the_rc_model():
    plan = solve(inp(np.ones(N), (zone(),)))
    t = plan.zone_c["ahu"]
    assert plan.comfort_violation_kh == pytest.approx(0.0, abs=1e-6)
    assert t[1:].min() >= 22 - 1e-6 and t[1:].max() <= 26 + 1e-6
    z, p = zone(), plan.thermal_kw["ahu"]
    rc = Rc(R, C)
    for k in range(N):  # every step is the exact RC step of the role's model
        expect = rc.step(t[k], 0.25, z.t_out_c[k], z.gains_kw[k], 3.0 * p[k])
        assert t[k + 1] == pytest.approx(expect, abs=1e-5)
    # The HVAC's power is in the grid: 30 kW of building plus the plant.
    assert np.allclose(plan.grid_kw, 30.0 + p, atol=1e-5)


def test_a_critical_peak_makes_the_plan_precool_and_coast_through_it():
    flat = solve(inp(np.ones(N), (zone(),)))
    cpp = solve(inp(CPP, (zone(),)))
    before = (HOURS >= 13) & (HOURS < 14)
    assert cpp.zone_c["ahu"][1:][before].mean() < flat.zone_c["ahu"][1:][before].mean() - 0.5
    assert cpp.thermal_kw["ahu"][PEAK].mean() < 0.5 * flat.thermal_kw["ahu"][PEAK].mean()
    assert cpp.comfort_violation_kh == pytest.approx(0.0, abs=1e-6)


def test_a_dr_window_is_met_by_precooling_within_the_band():
    cap = np.where(PEAK, 32.0, np.nan)  # the building's 30 kW leave the plant 2 kW
    plan = solve(inp(np.ones(N), (zone(),), grid_max=cap))
    assert plan.commitment_short_kwh == pytest.approx(0.0, abs=1e-4)
    assert plan.grid_kw[PEAK].max() <= 32.0 + 1e-4
    assert plan.comfort_violation_kh == pytest.approx(0.0, abs=1e-6)
    assert plan.zone_c["ahu"][1:][HOURS == 13.75][0] < 25.0  # cooled ahead


def test_the_band_wins_over_a_dr_window_it_cannot_ride_out():
    cap = np.where((HOURS >= 10) & (HOURS < 18), 30.0, np.nan)  # eight hours, no plant
    plan = solve(inp(np.ones(N), (zone(),), grid_max=cap))
    assert plan.comfort_violation_kh == pytest.approx(0.0, abs=1e-4)
    assert plan.commitment_short_kwh > 0  # the plan says how much of the event it misses


def test_a_tank_charges_off_peak_and_discharges_in_the_peak():
    tank = PlanTank("tank", 300.0, 20.0, 5.0, 95.0, 30.0, 30.0, 3.0, 0.5)
    plan = solve(inp(CPP, (), (tank,)))
    kw = plan.thermal_kw["tank"]
    assert kw[PEAK].max() < -1.0  # relieving the chillers at the peak price
    assert kw[PEAK].sum() < -50.0 and kw[PEAK].max() <= 1e-6  # never charged at the peak
    assert kw[~PEAK].max() > 1.0  # recharged at the low price to end as full as it began
    assert np.allclose(plan.grid_kw, 30.0 + kw, atol=1e-5)


def test_bad_zone_input_names_the_field():
    bad = zone()
    bad = PlanZone(**{**bad.__dict__, "cop": np.full(N - 1, 3.0)})
    with pytest.raises(ValueError, match=r"zones\[ahu\].cop: expected 96 finite values"):
        solve(inp(np.ones(N), (bad,)))
    assert math.isfinite(solve(inp(np.ones(N), (zone(),))).solve_s)


def test_with_a_terminal_value_the_tank_ends_where_its_worth_per_electric_kwh_says():
    """As a battery's: the end energy is worth the value per electric kWh (thermal / COP),
    with no end >= start constraint; without a value the tank ends as full as it began."""
    tank = PlanTank("tank", 300.0, 50.0, 5.0, 95.0, 30.0, 30.0, 3.0, 0.5)
    kept = solve(inp(CPP, (), (tank,)))
    worthless = solve(replace(inp(CPP, (), (tank,)), terminal_value_per_kwh=0.0))
    dear = solve(replace(inp(CPP, (), (tank,)), terminal_value_per_kwh=2.0))
    assert kept.tank_kwh["tank"][-1] == pytest.approx(150.0, abs=1e-4)
    assert worthless.tank_kwh["tank"][-1] == pytest.approx(15.0, abs=1e-4)  # spent to its floor
    # worth 2/3 per thermal kWh, bought at 1/3 off peak: full at the end
    assert dear.tank_kwh["tank"][-1] == pytest.approx(285.0, abs=1e-4)
    e, kw = dear.tank_kwh["tank"], dear.thermal_kw["tank"]
    assert e[0] == pytest.approx(150.0)
    for k in range(N):  # the LP's own tank model: standing loss, then COP x electric kWh
        assert e[k + 1] == pytest.approx((1 - 0.5 / 100 * 0.25) * e[k] + 0.25 * 3.0 * kw[k],
                                         abs=1e-5)

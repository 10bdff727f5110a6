"""M&V of a DR event on hand-computed numbers: delivered kW, live and final response ratio,
the projection (with a battery running out), the alarm and the settlement bands."""

import math

import numpy as np
import pytest

from edge.vpp import mv

Q = 0.25  # hours in a quarter hour
NAN = math.nan


def test_live_ratio_and_projection_of_a_reduction_three_quarters_in():
    # baseline 60 kW, declared 20 kW per interval; the fourth quarter has not happened yet
    m = mv.measure([60, 60, 60, 60], [40, 42, 38, NAN], [20, 20, 20, 20], [Q] * 4,
                   [Q, Q, Q, 0], "reduce")
    np.testing.assert_allclose(m.delivered_kw[:3], [20, 18, 22])
    assert math.isnan(m.delivered_kw[3])
    np.testing.assert_allclose(m.interval_ratio[:3], [1.0, 0.9, 1.1])
    assert m.delivered_kwh == pytest.approx(15.0)  # (20 + 18 + 22) x 0.25
    assert m.declared_kwh == pytest.approx(20.0)  # 20 kW x 1 h
    assert m.measured_h == pytest.approx(0.75)
    assert m.response_ratio == pytest.approx(1.0)  # 15 of 15 kWh so far
    # the rest at the latest ratio (1.1): 15 + 1.1 x 20 x 0.25 = 20.5 of 20 kWh
    assert m.projected_ratio == pytest.approx(1.025)
    assert not m.alarm
    assert m.band == "paid" and m.payable_ratio == pytest.approx(1.0)


def test_projection_counts_the_battery_running_out():
    # the battery delivers 30 kW and holds 3 kWh: 0.1 h of the remaining 0.25 h
    m = mv.measure([60, 60, 60, 60], [40, 42, 38, NAN], [20] * 4, [Q] * 4, [Q, Q, Q, 0],
                   "reduce", battery_kw=30, battery_kwh=3, alarm_ratio=0.85)
    # rest = 1.1 x 5 kWh - 30 kW x 0.15 h = 1.0 kWh -> (15 + 1) / 20
    assert m.projected_ratio == pytest.approx(0.8)
    assert m.alarm


def test_before_any_measurement_the_projection_is_the_plan():
    m = mv.measure([60, 60], [NAN, NAN], [20, 20], [Q, Q], [0, 0], "reduce", planned_ratio=1.02)
    assert m.response_ratio is None and m.band is None
    assert m.projected_ratio == pytest.approx(1.02)


def test_an_open_interval_counts_by_its_measured_part():
    # second quarter: 6 of 15 min measured at 45 kW (15 kW delivered)
    m = mv.measure([60, 60], [40, 45], [20, 20], [Q, Q], [Q, 0.1], "reduce")
    assert m.delivered_kwh == pytest.approx(20 * Q + 15 * 0.1)  # 6.5
    assert m.response_ratio == pytest.approx(6.5 / (20 * 0.35))
    # 0.1 h counted as recent enough (>= 5 min): rest 0.15 h at 0.75
    assert m.projected_ratio == pytest.approx((6.5 + 0.75 * 20 * 0.15) / 10)


def test_an_increase_delivers_above_the_baseline():
    m = mv.measure([10, 10], [35, 28], [20, 20], [Q, Q], [Q, Q], "increase")
    np.testing.assert_allclose(m.delivered_kw, [25, 18])
    assert m.response_ratio == pytest.approx((25 + 18) / 40)


def test_a_missing_past_interval_is_left_out_and_counted():
    m = mv.measure([60, 60, 60], [40, NAN, 40], [20] * 3, [Q] * 3, [Q] * 3, "reduce")
    assert m.missing == 1
    assert m.response_ratio == pytest.approx(1.0)
    assert m.declared_kwh == pytest.approx(10.0)


def test_settlement_bands():
    assert mv.band(0.4) == "penalised" and mv.payable(0.4) == 0.0
    assert mv.band(0.5) == "paid" and mv.payable(0.5) == 0.5
    assert mv.band(1.3) == "capped" and mv.payable(1.3) == pytest.approx(1.2)
    m = mv.measure([60], [52], [20], [Q], [Q], "reduce")  # 8 of 20 kW
    assert m.response_ratio == pytest.approx(0.4)
    assert m.band == "penalised" and m.payable_ratio == 0.0
    assert m.alarm  # projected 0.4 < 0.8


def test_projection_formula_directly():
    # 10 kWh delivered of 40; 30 kWh to go in 1.5 h at 0.9; battery 20 kW for 1 h
    assert mv.project(10, 40, 30, 1.5, 0.9, battery_kw=20, battery_kwh=20) == pytest.approx(
        (10 + 27 - 20 * 0.5) / 40)
    assert mv.project(10, 40, 30, 1.5, 0.9) == pytest.approx(37 / 40)

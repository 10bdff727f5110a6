"""The planning LP on cases small enough to solve by hand."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge.config import parse
from edge.control.instructions import Instruction
from edge.plan.model import PlanBattery, PlanInput, build, build_input, demand_blocks
from edge.plan.solve import PlanInfeasible, solve

T0 = datetime(2026, 6, 22, tzinfo=UTC)


def battery(cap=10.0, soc0=50.0, lo=0.0, hi=100.0, kw=5.0, eta=1.0, bid="b1") -> PlanBattery:
    return PlanBattery(bid, cap, soc0, lo, hi, kw, kw, eta, eta)


def hourly(load, price, pv=None, export_price=0.0, bats=(), **kw) -> PlanInput:
    n = len(load)
    return PlanInput(T0, 3600, np.asarray(load, float),
                     np.zeros(n) if pv is None else np.asarray(pv, float),
                     np.asarray(price, float), np.full(n, export_price), tuple(bats), **kw)


def test_two_step_arbitrage_charges_cheap_and_discharges_dear():
    p = solve(hourly([5, 5], [0.1, 0.5], bats=[battery()]))
    assert p.status == "optimal"
    np.testing.assert_allclose(p.bess_kw, [-5, 5], atol=1e-6)
    np.testing.assert_allclose(p.grid_kw, [10, 0], atol=1e-6)
    np.testing.assert_allclose(p.soc_pct, [50, 100, 50], atol=1e-6)
    assert p.energy_cost == pytest.approx(1.0)
    assert p.objective == pytest.approx(1.0)  # no demand charge, no degradation cost


def test_round_trip_losses_make_a_small_spread_unprofitable():
    # eta 0.9 each way: a kWh bought at 0.10 returns 0.81 kWh, worth it only above 0.1235
    small = solve(hourly([5, 5], [0.10, 0.12], bats=[battery(soc0=0, eta=0.9)]))
    np.testing.assert_allclose(small.bess_kw, [0, 0], atol=1e-6)
    wide = solve(hourly([5, 5], [0.10, 0.13], bats=[battery(soc0=0, eta=0.9)]))
    np.testing.assert_allclose(wide.bess_kw, [-5, 4.05], atol=1e-6)  # 5*0.9*0.9 delivered
    assert wide.energy_cost == pytest.approx(0.1 * 10 + 0.13 * 0.95)


def test_degradation_cost_stops_marginal_cycling():
    inp = hourly([5, 5], [0.1, 0.5], bats=[battery()], degradation_cost_per_kwh=0.25)
    p = solve(inp)  # each kWh through the battery costs 0.5 (in and out) > the 0.4 spread
    np.testing.assert_allclose(p.bess_kw, [0, 0], atol=1e-6)


def test_demand_charge_flattens_the_peak():
    p = solve(hourly([10, 30], [0.1, 0.1], bats=[battery(cap=20, soc0=0, kw=20)],
                     demand_charge_per_kw=10.0))
    np.testing.assert_allclose(p.grid_kw, [20, 20], atol=1e-6)
    assert p.peak_kw == pytest.approx(20)
    assert p.demand_charge == pytest.approx(200)


def test_demand_charge_only_shaves_above_the_peak_already_reached():
    p = solve(hourly([10, 30], [0.1, 0.1], bats=[battery(cap=20, soc0=0, kw=20)],
                     demand_charge_per_kw=10.0, peak_so_far_kw=25.0))
    np.testing.assert_allclose(p.grid_kw, [15, 25], atol=1e-6)
    assert p.demand_charge == pytest.approx(250)


def test_export_limit_forces_curtailment():
    p = solve(hourly([10, 10], [0.5, 0.5], pv=[50, 50], export_price=0.05,
                     export_limit_kw=20.0))
    np.testing.assert_allclose(p.grid_kw, [-20, -20], atol=1e-6)
    np.testing.assert_allclose(p.pv_kw, [30, 30], atol=1e-6)


def test_pv_is_used_rather_than_curtailed_when_export_is_free():
    p = solve(hourly([10], [0.5], pv=[50], export_price=0.0))
    assert p.pv_kw[0] == pytest.approx(50)
    assert p.grid_kw[0] == pytest.approx(-40)


def test_reserve_soc_is_kept_when_discharging_would_pay():
    free = solve(hourly([10, 10], [1, 1], bats=[battery(soc0=100)], terminal_value_per_kwh=0.0))
    assert free.soc_pct[-1] == pytest.approx(0, abs=1e-6)  # without a reserve it empties
    p = solve(hourly([10, 10], [1, 1], bats=[battery(soc0=100)], terminal_value_per_kwh=0.0,
                     reserve_soc_pct=40))
    assert p.soc_pct.min() == pytest.approx(40, abs=1e-6)
    assert p.reason == ""


def test_battery_below_reserve_recharges_instead_of_failing():
    p = solve(hourly([5, 5, 5], [1, 1, 1], bats=[battery(soc0=10)], reserve_soc_pct=80))
    assert p.status == "optimal"
    np.testing.assert_allclose(p.soc_pct, [10, 60, 80, 80], atol=1e-6)  # full 5 kW charge
    assert "reserve" in p.reason


def test_commitments_bound_the_grid():
    inp = hourly([20, 20, 10], [0.1, 0.1, 0.1], bats=[battery(cap=40, soc0=50, kw=30)],
                 grid_max_kw=np.array([np.nan, 5.0, np.nan]),
                 grid_min_kw=np.array([np.nan, np.nan, 30.0]))
    p = solve(inp)
    assert p.grid_kw[1] <= 5 + 1e-6  # DR: import at most 5 kW
    assert p.grid_kw[2] >= 30 - 1e-6  # valley filling: import at least 30 kW


def test_exporting_and_importing_in_one_step_is_never_planned():
    # Export pays more than import: an LP alone would import and export at once for profit.
    inp = hourly([2, 2], [0.31, 0.31], pv=[0, 0], export_price=0.39,
                 bats=[battery(soc0=0, kw=5, eta=1.0)], export_limit_kw=50.0)
    assert len(build(inp).integer) == 2  # direction binaries only where export pays more
    p = solve(inp)
    # Best real schedule: charge 5 kW in step 0 (import 7), discharge 5 in step 1: 2 kW to
    # the load, 3 kW exported.
    np.testing.assert_allclose(p.bess_kw, [-5, 5], atol=1e-6)
    np.testing.assert_allclose(p.grid_kw, [7, -3], atol=1e-6)
    assert p.energy_cost == pytest.approx(0.31 * 7 - 0.39 * 3)


def test_partly_deliverable_commitment_is_met_as_far_as_possible_and_the_shortfall_named():
    # DR: no import in hour 1 under a 50 kW load. The battery (empty, 30 kW) can only charge
    # 30 kWh in hour 0, and hour 0 is the dear one: money alone would not charge there.
    inp = hourly([20, 50, 20], [1.0, 0.1, 0.1], bats=[battery(cap=40, soc0=0, kw=30)],
                 grid_max_kw=np.array([np.nan, 0.0, np.nan]), import_limit_kw=60.0,
                 commitment_ids=("", "dr-1", ""), degradation_cost_per_kwh=0.01)
    p = solve(inp)
    assert p.status == "optimal"
    np.testing.assert_allclose(p.bess_kw[:2], [-30, 30], atol=1e-6)
    np.testing.assert_allclose(p.grid_kw[:2], [50, 20], atol=1e-6)  # 20 kW is all it cannot do
    np.testing.assert_allclose(p.commitment_short_kw, [0, 20, 0], atol=1e-6)
    assert p.commitment_short_kwh == pytest.approx(20)
    assert ("commitment dr-1 cannot be fully met: short by 20.0 kWh in steps 1 "
            "(2026-06-22T01:00:00+00:00 to 2026-06-22T02:00:00+00:00)") in p.reason
    # The bill is energy + demand; the objective adds degradation; neither has penalties.
    assert p.bill == pytest.approx(p.energy_cost + p.demand_charge)
    assert p.bill == pytest.approx(1.0 * 50 + 0.1 * 20 + 0.1 * 20)
    assert p.objective == pytest.approx(p.bill + 0.01 * 60)


def test_a_commitment_outranks_the_reserve_soc():
    # Delivering the DR hour in full takes the battery from 100 % to 25 %, below the 80 %
    # reserve, and it recharges at only 1 kW: 11 h below the reserve in a 24 h horizon.
    bat = PlanBattery("b1", 20.0, 100.0, 0.0, 100.0, 1.0, 15.0, 1.0, 1.0)
    grid_max = np.full(24, np.nan)
    grid_max[0] = 0.0
    p = solve(hourly([15] * 24, [0.1] * 24, bats=[bat], grid_max_kw=grid_max,
                     reserve_soc_pct=80))
    assert p.grid_kw[0] == pytest.approx(0, abs=1e-6)
    assert p.commitment_short_kwh == 0
    assert p.soc_pct[1] == pytest.approx(25, abs=1e-6)
    assert "below the reserve SoC" in p.reason and "cannot be fully met" not in p.reason


def test_limits_that_cannot_hold_raise_with_step_and_bound():
    # 50 kW load, 20 kW import limit, 10 kWh battery: the limit breaks in step 0 already.
    inp = hourly([50, 50], [0.1, 0.1], bats=[battery(cap=10, soc0=100, kw=60)],
                 import_limit_kw=20.0, terminal_value_per_kwh=0.0)
    with pytest.raises(PlanInfeasible) as err:
        solve(inp)
    reason = err.value.reason
    assert "import limit 20.0 kW" in reason and "above its bound" in reason
    assert "2026-06-22T00:00:00+00:00" in reason


def five_min(load, pv=None, bats=(), **kw) -> PlanInput:
    n = len(load)
    return PlanInput(T0, 300, np.asarray(load, float),
                     np.zeros(n) if pv is None else np.asarray(pv, float), np.full(n, 0.1),
                     np.zeros(n), tuple(bats), **kw)


def test_short_spike_inside_a_quarter_hour_is_not_over_penalised():
    # Two quarter hours at 5 min: [10, 40, 10] (mean 20) and [25, 25, 25] (mean 25). The bill
    # counts 15-min means, so 2.5 kWh of battery bring both means down to 17.5 kW; shaving
    # every 5-min step instead (the spike too) would only reach 21.25 kW.
    p = solve(five_min([10, 40, 10, 25, 25, 25], bats=[battery(cap=2.5, soc0=100, kw=30)],
                       demand_charge_per_kw=10.0, terminal_value_per_kwh=0.0))
    assert p.peak_kw == pytest.approx(17.5, abs=1e-4)
    assert p.demand_charge == pytest.approx(175, abs=1e-3)
    blocks = p.grid_kw.reshape(2, 3).mean(axis=1)
    assert blocks.max() <= 17.5 + 1e-4
    assert p.grid_kw.max() > 17.5 + 1  # the spike stays: only its block mean is billed


def test_export_inside_a_quarter_hour_offsets_its_import_like_the_bill():
    # grid [30, -30, -30]: the bill's 15-min mean of net import is -10, so nothing to pay.
    p = solve(five_min([30, 0, 0], pv=[0, 30, 30], demand_charge_per_kw=10.0))
    np.testing.assert_allclose(p.grid_kw, [30, -30, -30], atol=1e-6)
    assert p.peak_kw == 0 and p.demand_charge == 0


def test_block_means_weight_steps_by_their_minutes_in_the_quarter_hour():
    # Planned at 00:03 with 5-min steps: step 0 is 00:03-00:05, the first block is covered
    # from 00:03 only (12 min), the second by step 3 alone.
    inp = replace(five_min([1, 1, 1, 1]), first_step_s=120)
    w = demand_blocks(inp).toarray()
    np.testing.assert_allclose(w, [[2 / 12, 5 / 12, 5 / 12, 0], [0, 0, 0, 1]])
    # 12-min steps straddle quarter hours: 00:00-00:15 is 12 min of step 0 and 3 of step 1.
    inp12 = PlanInput(T0, 720, np.ones(5), np.zeros(5), np.full(5, 0.1), np.zeros(5), ())
    w12 = demand_blocks(inp12).toarray()
    np.testing.assert_allclose(w12[0], [0.8, 0.2, 0, 0, 0])
    np.testing.assert_allclose(w12.sum(axis=1), 1.0)
    assert w12.shape == (4, 5)
    # 15-min multiples map one to one
    assert demand_blocks(hourly([1, 1], [0.1, 0.1])).shape == (2, 2)


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="pv_kw: expected 2 values"):
        solve(hourly([5, 5], [0.1, 0.1], pv=[1.0]))
    with pytest.raises(ValueError, match="import_price: contains NaN"):
        solve(hourly([5, 5], [0.1, math.nan]))


SITE = {
    "site": {"id": "t", "timezone": "Asia/Shanghai"},
    "devices": [
        {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1502, "capacity_kwh": 200,
         "max_charge_kw": 60, "max_discharge_kw": 60},
        {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1503},
    ],
    "control": {"import_limit_kw": 80, "export_limit_kw": 0},
    "tariff": {"export_price": 0.39, "periods": [
        {"name": "valley", "start": "00:00", "end": "08:00", "price": 0.31},
        {"name": "flat", "start": "08:00", "end": "00:00", "price": 0.68}]},
    "planner": {"enabled": True, "reserve_soc_pct": 20},
}


def test_build_input_takes_prices_limits_and_batteries_from_the_config():
    cfg = parse(SITE)
    start = datetime(2026, 6, 21, 23, 45, tzinfo=UTC)  # 07:45 local (+08:00)
    inp = build_input(cfg, start, 900, [10, 10, 10], [0, 0, 0], {"bess1": 30.0})
    np.testing.assert_allclose(inp.import_price, [0.31, 0.68, 0.68])
    assert inp.export_price[0] == 0.39
    assert (inp.import_limit_kw, inp.export_limit_kw) == (80, 0)
    assert inp.batteries[0].soc0_pct == 30 and inp.batteries[0].capacity_kwh == 200
    assert inp.reserve_soc_pct == 20


def test_a_step_straddling_a_tariff_boundary_pays_the_blend():
    cfg = parse(SITE)
    start = datetime(2026, 6, 21, 23, 50, tzinfo=UTC)  # 07:50 local: 10 min valley, 5 flat
    inp = build_input(cfg, start, 900, [10], [0], {"bess1": 30.0})
    assert inp.import_price[0] == pytest.approx((10 * 0.31 + 5 * 0.68) / 15)


def test_build_input_planning_mid_step_shortens_step_zero():
    cfg = parse(SITE)
    start = datetime(2026, 6, 21, 23, 30, tzinfo=UTC)  # step 0: 07:30-08:30 local
    inp = build_input(cfg, start, 3600, [10, 10], [0, 0], {"bess1": 30.0},
                      now=start + timedelta(minutes=30))
    assert inp.first_step_s == 1800
    assert inp.dt_h[0] == pytest.approx(0.5)
    assert inp.import_price[0] == pytest.approx(0.68)  # 08:00-08:30 only, not the blend
    assert inp.import_price[1] == pytest.approx(0.68)


def test_commitments_from_instructions_respect_priority():
    cfg = parse(SITE)
    start = datetime(2026, 6, 22, 10, 0, tzinfo=UTC)
    end = start + timedelta(minutes=30)
    book = [
        Instruction("dr1", "grid_operator", start, end, grid_max_kw=20.0),
        Instruction("park1", "park", start, start + timedelta(minutes=45), grid_min_kw=30.0),
        Instruction("plan-0", "plan", start, end, grid_max_kw=1.0),  # not a commitment
    ]
    inp = build_input(cfg, start, 900, [40] * 4, [0] * 4, {"bess1": 50.0}, commitments=book)
    np.testing.assert_allclose(inp.grid_max_kw, [20, 20, np.nan, np.nan])
    # park's floor of 30 contradicts DR's cap of 20 in steps 0-1: dropped there, kept in 2
    np.testing.assert_allclose(inp.grid_min_kw, [np.nan, np.nan, 30, np.nan])


def test_missing_battery_soc_is_refused_with_the_battery_named():
    with pytest.raises(ValueError, match="bess1"):
        build_input(parse(SITE), T0, 900, [1], [0], {})


def test_rolling_replans_with_perfect_forecasts_reach_the_whole_horizon_optimum():
    """The perfect-foresight reference is the same LP over the whole run; re-planning every
    step over a 24 h horizon from the reached SoC and applying step 0 must cost the same."""
    step, n = 900, 96
    t = np.arange(2 * n) * step / 3600 % 24
    rng = np.random.default_rng(7)
    load = 25 + 70 * ((t > 8) & (t < 19)) + rng.uniform(-3, 3, 2 * n)
    pv = np.clip(120 * np.sin((t - 5.5) / 13 * np.pi), 0, None)
    price = np.select([t < 8, (t >= 10) & (t < 15), (t >= 18) & (t < 21)], [0.31, 1.12, 1.12],
                      0.68)

    def window(k: int, soc: float, peak: float, m: int = n) -> PlanInput:
        return PlanInput(T0 + timedelta(seconds=k * step), step, load[k:k + m], pv[k:k + m],
                         price[k:k + m], np.full(m, 0.39),
                         (PlanBattery("b", 200, soc, 10, 95, 60, 60, 0.95, 0.95),),
                         demand_charge_per_kw=5.0, peak_so_far_kw=peak, import_limit_kw=80,
                         export_limit_kw=0)

    reference = solve(window(0, 10.0, 0.0))
    soc, peak, cost = 10.0, 0.0, 0.0
    for k in range(n):
        p = solve(window(k, soc, peak))
        g = p.grid_kw[0]
        cost += step / 3600 * price[k] * max(g, 0.0)
        peak, soc = max(peak, g), p.soc_pct[1]
    assert abs(soc - reference.soc_pct[-1]) < 0.5
    assert cost + 5.0 * peak == pytest.approx(reference.objective, rel=2e-3)

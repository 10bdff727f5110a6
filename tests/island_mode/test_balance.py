"""The island's balance: critical loads run, the rest by priority within the batteries'
power and the energy above the critical reserve; PV never over-charges a full battery."""

from __future__ import annotations

import math

import pytest
from microgrid_site import CONFIG, image

from edge.island import balance
from edge.roles.flexload import Switching

BESS = [d for d in CONFIG.devices if d.id == "bess"]
LOADS = [d for d in CONFIG.devices if d.role == "load"]
PV = [d for d in CONFIG.devices if d.id == "pv"]
PARAMS = next(d for d in CONFIG.devices if d.id == "cb").island


def states(**on) -> dict:
    return {k: Switching(v, 0.0) for k, v in on.items()}


def plan(img, sw, state="island", now_s=100.0):
    return balance.plan(state, True, BESS, LOADS, PV, img, sw, PARAMS, now_s)


def test_reserve_is_the_critical_load_for_backup_hours():
    assert balance.reserve_kwh(LOADS, PARAMS) == pytest.approx(10.0 * 4)


def test_all_loads_run_while_power_and_energy_allow():
    p = plan(image(soc=90.0), states(fridge=True, hvac=True, pump=True))
    assert p.load_on == {"fridge": True, "hvac": True, "pump": True}


def test_power_short_sheds_the_lowest_priority_first():
    # 70 kW of battery less 7 kW headroom, no PV: 10 + 30 + 20 fit, a 25 kW pump does not.
    p = plan(image(soc=90.0), states(fridge=True, hvac=True, pump=True))
    assert p.load_on["pump"] is True
    bigger = [d.model_copy(update={"rated_kw": 25.0}) if d.id == "pump" else d for d in LOADS]
    p = balance.plan("island", True, BESS, bigger, PV, image(soc=90.0),
                     states(fridge=True, hvac=True, pump=True), PARAMS, 100.0)
    assert p.load_on == {"fridge": True, "hvac": True, "pump": False}
    assert "shed pump" in p.reason


def test_the_critical_reserve_sheds_every_non_critical_load():
    # 200 kWh × 0.95 between 10 % and SoC: at 30 % 38 kWh, below the 40 kWh reserve.
    p = plan(image(soc=30.0), states(fridge=True, hvac=True, pump=True))
    assert p.load_on == {"fridge": True, "hvac": False, "pump": False}


def test_shed_loads_return_one_per_cycle_highest_priority_first():
    p = plan(image(soc=90.0), states(fridge=True, hvac=False, pump=False))
    assert p.load_on == {"fridge": True, "hvac": True, "pump": False}


def test_a_load_waits_out_its_minimum_off_time():
    slow = [d.model_copy(update={"min_off_s": 300.0}) if d.id == "hvac" else d for d in LOADS]
    p = balance.plan("island", True, BESS, slow, PV, image(soc=90.0),
                     states(fridge=True, hvac=False, pump=False), PARAMS, 100.0)
    assert p.load_on["hvac"] is False and p.load_on["pump"] is True


def test_pv_is_held_to_the_loads_plus_what_the_battery_can_absorb():
    p = plan(image(soc=50.0, pv_kw=70.0, bess_kw=-10.0), states(fridge=True, hvac=True, pump=True))
    assert p.pv_limit_kw == pytest.approx(60.0 + 60.0)
    full = plan(image(soc=95.0, pv_kw=70.0, bess_kw=-10.0),
                states(fridge=True, hvac=True, pump=True))
    assert full.pv_limit_kw == pytest.approx(60.0)  # a full battery takes nothing more


def test_the_rest_of_the_building_counts_against_the_batteries_power():
    # The battery gives 45 kW while the switchable loads draw 10 + 30: 5 kW is the building.
    p = plan(image(soc=90.0, bess_kw=45.0, loads={"fridge": 1.0, "hvac": 1.0, "pump": 0.0}),
             states(fridge=True, hvac=True, pump=False))
    assert p.load_on["pump"] is False  # 10 + 30 + 5 + 20 + 2 margin > 63 kW


def test_black_start_begins_with_every_load_off_and_no_pv():
    p = plan(image(soc=50.0), states(fridge=True, hvac=True, pump=True), state="black_start")
    assert not any(p.load_on.values()) and p.pv_limit_kw == 0.0


def test_islanding_keeps_only_the_critical_loads():
    p = balance.plan("islanding", False, BESS, LOADS, PV, image(), states(), PARAMS, 0.0)
    assert p.load_on == {"fridge": True, "hvac": False, "pump": False}
    assert math.isinf(p.pv_limit_kw)

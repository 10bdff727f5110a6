"""A microgrid's config: the breaker needs a battery that can form the grid, the critical
loads must fit what that battery can supply, and the reserve shows in normal operation."""

from __future__ import annotations

import pytest
from microgrid_site import CONFIG, image, site

from edge.config import ConfigError, parse
from edge.control.decide import Controller
from edge.control.kernel import load_kernel


def problems(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(data)
    return str(exc.value)


def test_a_breaker_without_a_grid_forming_battery_is_refused():
    data = site()
    data["devices"][2]["grid_forming"] = False
    msg = problems(data)
    assert "needs a battery that can form the grid" in msg and "grid_forming: true" in msg


def test_critical_loads_beyond_the_battery_power_are_refused():
    data = site()
    data["devices"][4]["rated_kw"] = 80
    msg = problems(data)
    assert "the critical loads draw 80 kW, more than the grid-forming batteries can supply " \
           "(70 kW)" in msg


def test_a_reserve_beyond_the_battery_energy_names_backup_hours():
    msg = problems(site(island={"backup_hours": 20}))
    assert "island.backup_hours" in msg and "need 200 kWh for 20 h" in msg


def test_a_grid_forming_battery_needs_a_map_with_grid_mode():
    data = site()
    data["devices"][2]["map"] = "bms_generic"
    data["devices"][2]["bms"] = None
    msg = problems(data)
    assert "grid_mode" in msg


def test_auto_transfer_needs_a_grid_forming_battery():
    data = site()
    data["devices"][2].update(grid_forming=False, auto_transfer=True)
    msg = problems(data)
    assert "auto_transfer" in msg and "set grid_forming: true" in msg


def test_auto_transfer_needs_a_map_with_the_point():
    data = site()
    data["devices"][2].update(map="bms_generic", auto_transfer=True)
    msg = problems(data)
    assert "devices.bess.auto_transfer: map bms_generic has no auto_transfer point" in msg


def test_auto_transfer_reaches_the_driver():
    from edge.app.devices import device_spec

    data = site()
    data["devices"][2]["auto_transfer"] = True
    config = parse(data)
    assert device_spec(config, config.devices[2]).auto_transfer
    assert not device_spec(CONFIG, CONFIG.devices[2]).auto_transfer


def test_two_breakers_are_refused():
    data = site()
    data["devices"].append({**data["devices"][1], "id": "cb2", "port": 1700})
    assert "at most one breaker" in problems(data)


def test_normal_operation_never_discharges_into_the_critical_reserve():
    # Reserve 40 kWh of 190 usable: floor 10 + 21.05 %. At 31 % the battery may not discharge.
    ctl = Controller(CONFIG, load_kernel())
    mem = ctl.initial_memory()
    img = image(soc=31.0)
    decision, _ = ctl.decide(img, None, mem, 1.0)
    assert decision.grid_state == "on_grid"
    assert decision.bess_kw["bess"] <= 0.0
    decision, _ = ctl.decide(image(soc=40.0), None, ctl.initial_memory(), 1.0)
    assert decision.bess_kw["bess"] > 0.0  # above the floor it does


def test_the_plan_keeps_the_critical_reserve_as_its_floor():
    from datetime import UTC, datetime

    from edge.plan.inputs import build_input

    start = datetime(2026, 6, 22, tzinfo=UTC)
    plan = build_input(CONFIG, start, 900, [20.0] * 4, [0.0] * 4, {"bess": 60.0})
    assert plan.batteries[0].soc_min_pct == pytest.approx(10 + 100 * 40 / 190)
    low = build_input(CONFIG, start, 900, [20.0] * 4, [0.0] * 4, {"bess": 20.0})
    assert low.batteries[0].soc_min_pct == pytest.approx(20.0)  # below it: hold, not deeper

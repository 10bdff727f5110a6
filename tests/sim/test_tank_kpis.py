"""A thermal storage tank's end state in the KPIs (tools/simulate/kpis.py): every strategy's
adjusted cost values the tanks' change of thermal energy at the electric kWh it takes to
make (thermal / COP), as it values the batteries', and the replay reports its tank's
thermal kWh at the start and the end as the simulator holds them."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge.config import load
from hil.scenario import Truth
from tools.simulate.kpis import costs, ratio
from tools.simulate.replay import replay_rules

COP = {"tes1": 3.0}
VALUE = 0.3


def strategy(total_cost: float, tank_end: float) -> dict:
    return {"total_cost": total_cost, "tank_kwh_start": {"tes1": 120.0},
            "tank_kwh_end": {"tes1": tank_end}}


def test_strategies_differing_only_by_the_tanks_end_state_get_the_same_adjusted_cost():
    """One refills 100 kWh thermal (100 / 3 electric kWh at the terminal value) before the
    end, the other leaves the tank that much emptier and saves exactly that: equal."""
    refilled = costs(strategy(100.0, 120.0), VALUE, COP)
    left_low = costs(strategy(100.0 - VALUE * 100.0 / 3.0, 20.0), VALUE, COP)
    assert left_low["adjusted_cost"] == pytest.approx(refilled["adjusted_cost"])
    assert left_low["stored_energy_change_kwh"] == pytest.approx(-100.0 / 3.0)
    assert (left_low["stored_thermal_kwh_start"], left_low["stored_thermal_kwh_end"]) == (
        120.0, 20.0)


def test_a_fuller_tank_at_the_end_lowers_the_adjusted_cost_by_its_electric_worth():
    same_bill = [costs(strategy(100.0, end), VALUE, COP)["adjusted_cost"] for end in (60, 150)]
    assert same_bill[0] - same_bill[1] == pytest.approx(VALUE * 90.0 / 3.0)


def test_a_site_without_tanks_reports_no_thermal_figures():
    c = costs({"total_cost": 50.0, "stored_kwh_start": 10.0, "stored_kwh_end": 5.0}, VALUE, {})
    assert c["adjusted_cost"] == pytest.approx(50.0 + VALUE * 5.0)
    assert "stored_thermal_kwh_start" not in c


def test_the_replay_reports_its_tanks_thermal_kwh_with_the_standing_loss():
    cfg = load("configs/thermal_office.yaml")
    tz = ZoneInfo(cfg.site.timezone)
    night = datetime(2026, 7, 1, 1, tzinfo=tz).astimezone(UTC)  # no PV: the tank idles
    truth = Truth(night, 900, np.zeros(4), np.full(4, 30.0), cfg.tariff, tz, [])
    out = replay_rules(cfg, truth, 900, [], {})
    tank = next(d for d in cfg.devices if d.role == "thermal_storage")
    start = tank.capacity_kwh * tank.sim["initial_soc_pct"] / 100
    assert out["tank_kwh_start"] == {tank.id: pytest.approx(start)}
    kept = (1 - tank.loss_pct_per_h / 100 / 3600) ** 900  # 900 one-second cycles
    assert out["tank_kwh_end"] == {tank.id: pytest.approx(start * kept, rel=1e-6)}


def test_a_site_without_batteries_reports_no_savings_capture():
    """Its "no battery" run is the controller's own site (tanks included): the share of
    the optimum's saving a battery captured does not exist there."""
    assert ratio(205.0, 181.6, 205.2, 240.0, batteries=False)["savings_capture"] is None
    assert ratio(205.0, 181.6, 225.0, 240.0)["savings_capture"] == pytest.approx(20 / 43.4)

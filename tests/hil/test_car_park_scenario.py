"""The workplace car park (configs/workplace_car_park.yaml with
hil/scenarios/workplace_car_park.yaml): a valid site with the mix of chargers and cars it
promises, and a day whose morning arrivals, left uncontrolled, break the import limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.app.clock import Clock
from edge.config import load
from hil import scenario
from hil.config import hil_of, problems, sim_of
from hil.site import SimSite

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "workplace_car_park.yaml"


@pytest.fixture(scope="module")
def site_config():
    return load(CONFIG)


def chargers(cfg) -> list:
    return [d for d in cfg.devices if d.role == "ev_charger"]


def test_car_park_has_ten_22_kw_chargers_with_the_promised_quirks(site_config) -> None:
    assert problems(site_config) == []
    evs = chargers(site_config)
    assert len(evs) == 10 and {round(d.max_kw, 1) for d in evs} == {22.1}
    sims = [sim_of(d) for d in evs]
    cars = [a for s in sims for a in s.arrivals]
    assert all("07:30" <= a.arrive <= "09:30" for a in cars if a.arrive < "12:00")
    assert all("16:30" <= a.depart <= "19:00" for a in cars if a.depart > "12:00")
    assert sum(a.car_phases == 1 for a in cars) == 1
    assert sum(s.rejects_tx_default for s in sims) == 1
    assert sum(bool(s.drops_at) for s in sims) == 1
    assert 0 < sum(s.ocpp_version == "2.0.1" for s in sims) < 10
    assert len({a.capacity_kwh for a in cars}) > 5 and len({a.soc_pct for a in cars}) > 5


def test_uncontrolled_morning_charging_breaks_the_import_limit(site_config) -> None:
    sc = scenario.load("workplace_car_park")
    cfg = sc.apply(site_config)
    limit = cfg.control.import_limit_kw
    prices = sc.truth(cfg).import_prices(sc.start, 96, 900)
    assert prices.min() < prices.max() / 2  # a TOU valley
    site = SimSite(cfg, Clock(hil_of(cfg).start, 1.0), truth=sc.truth(cfg))
    site.step_to(7 * 3600)
    assert site.last.grid_kw < limit  # before the cars: the building alone fits
    peak = 0.0
    for minute in range(7 * 60, 11 * 60):
        site.step_to(minute * 60)
        peak = max(peak, site.last.grid_kw)
    ev_kw = sum(site.state(d.id)["power_kw"] for d in chargers(cfg))
    assert peak > limit * 1.2  # nobody controls them here: the limit must be enforced
    assert ev_kw > 0  # still charging late in the morning

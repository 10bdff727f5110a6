"""The PCC physics of the simulated microgrid (hil/island.py), stepped without servers: a
dead grid behind a closed breaker darkens the site, a forming PCS carries the island within
its power or the island collapses, surplus raises the frequency and backs PV off, and a
returning grid is synchronised to."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from edge.app.clock import Clock
from edge.config import load
from hil.site import SimSite

ROOT = Path(__file__).resolve().parents[2]
EVENING = datetime.fromisoformat("2026-06-22T18:00:00+08:00")
NOON = datetime.fromisoformat("2026-06-22T12:00:00+08:00")


def microgrid(start: datetime = EVENING, soc: float | None = None) -> SimSite:
    cfg = load(ROOT / "configs/microgrid.yaml")
    if soc is not None:
        data = cfg.model_dump()
        next(d for d in data["devices"] if d["id"] == "bess1")["sim"]["initial_soc_pct"] = soc
        cfg = type(cfg).model_validate(data)
    return SimSite(cfg, Clock(start, 1.0))


def switch(site: SimSite, **on: bool) -> None:
    for k, v in on.items():
        site.devices[k].held["relay"] = float(v)


def islanded(site: SimSite, t_s: float) -> None:
    """Grid gone, breaker opened, non-critical loads off, then the PCS forms (a PCS told to
    form behind the closed breaker would trip at once)."""
    cb = site.devices["cb"]
    cb.set_grid(False)
    cb.held["switch"], cb._cmd_at = 0.0, 0.0
    switch(site, hvac=False, water_heater=False, ev_bank=False)
    site.step_to(5)
    site.devices["bess1"].held["grid_mode"] = 1.0
    site.step_to(t_s)


def test_a_dead_grid_behind_a_closed_breaker_darkens_the_site():
    site = microgrid()
    site.devices["cb"].set_grid(False)
    site.step_to(10)
    assert site.last.load_kw == 0.0 and site.last.grid_kw == 0.0
    assert site.devices["cb"].bus_v == 0.0 and site.pcc.collapses == 1
    assert site.pcc.unserved_critical_kwh == pytest.approx(25 * 10 / 3600)


def test_a_forming_pcs_carries_the_island_within_its_power():
    site = microgrid()
    cb, bess = site.devices["cb"], site.devices["bess1"]
    islanded(site, 60)
    assert not cb.closed and cb.bus_v == pytest.approx(230.0)
    assert site.last.grid_kw == 0.0
    assert site.last.bess_kw == pytest.approx(site.last.load_kw - site.last.pv_kw, abs=1e-6)
    assert site.last.load_kw > 25.0  # the critical loads and the rest of the building
    switch(site, hvac=True, water_heater=True, ev_bank=True)  # 90 kW more: beyond 100 kW
    site.step_to(62)
    assert cb.bus_v == 0.0 and not bess.forming  # collapsed: the PCS dropped out
    assert site.pcc.collapses == 2


def test_surplus_raises_the_frequency_and_backs_pv_off_when_the_battery_is_full():
    site = microgrid(NOON, soc=95.0)
    cb, bess = site.devices["cb"], site.devices["bess1"]
    bess.battery.soc_max_pct = 95.0
    islanded(site, 30)
    assert cb.bus_v > 0 and cb.bus_hz > 50.5
    assert site.last.pv_kw < site.last.pv_available_kw  # frequency-watt curtailment
    assert site.last.bess_kw == pytest.approx(0.0, abs=1e-6)


def test_a_forming_pcs_synchronises_to_a_returning_grid():
    site = microgrid()
    cb = site.devices["cb"]
    islanded(site, 30)
    assert cb.phase_deg == 180.0 and not cb.in_sync()
    cb.set_grid(True)
    site.step_to(31)
    assert cb.phase_deg == pytest.approx(144.0)  # slipping at most 0.1 Hz: 36° a second
    site.step_to(45)
    assert cb.in_sync() and abs(cb.bus_hz - 50.0) < 0.2

"""The PCC physics of the simulated microgrid (hil/island.py), stepped without servers: a
dead grid behind a closed breaker darkens the site, a forming PCS carries the island within
its power or the island collapses, surplus raises the frequency and backs PV off, and a
returning grid is synchronised to. The commanded transfer runs on a moulded-case breaker
(0.1 s) and a PCS without overload rating; the PCS's own transfer on the example's static
switch (tests/hil/test_auto_transfer.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from fakes import ManualClock

from edge.config import load
from hil.site import SimSite

ROOT = Path(__file__).resolve().parents[2]
EVENING = datetime.fromisoformat("2026-06-22T18:00:00+08:00")
NOON = datetime.fromisoformat("2026-06-22T12:00:00+08:00")


def microgrid(start: datetime = EVENING, soc: float | None = None, commanded: bool = True,
              **sim) -> SimSite:
    """The example site on a manual clock: it stands still unless a test moves it, so a
    write is timed from where the test stepped the physics to. `commanded`: a breaker of
    0.1 s and a PCS without overload rating, as the break-before-make transfer had them;
    `sim` updates a device's sim block by id."""
    cfg = load(ROOT / "configs/microgrid.yaml")
    data = cfg.model_dump()
    devs = {d["id"]: d for d in data["devices"]}
    if commanded:
        devs["cb"]["sim"]["operate_s"] = 0.1
        devs["bess1"]["sim"].update(overload_pct=100.0, overload_s=0.0)
    if soc is not None:
        devs["bess1"]["sim"]["initial_soc_pct"] = soc
    for k, v in sim.items():
        devs[k]["sim"].update(v)
    return SimSite(type(cfg).model_validate(data), ManualClock(start))


def switch(site: SimSite, **on: bool) -> None:
    for k, v in on.items():
        site.devices[k].held["relay"] = float(v)


def islanded(site: SimSite, t_s: float) -> None:
    """Grid gone, breaker opened, non-critical loads off, then the PCS forms (a PCS told to
    form behind the closed breaker would trip at once)."""
    cb = site.devices["cb"]
    cb.set_grid(False)
    cb.write_points({"switch": 0.0})
    switch(site, hvac=False, water_heater=False, ev_bank=False)
    site.step_to(5)
    site.devices["bess1"].write_points({"grid_mode": 1.0})
    site.step_to(t_s)


def test_the_breaker_opens_at_its_operating_time_not_at_the_next_whole_second():
    site = microgrid()  # operate_s 0.1
    cb = site.devices["cb"]
    site.step_to(0.3)
    cb.write_points({"switch": 0.0})
    site.step_to(0.39)
    assert cb.closed
    site.step_to(0.41)  # a sub-step ends at 0.4: the next one starts open
    assert not cb.closed and cb.operations == [(pytest.approx(0.4), False)]


def test_the_pcs_forms_the_island_form_s_after_it_is_told_and_gives_nothing_meanwhile():
    site = microgrid()  # form_s 0.5
    cb, bess = site.devices["cb"], site.devices["bess1"]
    cb.set_grid(False)
    cb.write_points({"switch": 0.0})
    switch(site, hvac=False, water_heater=False, ev_bank=False)
    site.step_to(2.0)
    bess.write_points({"grid_mode": 1.0})
    site.step_to(2.49)
    assert not bess.forming and cb.bus_v == 0.0 and bess.power_kw == 0.0
    site.step_to(2.5)
    assert not bess.forming  # the instant it forms begins the next sub-step
    site.step_to(2.6)
    assert bess.forming and cb.bus_v == pytest.approx(230.0)


def test_the_critical_loads_are_dark_from_the_grid_loss_until_the_pcs_forms():
    site = microgrid()
    cb, bess = site.devices["cb"], site.devices["bess1"]
    site.step_to(2.0)
    cb.set_grid(False)  # at 2.0
    cb.write_points({"switch": 0.0})  # open at 2.1
    switch(site, hvac=False, water_heater=False, ev_bank=False)
    site.step_to(2.3)
    bess.write_points({"grid_mode": 1.0})  # formed at 2.8
    site.step_to(10)
    assert cb.grid_changes == [(2.0, False)]
    assert site.pcc.dark_s == pytest.approx(0.8)
    assert site.pcc.unserved_critical_kwh == pytest.approx(25 * 0.8 / 3600)


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

"""A PCS that transfers to island on its own (hil/devices/mapped.py, hil/island.py), stepped
without servers on the example site (its static switch opens in 5 ms, the PCS detects the
loss in 10 ms and carries 150 % for 10 s): the critical loads ride through the break, a
longer break counts in full, a switch that stays closed keeps the PCS following, the PCS
goes on forming until it is closed back on a live grid and told to follow, and its overload
rating carries the island only for its time."""

from __future__ import annotations

import pytest
from test_island_physics import microgrid, switch

from hil.site import SimSite


def auto_site(**sim) -> SimSite:
    site = microgrid(commanded=False, **sim)
    site.devices["bess1"].write_points({"auto_transfer": 1.0})  # as the controller writes it
    return site


def test_the_pcs_trips_the_switch_and_forms_so_the_critical_loads_ride_through():
    site = auto_site()
    cb, bess = site.devices["cb"], site.devices["bess1"]
    site.step_to(2.0)
    cb.set_grid(False)
    site.step_to(2.0149)
    assert cb.closed and not bess.forming  # detected at 2.010, the switch opens at 2.015
    site.step_to(5.0)
    assert cb.operations == [(pytest.approx(2.015), False)] and cb.tripped
    assert bess.forming and cb.bus_v == pytest.approx(230.0)
    assert cb.read_points()["tripped"] == 1.0 and bess.read_points()["forming"] == 1.0
    assert site.pcc.dark_s == pytest.approx(0.015)  # the break, reported as it was
    assert site.pcc.longest_dark_s == pytest.approx(0.015)
    assert site.pcc.unserved_critical_kwh == 0.0 and site.pcc.interruptions == 0


def test_a_break_longer_than_the_ride_through_counts_in_full():
    site = auto_site(cb={"operate_s": 0.05})  # 60 ms dark, against 20 ms of hold-up
    cb = site.devices["cb"]
    site.step_to(2.0)
    cb.set_grid(False)
    site.step_to(5.0)
    assert site.pcc.dark_s == pytest.approx(0.06)
    assert site.pcc.unserved_critical_kwh == pytest.approx(25 * 0.06 / 3600)
    assert site.pcc.interruptions == 2  # the ward and the server room


def test_without_auto_transfer_the_pcs_waits_to_be_told():
    site = microgrid(commanded=False)
    cb, bess = site.devices["cb"], site.devices["bess1"]
    site.step_to(2.0)
    cb.set_grid(False)
    site.step_to(5.0)
    assert cb.closed and not cb.tripped and not bess.forming
    assert site.pcc.unserved_critical_kwh == pytest.approx(25 * 3.0 / 3600)


def test_a_switch_that_will_not_open_keeps_the_pcs_off_the_dead_grid():
    site = auto_site()
    cb, bess = site.devices["cb"], site.devices["bess1"]
    cb.set_fails_to_open(True)
    site.step_to(2.0)
    cb.set_grid(False)
    site.step_to(10.0)
    assert cb.closed and cb.tripped and not bess.forming and cb.bus_v == 0.0
    cb.set_grid(True)
    site.step_to(11.0)
    assert not cb.tripped and cb.closed  # the trip withdrawn: the grid supplies again
    assert cb.bus_v == pytest.approx(230.0) and not bess.forming


def test_a_transferred_pcs_forms_until_closed_on_a_live_grid_and_told_to_follow():
    site = auto_site()
    cb, bess = site.devices["cb"], site.devices["bess1"]
    site.step_to(2.0)
    cb.set_grid(False)
    site.step_to(3.0)
    bess.write_points({"grid_mode": 0.0})  # nothing to follow without a grid
    site.step_to(4.0)
    assert bess.forming and cb.bus_v == pytest.approx(230.0)
    cb.write_points({"switch": 0.0})  # the controller takes over: open, form
    bess.write_points({"grid_mode": 1.0})
    site.step_to(5.0)
    assert bess.forming
    cb.set_grid(True)
    site.step_to(30.0)
    assert cb.in_sync()
    cb.write_points({"switch": 1.0})  # closes in sync, the trip reset
    site.step_to(31.0)
    assert cb.closed and not cb.tripped and bess.forming
    bess.write_points({"grid_mode": 0.0, "setpoint": 0.0})
    site.step_to(32.0)
    assert not bess.forming and cb.closed_out_of_sync == []


def test_the_overload_rating_carries_the_island_only_for_its_time():
    site = auto_site()
    cb, bess = site.devices["cb"], site.devices["bess1"]
    switch(site, hvac=True, water_heater=True, ev_bank=True)  # 90 kW on top of the rest
    site.step_to(2.0)
    cb.set_grid(False)
    site.step_to(8.0)
    assert bess.forming and bess.power_kw > 110.0  # beyond its 100 kW, within 150 %
    site.step_to(14.0)
    assert not bess.forming and cb.bus_v == 0.0  # 10 s of overload, then it trips
    assert site.pcc.collapses == 2  # the 15 ms break, then this


def test_loads_shed_within_the_overload_time_keep_the_island():
    site = auto_site()
    cb, bess = site.devices["cb"], site.devices["bess1"]
    switch(site, hvac=True, water_heater=True, ev_bank=True)
    site.step_to(2.0)
    cb.set_grid(False)
    site.step_to(6.0)
    switch(site, water_heater=False, ev_bank=False)
    site.step_to(60.0)
    assert bess.forming and cb.bus_v == pytest.approx(230.0) and bess.power_kw < 100.0
    assert site.pcc.collapses == 1 and site.pcc.unserved_critical_kwh == 0.0

"""The grid state machine, one handler at a time: what each state commands, when it moves on
and why; the breaker never closes onto a live bus out of sync."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from edge.island import machine as gm
from edge.island.machine import GridMachine, Observation
from edge.island.params import IslandParams

P = IslandParams(detect_s=2.0, return_s=60.0, resync_timeout_s=30.0)
GRID = dict(readable=True, closed=True, tripped=False, grid_v=230.0, grid_hz=50.0, bus_v=230.0,
            bus_hz=50.0, phase_deg=0.0, forming=False, supply=True, can_start=True, soc_pct=80.0,
            critical_kw=10.0, critical_served_kw=10.0, shed_kw=0.0)
DEAD = dict(grid_v=0.0, grid_hz=0.0)


def obs(t: float, **kw) -> Observation:
    return Observation(t_s=t, **{**GRID, **kw})


def machine(state: str = gm.ON_GRID, **kw) -> GridMachine:
    m = GridMachine(P, confirm_s=3.0, **kw)
    m.state = state
    return m


def test_on_grid_rides_through_a_dip_shorter_than_detect_s():
    m = machine()
    assert m.step(obs(0.0)) == gm.ON_GRID
    assert m.step(obs(1.0, grid_v=150.0)) == gm.ON_GRID
    assert m.step(obs(2.5, grid_v=150.0)) == gm.ON_GRID  # 1.5 s out of band
    assert m.step(obs(3.0)) == gm.ON_GRID
    assert m.close and not m.forming


def test_on_grid_goes_islanding_after_detect_s_out_of_band_with_the_reason():
    m = machine()
    m.step(obs(0.0, grid_hz=48.0))
    assert m.step(obs(2.0, grid_hz=48.0)) == gm.ISLANDING
    assert "out of band for 2.0 s" in m.transitions[-1].reason
    assert m.event is not None and m.event.start_s == 2.0


def test_on_grid_goes_islanding_at_once_when_the_breaker_trips():
    m = machine()
    assert m.step(obs(0.0, tripped=True, closed=False)) == gm.ISLANDING
    assert m.transitions[-1].reason == "the breaker tripped"


def test_an_island_the_pcs_formed_on_its_own_is_taken_over_in_the_same_step():
    m = machine()
    m.step(obs(0.0))
    # Its trip opened the PCC and it forms; the non-critical loads still read on.
    o = obs(0.4, tripped=True, closed=False, forming=True, flex_on=True, auto_transfer=True,
            **DEAD)
    assert m.step(o) == gm.ISLAND
    assert [t.target for t in m.transitions] == [gm.ISLANDING, gm.ISLAND]
    assert m.transitions[0].reason == "the breaker tripped"
    assert m.transitions[1].reason == "the PCS transferred on its own: island at 230 V 50.00 Hz"
    assert not m.close and m.forming  # told to form on, never to follow without a grid
    assert m.alarms("cb") == ("islanded:island",)  # a trip is no breaker failure


def test_a_pcs_that_transfers_on_its_own_is_told_to_form_before_the_loads_read_off():
    m = machine(gm.ISLANDING)
    m.command(False, 0.0)
    o = obs(0.2, tripped=True, closed=False, bus_v=0.0, bus_hz=0.0, flex_on=True, **DEAD)
    assert m.step(o) == gm.ISLANDING and not m.forming  # commanded: the loads go first
    o = replace(o, t_s=0.4, auto_transfer=True)
    assert m.step(o) == gm.ISLANDING and m.forming
    # Its reading comes a poll after the breaker's: still its own transfer.
    assert m.step(replace(o, t_s=0.6, forming=True, bus_v=230.0, bus_hz=50.0)) == gm.ISLAND
    assert m.transitions[-1].reason.startswith("the PCS transferred on its own")


def test_islanding_opens_first_and_never_forms_while_the_breaker_is_closed():
    m = machine(gm.ISLANDING)
    assert m.step(obs(10.0, **DEAD)) == gm.ISLANDING
    assert not m.close and not m.forming  # the PCC is still closed: no voltage source
    assert m.step(obs(11.0, closed=False, bus_v=0.0, bus_hz=0.0, **DEAD)) == gm.ISLANDING
    assert m.forming  # open now: the batteries are told to form
    assert m.step(obs(12.0, closed=False, forming=True, **DEAD)) == gm.ISLAND
    assert m.transitions[-1].reason.startswith("island formed")


def test_a_breaker_that_fails_to_open_is_alarmed_and_no_island_is_formed():
    m = machine(gm.ISLANDING)
    m.command(False, 10.0)
    for t in (10.0, 11.0, 12.0, 13.5, 20.0):
        assert m.step(obs(t, **DEAD)) == gm.ISLANDING
    assert not m.forming
    assert "breaker_no_confirm:cb:open" in m.alarms("cb")
    assert "islanded:islanding" in m.alarms("cb")


def test_islanding_returns_on_grid_when_the_grid_comes_back_before_the_breaker_opened():
    m = machine(gm.ISLANDING)
    assert m.step(obs(1.0)) == gm.ON_GRID


def test_islanding_without_battery_energy_goes_to_black_start():
    m = machine(gm.ISLANDING)
    assert m.step(obs(1.0, closed=False, supply=False, **DEAD)) == gm.BLACK_START


def test_island_holds_and_resyncs_only_after_return_s_in_band():
    m = machine(gm.ISLAND)
    m.command(False, 0.0)
    live = dict(closed=False, forming=True, bus_v=231.0, bus_hz=50.1)
    assert m.step(obs(1.0, **live, **DEAD)) == gm.ISLAND
    assert m.step(obs(2.0, **live)) == gm.ISLAND  # grid back: in band from now
    assert m.step(obs(61.0, **live)) == gm.ISLAND
    assert m.step(obs(62.0, **live)) == gm.RESYNC
    assert m.transitions[-1].reason == "grid back in band for 60 s"


def test_island_collapses_to_black_start_when_the_bus_dies():
    m = machine(gm.ISLAND)
    assert m.step(obs(1.0, closed=False, forming=True, bus_v=0.0, **DEAD)) == gm.BLACK_START
    assert "collapsed" in m.transitions[-1].reason


@pytest.mark.parametrize("off", [dict(bus_v=200.0), dict(bus_hz=50.5), dict(phase_deg=25.0)])
def test_resync_never_closes_out_of_sync(off):
    m = machine(gm.RESYNC)
    m.command(False, 0.0)
    for t in range(1, 40):
        m.step(obs(float(t), closed=False, forming=True, **off))
        assert not m.close
    assert m.forming
    assert "resync_timeout:cb" in m.alarms("cb")


def test_resync_closes_inside_the_window_and_withdraws_the_close_when_it_drifts_out():
    m = machine(gm.RESYNC)
    m.command(False, 0.0)
    m.step(obs(1.0, closed=False, forming=True, phase_deg=5.0))
    assert m.close  # V, f and phase within the window
    m.step(obs(1.2, closed=False, forming=True, phase_deg=-15.0))
    assert not m.close  # drifted before the breaker closed: the close is withdrawn
    m.step(obs(1.4, closed=False, forming=True, phase_deg=355.0))  # -5°, wrapped
    assert m.close
    assert m.step(obs(1.6, closed=True, forming=True)) == gm.ON_GRID
    assert m.step(obs(1.8)) == gm.ON_GRID and not m.forming


def test_resync_falls_back_to_island_when_the_grid_leaves_its_band():
    m = machine(gm.RESYNC)
    assert m.step(obs(1.0, closed=False, forming=True, grid_hz=51.0)) == gm.ISLAND


def test_black_start_closes_onto_a_dead_bus_once_the_grid_is_back():
    m = machine(gm.BLACK_START)
    dead_bus = dict(closed=False, forming=False, bus_v=0.0, bus_hz=0.0, can_start=False)
    m.step(obs(0.0, **dead_bus))
    assert not m.close
    m.step(obs(61.0, **dead_bus))
    assert m.close and not m.forming  # no sync needed: nothing on the site side
    assert m.step(obs(62.0, closed=True, bus_v=230.0)) == gm.ON_GRID


def test_black_start_does_not_close_onto_a_live_bus():
    m = machine(gm.BLACK_START)
    m.step(obs(0.0, closed=False, bus_v=120.0, phase_deg=90.0, forming=False))
    m.step(obs(61.0, closed=False, bus_v=120.0, phase_deg=90.0, forming=False))
    assert not m.close


def test_black_start_re_energises_from_a_battery_with_energy():
    m = machine(gm.BLACK_START)
    m.step(obs(0.0, closed=False, bus_v=0.0, can_start=True, **DEAD))
    assert m.forming
    assert m.step(obs(1.0, closed=False, forming=True, **DEAD)) == gm.ISLAND
    assert m.transitions[-1].reason.startswith("bus re-energised")


def test_an_outage_yields_one_event_report():
    m = machine()
    live = dict(closed=False, forming=True)
    seq = [obs(0.0), obs(1.0, **DEAD), obs(3.0, **DEAD),  # lost at 3 s
           obs(4.0, closed=False, bus_v=0.0, **DEAD),
           obs(5.0, **live, shed_kw=20.0, soc_pct=70.0, **DEAD)]  # island at 5 s
    seq += [obs(5.0 + 360 * i, **live, shed_kw=20.0, soc_pct=70.0 - i, **DEAD) for i in range(1, 11)]
    seq += [obs(3700.0 + 60 * i, **live, soc_pct=60.0) for i in range(3)]  # back, 120 s
    seq += [obs(3900.0, closed=True)]
    for o in seq:
        m.step(o)
    assert m.state == gm.ON_GRID and m.event is None
    ev = m.events[-1].as_dict()
    assert [t.target for t in m.transitions] == [gm.ISLANDING, gm.ISLAND, gm.RESYNC, gm.ON_GRID]
    assert ev["start_s"] == 3.0 and ev["transfer_s"] == 2.0 and ev["end_s"] == 3900.0
    assert ev["min_soc_pct"] == 60.0
    assert ev["critical_served_ratio"] == 1.0
    assert ev["shed_kwh"] == pytest.approx(20.0 * 3600 / 3600, rel=0.01)


def test_the_machine_clones_without_sharing_its_event():
    m = machine(gm.ISLANDING)
    m.event = gm.IslandEvent(start_s=0.0)
    c = m.clone()
    c.event.shed_kwh = 5.0
    c.transitions.append(gm.Transition(0.0, "a", "b", "c"))
    assert m.event.shed_kwh == 0.0 and not m.transitions
    assert math.isnan(replace(m.event).min_soc_pct)


def test_islanding_forms_only_once_the_shed_loads_read_off():
    m = machine(gm.ISLANDING)
    open_dead = dict(closed=False, bus_v=0.0, bus_hz=0.0, **DEAD)
    m.step(obs(1.0, flex_on=True, **open_dead))
    assert not m.forming  # the PCS would start under the full load
    m.step(obs(2.0, flex_on=False, any_on=True, **open_dead))
    assert m.forming  # the critical loads stay on: they are what the island is for


def test_black_start_forms_onto_an_empty_bus_only():
    m = machine(gm.BLACK_START)
    m.step(obs(0.0, closed=False, bus_v=0.0, any_on=True, **DEAD))
    assert not m.forming
    m.step(obs(1.0, closed=False, bus_v=0.0, any_on=False, **DEAD))
    assert m.forming


def test_a_missed_battery_poll_is_no_collapse():
    m = machine(gm.ISLAND)
    m.command(False, 0.0)
    assert m.step(obs(1.0, closed=False, forming=False, batteries_read=False, **DEAD)) == gm.ISLAND
    assert m.forming


def test_an_empty_battery_that_still_forms_does_not_bring_the_island_back():
    m = machine(gm.ISLAND)
    m.command(False, 0.0)
    empty = dict(closed=False, forming=True, supply=False, can_start=False, **DEAD)
    assert m.step(obs(1.0, **empty)) == gm.BLACK_START
    assert m.step(obs(2.0, **empty)) == gm.BLACK_START
    assert not m.forming and [t.target for t in m.transitions] == [gm.BLACK_START]


def test_resync_gives_up_the_island_at_the_batteries_minimum():
    m = machine(gm.RESYNC)
    m.command(False, 0.0)
    assert m.step(obs(1.0, closed=False, forming=True, supply=False, phase_deg=90.0)) \
        == gm.BLACK_START
    assert not m.close

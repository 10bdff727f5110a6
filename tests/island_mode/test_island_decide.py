"""decide() on a microgrid through an outage: the cycle leaves normal mode when the grid is
lost, opens the breaker, lets the battery form the grid, sheds by priority and comes back."""

from __future__ import annotations

import math

from microgrid_site import CONFIG, image

from edge.control.decide import Controller
from edge.control.kernel import load_kernel
from edge.report.telemetry import build


def test_an_outage_from_detection_to_resync_and_close():
    ctl = Controller(CONFIG, load_kernel())
    mem = ctl.initial_memory()
    d, mem = ctl.decide(image(), None, mem, 0.0)
    assert d.grid_state == "on_grid" and d.breaker_closed == {"cb": True}
    d, mem = ctl.decide(image(grid_v=0.0), None, mem, 1.0)
    assert d.grid_state == "on_grid"  # not yet detect_s
    d, mem = ctl.decide(image(grid_v=0.0), None, mem, 2.0)
    assert d.grid_state == "islanding" and d.mode == "island"
    assert d.breaker_closed == {"cb": False}
    assert d.bess_kw == {"bess": 0.0}  # breaker still closed: no grid forming yet
    assert d.load_on == {"fridge": True, "hvac": False, "pump": False}
    assert "islanded:islanding" in d.alarms
    assert build(CONFIG, image(grid_v=0.0), d)["grid_state"] == "islanding"

    d, mem = ctl.decide(image(grid_v=0.0, closed=False, bus_v=0.0), None, mem, 2.5)
    assert d.bess_kw == {"bess": 0.0}  # open, but the shed loads still read on
    shed = {"fridge": 1.0, "hvac": 0.0, "pump": 0.0}
    d, mem = ctl.decide(image(grid_v=0.0, closed=False, bus_v=0.0, loads=shed), None, mem, 3.0)
    assert math.isnan(d.bess_kw["bess"])  # open and shed: form the grid
    d, mem = ctl.decide(image(grid_v=0.0, closed=False, forming=1.0, loads=shed), None, mem, 4.0)
    assert d.grid_state == "island"
    assert d.load_on["fridge"] and d.load_on["hvac"]  # restored: highest priority first

    t = 5.0
    for t in (5.0, 10.0, 15.0, 16.0):  # grid back at 5 s, in band for return_s = 10 s
        d, mem = ctl.decide(image(closed=False, forming=1.0), None, mem, t)
    assert d.grid_state == "resync" and d.breaker_closed == {"cb": True}
    d, mem = ctl.decide(image(closed=True, forming=1.0), None, mem, 17.0)
    assert d.grid_state == "on_grid" and d.mode != "island"
    assert not math.isnan(d.bess_kw["bess"])  # following again: a power setpoint
    event = mem.roles["breaker"].machine.events[-1].as_dict()
    assert event["start_s"] == 2.0 and event["end_s"] == 17.0


def test_the_safe_state_keeps_an_island_formed():
    ctl = Controller(CONFIG, load_kernel())
    mem = ctl.initial_memory()
    shed = {"fridge": 1.0, "hvac": 0.0, "pump": 0.0}
    for t, img in ((0.0, image(grid_v=0.0)), (2.0, image(grid_v=0.0)),
                   (3.0, image(grid_v=0.0, closed=False, bus_v=0.0, loads=shed))):
        _, mem = ctl.decide(img, None, mem, t)
    stop = ctl.safe(image(grid_v=0.0, closed=False, forming=1.0, loads=shed), mem, 4.0,
                    final=True)
    assert math.isnan(stop.bess_kw["bess"]) and stop.breaker_closed == {"cb": False}
    on_grid = ctl.safe(image(), ctl.initial_memory(), 0.0, final=True)
    assert on_grid.bess_kw == {"bess": 0.0} and on_grid.breaker_closed == {"cb": True}

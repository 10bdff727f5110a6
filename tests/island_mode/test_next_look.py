"""The moments of a transfer are not left to the next regular cycle: the grid is declared lost
the instant detect_s runs out, and the changeover (the breaker opening, the PCS forming) is
looked at every transfer_poll_s. Time is the test's own (fake) clock; the last test runs the
real cycle loop with a manual clock and an hour-long period."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from fakes import ManualClock
from microgrid_site import CONFIG, image

from edge.control.decide import Controller
from edge.control.kernel import load_kernel
from edge.cycle import ControlCycle
from edge.island import machine as gm
from edge.island.machine import GridMachine, Observation
from edge.island.params import IslandParams

KERNEL = load_kernel()
PERIOD_S = 1.5  # the regular cycle of these tests (detect_s is 1.0)
SHED = {"fridge": 1.0, "hvac": 0.0, "pump": 0.0}
OPEN = dict(grid_v=0.0, closed=False, bus_v=0.0)


def cycles(ctl: Controller, mem, t: float, until: float, look) -> list[tuple[float, str]]:
    """Run decide() as the cycle does: every PERIOD_S, or sooner when a decision asks;
    `look(t)` is the image at t. (time, grid state) per cycle."""
    seen = []
    while t <= until:
        d, mem = ctl.decide(look(t), None, mem, t)
        seen.append((round(t, 3), d.grid_state))
        t = min(t + PERIOD_S, d.next_look_s if d.next_look_s is not None else float("inf"))
    return seen


def test_the_grid_is_declared_lost_when_detect_s_runs_out_not_at_the_next_cycle():
    ctl = Controller(CONFIG, KERNEL)  # detect_s 1.0
    mem = ctl.initial_memory()
    _, mem = ctl.decide(image(), None, mem, 0.0)
    # The grid goes at 0.2 s; the cycles at 0.3, 1.8, 3.3 ... would declare it at 1.8.
    seen = cycles(ctl, mem, 0.3, 1.5, lambda t: image(grid_v=0.0))
    assert seen[:2] == [(0.3, "on_grid"), (1.3, "islanding")]
    d, _ = ctl.decide(image(grid_v=0.0), None, ctl.initial_memory(), 5.0)
    assert d.next_look_s == 6.0  # out of band since 5.0: look again at 5.0 + detect_s


def test_a_grid_back_in_band_asks_for_no_early_look():
    ctl = Controller(CONFIG, KERNEL)
    mem = ctl.initial_memory()
    _, mem = ctl.decide(image(grid_v=0.0), None, mem, 0.0)
    d, _ = ctl.decide(image(), None, mem, 0.5)
    assert d.grid_state == "on_grid" and d.next_look_s is None


def test_the_changeover_is_looked_at_every_transfer_poll_s_until_the_island_stands():
    ctl = Controller(CONFIG, KERNEL)
    mem = ctl.initial_memory()
    _, mem = ctl.decide(image(grid_v=0.0), None, mem, 0.0)

    def site(t: float):  # breaker open at 1.1 s (0.1 s operating time), loads off with it,
        if t < 1.1:  # the PCS forms 0.5 s after it is told to
            return image(grid_v=0.0)
        if formed_at is None or t < formed_at:
            return image(**OPEN, loads=SHED, forming=1.0 if formed_at else 0.0)
        return image(grid_v=0.0, closed=False, forming=1.0, loads=SHED)

    formed_at = None
    seen = []
    t = 1.0
    while not seen or seen[-1][1] != "island":
        d, mem = ctl.decide(site(t), None, mem, t)
        seen.append((round(t, 3), d.grid_state))
        if d.grid_state == "islanding" and formed_at is None and d.bess_kw["bess"] != 0.0:
            formed_at = t + 0.5  # told to form (grid_mode 1, no power setpoint) now
        t = min(t + PERIOD_S, d.next_look_s if d.next_look_s is not None else float("inf"))
    assert [s for _, s in seen] == ["islanding"] * (len(seen) - 1) + ["island"]
    assert [x for x, _ in seen] == [1.0, 1.2, 1.4, 1.6, 1.8]  # not 1.0, 2.5, 4.0
    assert d.next_look_s is None  # standing: the regular cycle again


def test_a_stuck_changeover_falls_back_to_the_regular_cycle_after_confirm_s():
    m = GridMachine(IslandParams(transfer_poll_s=0.2), confirm_s=3.0, state=gm.ISLANDING)
    lost = dict(readable=True, closed=True, tripped=False, grid_v=0.0, grid_hz=0.0, bus_v=0.0,
                bus_hz=0.0, phase_deg=0.0, forming=False, supply=True, can_start=True)
    m.step(Observation(t_s=10.0, **lost))  # the open command goes out
    assert m.next_look_s == pytest.approx(10.2)
    m.step(Observation(t_s=12.9, **lost))
    assert m.next_look_s == pytest.approx(13.1)
    m.step(Observation(t_s=13.5, **lost))  # past confirm_s: the breaker is alarmed instead
    assert m.next_look_s is None and "breaker_no_confirm:cb:open" in m.alarms("cb")


async def test_the_cycle_runs_its_next_step_when_the_decision_asks_not_a_period_later():
    config = CONFIG.model_copy(update={"control": CONFIG.control.model_copy(
        update={"cycle_s": 3600.0})})
    clock = ManualClock()
    cycle = ControlCycle(config, {}, KERNEL, clock)
    stop, steps = asyncio.Event(), []

    async def step():
        steps.append(clock.t)
        cycle.decision = SimpleNamespace(next_look_s=clock.t + 0.02)
        if len(steps) == 3:
            stop.set()

    cycle.step = step
    # Without the asked-for look the second step would come an hour later.
    await asyncio.wait_for(cycle.run(stop), 30)
    assert len(steps) == 3

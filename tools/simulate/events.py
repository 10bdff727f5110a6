"""The scenario's events as the daemon meets them: DR events become grid-operator
instructions at their notice, device outages stop and restart the HIL's device."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import timedelta

from edge.app.clock import Clock
from edge.control.instructions import Instruction
from hil.scenario import DeviceOffline, DrEvent, GridOutage, Scenario, Window
from hil.site import SimSite

log = logging.getLogger(__name__)


def dr_instruction(w: Window) -> Instruction:
    e = w.event
    assert isinstance(e, DrEvent)
    return Instruction(
        id=w.id, source="grid_operator", start=w.start, end=w.end,
        grid_max_kw=math.inf if e.grid_max_kw is None else e.grid_max_kw,
        grid_min_kw=-math.inf if e.grid_min_kw is None else e.grid_min_kw,
        grid_target_kw=math.nan if e.grid_target_kw is None else e.grid_target_kw)


async def fire_events(scenario: Scenario, clock: Clock, site: SimSite, daemon) -> None:
    """Fire the scenario's events at their simulated instants (DR events at their notice)."""
    actions = []
    for w in scenario.windows:
        if isinstance(w.event, DrEvent):
            at = w.start - timedelta(minutes=w.event.notice_min)
            actions.append((at, f"DR {w.id} announced",
                            lambda w=w: daemon.cycle.book.put(dr_instruction(w))))
        elif isinstance(w.event, DeviceOffline):
            dev = w.event.device
            actions.append((w.start, f"{dev} offline", lambda d=dev: site.stop_device(d)))
            actions.append((w.end, f"{dev} back", lambda d=dev: site.start_device(d)))
        elif isinstance(w.event, GridOutage):
            cb, stuck = site.pcc.breaker, w.event.breaker_fails_to_open
            actions.append((w.start, "grid outage", lambda: (cb.set_grid(False),
                                                             cb.set_fails_to_open(stuck))))
            actions.append((w.end, "grid back", lambda: (cb.set_grid(True),
                                                         cb.set_fails_to_open(False))))
    for at, what, act in sorted(actions, key=lambda a: a[0]):
        wait = (at - clock.now()).total_seconds()
        if wait > 0:
            await asyncio.sleep(clock.wall_s(wait))
        log.info("scenario %s: %s at %s", scenario.name, what, at.isoformat())
        result = act()
        if asyncio.iscoroutine(result):
            await result



"""The safe state is written on the way down even when the stop lands while Modbus requests
are on the wire: the stop cancels them, the units they went to back off, and the final
write must go out past that backoff, retried within its budget. The HIL runs in its own
process (hil/process.py) with slow devices, so requests are in flight when the daemon stops."""

from __future__ import annotations

import asyncio
import copy

import pytest
from conftest import wait_for
from site_harness import device, site_dict

from edge import config as config_mod
from edge.app.daemon import Daemon
from hil.devices.base import Fault
from hil.process import SiteProcess

SPEED = 60.0
STOPS = 10
SLOW_S = 0.1  # every request answered this late: a poll outlasts the cycle's 0.2 s deadline


def _endpoint(daemon: Daemon, dev_id: str):
    unit = daemon.devices[dev_id].sunspec
    return unit.endpoint, unit.unit


async def _stop_while_in_flight(daemon: Daemon, stop: asyncio.Event, task: asyncio.Task,
                                mid_request: bool) -> None:
    """Stop once bess1's unit has been abandoned on the wire (it backs off) and, with
    `mid_request`, once its next request is on the wire again."""
    ep, unit = _endpoint(daemon, "bess1")
    await wait_for(lambda: ep.unanswered(unit), 30, "a bess1 request abandoned on the wire")
    if mid_request:
        # The endpoint lock is held exactly while a request is being sent or awaited.
        await wait_for(lambda: ep._lock.locked(), 30, "a bess1 request in flight")  # noqa: SLF001
    stop.set()
    await asyncio.gather(task, return_exceptions=True)


async def test_safe_state_is_written_when_the_stop_cancels_requests_in_flight(tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port)
    data["hil"]["start"] = "2026-06-22T17:30:00+08:00"  # importing: self-consumption discharges
    device(data, "bess1")["sim"] = {"initial_soc_pct": 90}
    for dev_id in ("pv1", "bess1"):
        device(data, dev_id)["revert_s"] = 3600  # no device reverts on its own during the test
    cfg = config_mod.parse(copy.deepcopy(data))
    pv_safe_kw = cfg.pv_safe_kw(next(d for d in cfg.devices if d.id == "pv1"))
    held = []
    async with SiteProcess(cfg, SPEED) as site:
        for i in range(STOPS):
            for dev_id in ("pv1", "bess1"):
                site.clear(dev_id)
            daemon = Daemon(cfg, site.clock)
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            try:
                await asyncio.wait_for(daemon.ready.wait(), 30)
                await wait_for(lambda: site.state("bess1")["command_kw"] > 1, 30,
                               "the battery discharging")
                await wait_for(lambda: site.state("pv1")["limit_kw"] != pv_safe_kw, 30,
                               "PV above its safe level")
                for dev_id in ("pv1", "bess1"):
                    site.inject(dev_id, Fault(delay_s=SLOW_S))
                await _stop_while_in_flight(daemon, stop, task, mid_request=i % 2 == 1)
            finally:
                stop.set()
                await asyncio.gather(task, return_exceptions=True)
            assert task.exception() is None
            bess, pv = site.state("bess1"), site.state("pv1")
            held.append((bess["command_kw"], pv["limit_kw"]))
    unsafe = [(i, kw, limit) for i, (kw, limit) in enumerate(held)
              if kw != 0.0 or limit != pytest.approx(pv_safe_kw)]
    assert not unsafe, f"{len(unsafe)} of {STOPS} stops left (battery kW, PV limit kW): {unsafe}"

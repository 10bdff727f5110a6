"""A flexible load end to end on loopback Modbus TCP: the map-driven driver (role `load`,
drivers/maps/flexload_generic.yaml) against its HIL contactor, whose draw is part of the
simulated site load."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from conftest import free_port

from drivers.base import DeviceError, FlexLoad
from drivers.modbus.mapped import MapFlexLoad
from drivers.modbus.regmap import MapError, map_for
from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.config import parse
from hil.site import SimSite

START = "2026-06-22T12:00:00+08:00"


def config(safe_state: str = "on", map_name: str = "flexload_generic"):
    return parse({
        "site": {"id": "flex", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "measures": "grid", "protocol": "modbus-tcp",
             "map": "meter3p_generic", "port": free_port(), "timeout_s": 0.5,
             "sim": {"profile": "flat", "day_kw": 30}},
            {"id": "hvac", "host": "127.0.0.1", "role": "load", "map": map_name, "port": free_port(),
             "timeout_s": 0.5, "rated_kw": 20, "priority": 1, "safe_state": safe_state},
        ],
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
    })


@pytest.fixture
async def site_and_drivers() -> AsyncIterator:
    opened = []

    async def _open(safe_state: str = "on"):
        cfg = config(safe_state)
        # Speed 1: physics only moves when the test steps it (the wall clock barely does).
        site = SimSite(cfg, Clock(datetime.fromisoformat(START), 1.0))
        await site.start()
        devices = build_devices(cfg)
        opened.append((site, devices))
        for d in devices.values():
            await d.connect()
        return site, devices

    yield _open
    for site, devices in opened:
        for d in devices.values():
            await d.close()
        await site.stop()


async def test_driver_switches_the_contactor_and_the_site_load_follows(site_and_drivers):
    site, devices = await site_and_drivers()
    hvac = devices["hvac"]
    assert isinstance(hvac, MapFlexLoad) and isinstance(hvac, FlexLoad)
    site.step_to(site.t_s + 1)
    r = await hvac.poll()
    assert r.values["on"] == 1.0 and r.values["power_kw"] == pytest.approx(20.0)
    assert site.last.load_kw == pytest.approx(50.0) and site.last.grid_kw == pytest.approx(50.0)
    assert (await devices["pcc"].poll()).values["power_kw"] == pytest.approx(50.0)

    await hvac.write_on(False, 30)
    site.step_to(site.t_s + 1)
    r = await hvac.poll()
    assert r.values["on"] == 0.0 and r.values["power_kw"] == 0.0
    assert site.last.grid_kw == pytest.approx(30.0)
    assert site.state("hvac")["operations"] == 1

    await hvac.write_on(True, 30)
    site.step_to(site.t_s + 1)
    assert (await hvac.poll()).values["power_kw"] == pytest.approx(20.0)
    assert site.devices["hvac"].operations[-1][1] is True


@pytest.mark.parametrize(("safe_state", "commanded"), [("on", False), ("off", True)])
async def test_contactor_returns_to_its_safe_state_when_not_recommanded(
        site_and_drivers, safe_state, commanded):
    site, devices = await site_and_drivers(safe_state)
    hvac = devices["hvac"]
    site.step_to(site.t_s + 1)
    assert (await hvac.poll()).values["on"] == float(safe_state == "on")
    await hvac.write_on(commanded, 30)
    t0 = site.t_s
    site.step_to(t0 + 29)
    assert (await hvac.poll()).values["on"] == float(commanded)
    site.step_to(t0 + 31)
    assert (await hvac.poll()).values["on"] == float(safe_state == "on")


async def test_contactor_rejects_a_relay_command_other_than_0_or_1(site_and_drivers):
    _, devices = await site_and_drivers()
    with pytest.raises(DeviceError, match="rejected"):
        await devices["hvac"].write({"relay": 2.0})


def test_a_load_needs_a_map_that_serves_role_load():
    with pytest.raises(MapError, match="pcs_generic serves battery, not a load"):
        map_for(config(map_name="pcs_generic").devices[1])

"""An HVAC unit and a thermal storage tank end to end on loopback Modbus TCP: the map-driven
drivers (drivers/maps/hvac_generic.yaml, hvac_sgready.yaml, tes_generic.yaml) against their
HIL simulators, whose zone follows the RC physics of hil/thermal.py."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from conftest import free_port

from drivers.base import DeviceError, Hvac, Quality, ThermalStorage
from drivers.modbus.mapped import sg_ready_state
from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.config import parse
from edge.image.poll import Poller
from edge.roles import ROLES
from hil.site import SimSite
from hil.thermal import ZoneSim, zone_step

START = "2026-07-01T12:00:00+08:00"


def site(hvac_map: str = "hvac_generic", **zone) -> dict:
    return {
        "site": {"id": "th", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "measures": "grid",
             "protocol": "modbus-tcp", "map": "meter3p_generic", "port": free_port(),
             "timeout_s": 0.5, "sim": {"profile": "flat", "day_kw": 30}},
            {"id": "ahu", "host": "127.0.0.1", "role": "hvac", "map": hvac_map,
             "port": free_port(), "timeout_s": 0.5, "rated_kw": 20, "revert_s": 30,
             "sim": {"zone": {"initial_c": 25.0, **zone}}},
            {"id": "tank", "host": "127.0.0.1", "role": "thermal_storage", "map": "tes_generic",
             "port": free_port(), "timeout_s": 0.5, "capacity_kwh": 300, "max_charge_kw": 30,
             "max_discharge_kw": 30, "revert_s": 30, "sim": {"initial_soc_pct": 50}},
        ],
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
    }


@pytest.fixture
async def open_site() -> AsyncIterator:
    opened = []

    async def _open(hvac_map: str = "hvac_generic", **zone):
        cfg = parse(site(hvac_map, **zone))
        s = SimSite(cfg, Clock(datetime.fromisoformat(START), 1.0))
        await s.start()
        devices = build_devices(cfg)
        opened.append((s, devices))
        for d in devices.values():
            await d.connect()
        s.step_to(s.t_s + 1)
        return s, devices

    yield _open
    for s, devices in opened:
        for d in devices.values():
            await d.close()
        await s.stop()


async def test_capacity_command_sets_the_power_and_the_zone_follows_the_rc_model(open_site):
    s, devices = await open_site()
    ahu = devices["ahu"]
    assert isinstance(ahu, Hvac)
    await ahu.poll()
    await ahu.write_hvac(10.0, 30)
    t0, z0 = s.t_s, s.devices["ahu"].zone_c
    s.step_to(t0 + 20)
    r = await ahu.poll()
    assert r.values["power_kw"] == pytest.approx(10.0, abs=0.01)
    assert s.last.grid_kw == pytest.approx(40.0, abs=0.1)  # 30 kW building + the unit
    sim = s.devices["ahu"]
    assert r.values["zone_temp_c"] == pytest.approx(sim.zone_c, abs=0.06)  # sensor jitter
    # Over 20 s the inputs barely move: one exact RC step from z0 lands where the HIL did.
    z = ZoneSim(initial_c=25.0)
    local = datetime.fromisoformat(START)
    cop = sim.cfg.cop * (1 - sim.cfg.cop_slope_per_k * (z.outdoor_c(local) - sim.cfg.cop_ref_c))
    expect = zone_step(z0, 20 / 3600, z.r_k_per_kw, z.c_kwh_per_k, z.outdoor_c(local),
                       z.gains_kw(local), cop * 10.0)
    assert sim.zone_c == pytest.approx(expect, abs=0.005)
    assert sim.zone_c < z0  # 10 kW x COP outweighs the gains at noon


async def test_an_hvac_left_alone_returns_to_its_own_thermostat(open_site):
    s, devices = await open_site()
    ahu = devices["ahu"]
    await ahu.poll()
    await ahu.write_hvac(0.0, 30)
    s.step_to(s.t_s + 10)
    assert (await ahu.poll()).values["power_kw"] == 0.0
    assert s.state("ahu")["external"] == 1
    s.step_to(s.t_s + 31)  # the watchdog runs out: its own thermostat takes over
    r = await ahu.poll()
    assert s.state("ahu")["external"] == 0
    assert r.values["power_kw"] > 0  # 25 °C zone above its 24 °C thermostat: it cools
    await ahu.write_hvac(None, 30)  # handing it back on purpose does the same
    s.step_to(s.t_s + 1)
    assert s.state("ahu")["external"] == 0


async def test_a_setpoint_offset_moves_its_own_thermostat_and_reverts_to_0(open_site):
    """The offset map: the role's setpoint (K) goes out as offset_k; +1.5 K aims its own
    24 °C thermostat at 25.5 °C, above the 25 °C zone, so it stops cooling; left alone, the
    offset falls back to 0 and it cools again."""
    s, devices = await open_site("hvac_offset")
    ahu = devices["ahu"]
    r = await ahu.poll()
    assert r.values["power_kw"] > 0 and r.values["thermostat_c"] == pytest.approx(24.0)
    await ROLES["hvac"].write(ahu, 1.5, 30)
    s.step_to(s.t_s + 1)
    assert (await ahu.poll()).values["power_kw"] == 0.0
    assert s.devices["ahu"].held["offset_k"] == pytest.approx(1.5)
    s.step_to(s.t_s + 31)
    assert s.devices["ahu"].held["offset_k"] == 0.0 and s.state("ahu")["external"] == 0
    assert (await ahu.poll()).values["power_kw"] > 0
    with pytest.raises(DeviceError):
        await ahu.write_offset(12.0, 30)  # beyond what the unit takes


async def test_sg_ready_states_approximate_the_power_asked(open_site):
    s, devices = await open_site("hvac_sgready")
    ahu = devices["ahu"]
    await ahu.poll()
    for kw, state, expect in ((0.0, 1, 0.0), (20.0, 4, 20.0)):
        assert sg_ready_state(kw, 20.0) == state
        await ahu.write_hvac(kw, 30)
        s.step_to(s.t_s + 1)
        assert (await ahu.poll()).values["power_kw"] == pytest.approx(expect)
    assert sg_ready_state(None, 20.0) == 2 and sg_ready_state(12.0, 20.0) == 3


async def test_an_implausible_zone_reading_makes_the_unit_stale_in_the_image(open_site):
    """A broken sensor on a unit that still answers: the poll succeeds (the link is fine),
    the image marks the unit STALE, so control hands it to its own thermostat."""
    s, devices = await open_site()
    poller = Poller(s.config, devices, s.clock)
    await poller.poll(1.0)
    assert poller.build_image(1.0).good("ahu")
    s.devices["ahu"].read_c = 200.0  # an open sensor circuit reads full scale
    assert (await devices["ahu"].poll()).values["zone_temp_c"] == pytest.approx(200.0)
    await poller.poll(1.0)
    image = poller.build_image(1.0)
    assert image.devices["ahu"].quality is Quality.STALE and image.good("tank")
    assert poller.health["ahu"].failed_polls == 0  # not counted as a lost link


async def test_the_tank_charges_at_its_cop_and_reports_its_temperature(open_site):
    s, devices = await open_site()
    tank = devices["tank"]
    assert isinstance(tank, ThermalStorage)
    r0 = await tank.poll()
    assert r0.values["tank_temp_c"] == pytest.approx(8.0, abs=0.01)  # half way from 12 to 4 °C
    await tank.write_power(30.0, 30)
    s.step_to(s.t_s + 20)
    sim = s.devices["tank"]
    r = await tank.poll()
    assert r.values["power_kw"] == pytest.approx(30.0, abs=0.01)
    ahu = s.state("ahu")["power_kw"]  # on its own thermostat meanwhile
    assert s.last.grid_kw == pytest.approx(30.0 + ahu + 30.0, abs=0.1)
    assert r.values["tank_temp_c"] < r0.values["tank_temp_c"]
    assert sim.soc_pct > 50.0 and math.isfinite(sim.soc_pct)
    await tank.write_power(-30.0, 30)
    s.step_to(s.t_s + 20)
    ahu = s.state("ahu")["power_kw"]
    assert s.last.grid_kw == pytest.approx(30.0 + ahu - 30.0, abs=0.1)  # it relieves 30 kW

"""Coils and discrete inputs in register maps, and the PCC breaker driven through them: the
driver against the HIL breaker over loopback Modbus TCP (coil command, discrete-input
position after the operating time, a breaker that will not open)."""

from __future__ import annotations

import pytest
from microgrid_site import CONFIG, T0
from test_modbus_map import served

from drivers.base import DeviceError
from drivers.modbus.mapped import MapBattery, MapBreaker, plan_reads
from drivers.modbus.regmap import MapError, load_map, parse_map
from hil.devices import build
from hil.devices.base import Env
from hil.devices.breaker import MapBreakerSim

CB = next(d for d in CONFIG.devices if d.id == "cb")
BESS = next(d for d in CONFIG.devices if d.id == "bess")


def env(t: float) -> Env:
    return Env(t, T0, T0, 31.0, 121.0)


def err(point: dict) -> str:
    with pytest.raises(MapError) as exc:
        parse_map({"name": "x", "vendor": "t", "points": [point]}, "drivers/maps/x.yaml")
    return str(exc.value)


def test_bit_points_are_bools_and_registers_are_not():
    assert "coil points are single bits: use type bool" in err(
        {"key": "switch", "address": 0, "function": "coil", "type": "uint16", "access": "rw"})
    assert "type: bool is for coils and discrete inputs" in err(
        {"key": "x", "address": 0, "type": "bool"})


def test_discrete_inputs_are_read_only_and_controls_go_to_coils_or_holding_registers():
    assert "discrete inputs are read-only" in err(
        {"key": "x", "address": 0, "function": "discrete", "access": "rw"})
    assert "must be a holding register or a coil" in err(
        {"key": "switch", "address": 0, "function": "discrete", "access": "rw"})


def test_breaker_map_reads_bits_and_registers_in_one_request_each():
    m = load_map("breaker_generic")
    blocks = plan_reads([p for p in m.points if p.poll == "fast"])
    assert [(b.function, b.address, b.count) for b in blocks] == [
        ("input", 0, 5), ("coil", 0, 1), ("discrete", 0, 2)]


async def test_breaker_opens_after_its_operating_time_and_reads_back_through_coils():
    sim = build(CB.model_copy(update={"sim": {"operate_s": 2.0}}), 100.0)
    assert isinstance(sim, MapBreakerSim)
    async with served(sim) as ep:
        cb = MapBreaker("cb", ep, 1, load_map("breaker_generic"))
        await cb.connect()
        r = await cb.poll()
        assert r.values["closed"] == 1.0 and r.values["grid_v"] == pytest.approx(230.0)
        assert r.values["grid_hz"] == pytest.approx(50.0)
        sim.set_grid(False)
        sim.step(env(10.0), 1.0)
        await cb.write_switch(False)  # coil written, read back
        assert sim.held["switch"] == 0.0
        sim.step(env(11.0), 1.0)
        assert (await cb.poll()).values["closed"] == 1.0  # still moving
        sim.step(env(12.0), 1.0)
        r = await cb.poll()
        assert r.values["closed"] == 0.0 and r.values["grid_v"] == 0.0
        assert sim.operations == [(12.0, False)]


async def test_a_breaker_that_fails_to_open_keeps_reading_closed():
    sim = build(CB.model_copy(update={"sim": {"fails_to_open": True}}), 100.0)
    async with served(sim) as ep:
        cb = MapBreaker("cb", ep, 1, load_map("breaker_generic"))
        await cb.connect()
        await cb.write_switch(False)
        for t in range(10):
            sim.step(env(float(t)), 1.0)
        assert (await cb.poll()).values["closed"] == 1.0 and not sim.operations


async def test_pcs_is_told_to_form_the_grid_and_back_to_following():
    sim = build(BESS, 100.0)
    async with served(sim) as ep:
        bess = MapBattery("bess", ep, 1, load_map("pcs_generic"))
        await bess.connect()
        await bess.write_forming(60)
        assert not sim.forming and (await bess.poll()).values["grid_mode"] == 1.0
        sim.step(env(1.0), 1.0)  # past its form_s (0.5 s)
        assert sim.forming
        await bess.write_power(5.0, 60)
        assert not sim.forming and sim.held["setpoint"] == pytest.approx(5.0)


async def test_a_pcs_map_without_grid_mode_cannot_be_told_to_form():
    sim = build(BESS, 100.0)
    async with served(sim) as ep:
        regmap = load_map("pcs_generic")
        bare = regmap.model_copy(update={"points": [p for p in regmap.points
                                                    if p.key != "grid_mode"]})
        with pytest.raises(DeviceError, match="no grid_mode point"):
            await MapBattery("bess", ep, 1, bare).write_forming(60)


async def test_a_pcs_told_to_transfer_on_its_own_gets_auto_transfer_with_every_command():
    sim = build(BESS, 100.0)
    async with served(sim) as ep:
        bess = MapBattery("bess", ep, 1, load_map("pcs_generic"), auto_transfer=True)
        await bess.connect()
        await bess.write_power(5.0, 60)
        assert sim.auto and (await bess.poll()).values["auto_transfer"] == 1.0
        sim.held["auto_transfer"] = 0.0  # it restarted with its factory setting
        await bess.write_forming(60)
        assert sim.auto
        plain = MapBattery("bess", ep, 1, load_map("pcs_generic"))
        sim.held["auto_transfer"] = 0.0
        await plain.write_power(5.0, 60)
        assert not sim.auto  # not configured: left as it is


async def test_a_pcs_map_without_auto_transfer_cannot_be_told_to_transfer():
    sim = build(BESS, 100.0)
    async with served(sim) as ep:
        regmap = load_map("pcs_generic")
        bare = regmap.model_copy(update={"points": [p for p in regmap.points
                                                    if p.key != "auto_transfer"]})
        with pytest.raises(DeviceError, match="no writable point 'auto_transfer'"):
            await MapBattery("bess", ep, 1, bare, auto_transfer=True).write_power(5.0, 60)

"""Register-map devices on the wire: a poll round is one read where the map lets reads bridge
unmapped registers (and decodes what separate reads decode), a device that refuses such a
read is read run by run from then on, and a control write the poll covers goes out without a
read-back request: the next poll verifies it, and a command the device did not take is a
failed write of the write phase while the device stays good."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from conftest import free_port
from pymodbus.server import ModbusTcpServer
from test_modbus_map import battery_cfg, site_config, write_map
from test_sunspec_driver import Proxy

from drivers.base import urgent
from drivers.modbus.endpoint import Endpoint
from drivers.modbus.mapped import MapBattery, MapDevice, plan_reads
from drivers.modbus.regmap import MapError, load_map, load_map_file
from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.control import kernel as dispatch
from edge.cycle import ControlCycle
from hil.config import hil_of
from hil.devices import build
from hil.devices.mapped import MapBatteryPcs, MapSimDevice
from hil.site import SimSite

READ, WRITE = 0x03, 0x10
PCS = load_map("pcs_generic")


@contextlib.asynccontextmanager
async def proxied(*sims: MapSimDevice) -> AsyncIterator[tuple[Endpoint, Proxy]]:
    """The HIL devices behind one loopback port, a request-counting proxy in front, and a
    driver endpoint to the proxy."""
    port = free_port()
    server = ModbusTcpServer([s.sim_device() for s in sims], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    proxy = Proxy(port)
    await proxy.start()
    endpoint = Endpoint("127.0.0.1", proxy.port, 0.5)
    try:
        yield endpoint, proxy
    finally:
        await endpoint.close()
        await proxy.stop()
        await server.shutdown()


@contextlib.asynccontextmanager
async def connected(sim: MapBatteryPcs) -> AsyncIterator[tuple[MapBattery, Proxy]]:
    """A pcs_generic battery driver connected to `sim` through the counting proxy."""
    async with proxied(sim) as (ep, proxy):
        bess = MapBattery("bess", ep, 1, PCS)
        await bess.connect()
        yield bess, proxy


class Clamping(MapBatteryPcs):
    """Takes the command but holds at most 10 kW: what a derated PCS does."""

    def on_points(self, changes, before):
        self.held["setpoint"] = max(-10.0, min(10.0, self.held["setpoint"]))
        super().on_points(changes, before)


def test_fast_points_and_controls_are_planned_as_one_read_across_the_gap():
    fast = [p for p in PCS.points if p.poll == "fast"]
    assert PCS.max_gap > 0
    assert [(b.address, b.count) for b in plan_reads(fast, PCS.max_read, PCS.max_gap)] == [(0, 105)]
    assert [(b.address, b.count) for b in plan_reads(fast, PCS.max_read)] == [(0, 11), (100, 5)]
    # never beyond one request: a gap too long for max_read is not bridged
    assert [(b.address, b.count) for b in plan_reads(fast, 50, PCS.max_gap)] == [(0, 11), (100, 5)]


@pytest.mark.parametrize(("top", "expect"), [
    ({"max_gap": 120}, r"max_gap: 120 unmapped registers cannot fit in a read of max_read 120; "
                       r"use a max_gap below max_read"),
    ({"max_gap": -1}, r"max_gap: .*greater than or equal to 0"),
])
def test_a_bad_max_gap_is_named_with_the_fix(tmp_path, top, expect):
    path = write_map(tmp_path, "gappy", [{"key": "x", "address": 0}], **top)
    with pytest.raises(MapError, match=expect):
        load_map_file(path)


async def test_a_bridged_read_decodes_what_separate_reads_decode():
    sim = build(battery_cfg(), 100.0)
    sim.power_kw, sim.battery.soc_pct = -12.3, 61.0
    sim.held.update(enable=1.0, setpoint=-12.3, revert=45.0)
    async with proxied(sim) as (ep, proxy):
        bridged = MapDevice("b", ep, 1, PCS)
        apart = MapDevice("a", ep, 1, PCS.model_copy(update={"max_gap": 0}))
        await bridged.connect()
        await apart.connect()
        proxy.reads.clear()
        one = await bridged.poll()
        assert proxy.reads == [(1, 0, 105)]
        proxy.reads.clear()
        two = await apart.poll()
        assert proxy.reads == [(1, 0, 11), (1, 100, 5)]
    assert one.values == two.values
    assert one.values["setpoint"] == pytest.approx(-12.3) and one.values["revert"] == 45.0


async def test_a_device_refusing_a_bridged_read_is_read_run_by_run_and_told_once(caplog):
    sim = build(battery_cfg(), 100.0)
    sim.answers_gaps = False  # unmapped registers answer ILLEGAL_ADDRESS
    async with proxied(sim) as (ep, proxy):
        bess = MapBattery("bess", ep, 1, PCS)
        with caplog.at_level(logging.WARNING, logger="drivers.modbus.mapped"):
            await bess.connect()
            first = await bess.poll()
            proxy.reads.clear()
            second = await bess.poll()
    assert proxy.reads == [(1, 0, 11), (1, 100, 5)]
    assert first.values["soc_pct"] == second.values["soc_pct"] == pytest.approx(60.0)
    warned = [r.getMessage() for r in caplog.records if "unmapped registers" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("bess: refuses a read across"), warned


async def test_a_setpoint_the_poll_covers_goes_out_without_a_read_back():
    sim = build(battery_cfg(), 100.0)
    async with connected(sim) as (bess, proxy):
        await bess.poll()
        proxy.requests.clear()
        await bess.write_power(-12.34, 45)
        assert proxy.requests == [(1, WRITE)]
        assert sim.held["setpoint"] == pytest.approx(-12.3)
        proxy.requests.clear()
        await bess.poll()
        assert proxy.requests == [(1, READ)]
        assert bess.refused_write() is None


async def test_a_setpoint_the_device_does_not_take_is_found_by_the_next_poll():
    sim = Clamping(battery_cfg(), 100.0)
    async with connected(sim) as (bess, proxy):
        await bess.write_power(5.0, 60)
        await bess.poll()
        assert bess.refused_write() is None
        await bess.write_power(20.0, 60)  # the PCS holds 10 kW
        reading = await bess.poll()  # the device answered: its poll stands
        assert reading.values["setpoint"] == pytest.approx(10.0)
        why = bess.refused_write()
        assert why is not None and why.startswith(
            "bess: enable, setpoint, revert, grid_mode at 100 (map pcs_generic): the device "
            "did not take the command: wrote [1, 200, 60, 0], the next poll read [1, 100, 60, 0]")
        assert bess.refused_write() is None  # reported once
        await bess.write_power(20.0, 60)
        await bess.write_power(8.0, 60)  # a newer write before the poll: only it is checked
        await bess.poll()
        assert bess.refused_write() is None


async def test_the_final_safe_state_is_read_back_as_no_poll_follows():
    sim = build(battery_cfg(), 100.0)
    async with connected(sim) as (bess, proxy):
        proxy.requests.clear()
        with urgent():
            await bess.write_power(0.0, 60)
        assert proxy.requests == [(1, WRITE), (1, READ)]


async def test_a_write_no_poll_reads_is_still_read_back(tmp_path):
    points = [
        {"key": "power_kw", "address": 0, "type": "int32", "scale": 0.001, "unit": "kW"},
        {"key": "soc_pct", "address": 2, "type": "uint16", "scale": 0.1, "unit": "%"},
        {"key": "setpoint", "address": 10, "type": "int16", "scale": 0.1, "unit": "kW",
         "access": "rw", "poll": "slow"},
    ]
    regmap = load_map_file(write_map(tmp_path, "slowctl", points, roles=["battery"], max_gap=20))
    sim = build(battery_cfg(), 100.0)
    sim.map = regmap
    sim.held = {"setpoint": 0.0}
    async with proxied(sim) as (ep, proxy):
        bess = MapBattery("bess", ep, 1, regmap)
        await bess.connect()
        proxy.requests.clear()
        await bess.write_power(-3.0, 45)
        assert proxy.requests == [(1, WRITE), (1, READ)]


async def test_the_cycle_counts_a_refused_setpoint_as_a_failed_write_and_keeps_the_device_good(
        caplog):
    sim_cfg = site_config(free_port(), free_port())
    clock = Clock(hil_of(sim_cfg).start, 20.0)
    site = SimSite(sim_cfg, clock)
    pcs, takes = site.devices["bess"], site.devices["bess"].on_points

    def clamp(changes, before):  # holds at most 10 kW; the load is 20
        pcs.held["setpoint"] = max(-10.0, min(10.0, pcs.held["setpoint"]))
        takes(changes, before)

    pcs.on_points = clamp
    await site.start()
    proxy = Proxy(sim_cfg.devices[0].port)
    await proxy.start()
    cfg = site_config(proxy.port, sim_cfg.devices[1].port)
    devices = build_devices(cfg)
    cycle = ControlCycle(cfg, devices, dispatch.load_kernel(), clock)
    reads: list[int] = []
    writes: list[int] = []
    try:
        for dev in devices.values():
            await dev.connect()
        with caplog.at_level(logging.WARNING, logger="edge.cycle"):
            for _ in range(6):
                proxy.requests.clear()
                await cycle.step()
                reads.append(proxy.requests.count((1, READ)))
                writes.append(proxy.requests.count((1, WRITE)))
        image = cycle.image
    finally:
        await cycle.apply_safe_state()
        for dev in devices.values():
            await dev.close()
        await proxy.stop()
        await site.stop()
    assert reads == [1] * 6  # a poll, and a write without its read-back
    # each next poll finds the command not taken: a failed write, retried at once
    assert writes == [1] * 6 and cycle.health["bess"].errors == 5
    assert image.good("bess") and cycle.health["bess"].failed_polls == 0
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device bess")]
    assert len(warned) == 1 and "did not take the command" in warned[0], warned

"""Register-map devices over Modbus RTU, end to end: the HIL serves a map-driven PCS with
its BMS on a unit of its own, a map-driven load meter and a SunSpec PCC meter as four units
on one serial bus (its end of a virtual cable, hil/serve/cable.py); the daemon's own drivers,
built from the same config by the registry, open the other end by the configured path, read
and write through the maps, and share one RTU master with the SunSpec unit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import wait_for

from drivers.base import DeviceError, Reading
from drivers.modbus.mapped import MapBattery, MapMeter
from drivers.modbus.serial import SerialEndpoint
from drivers.modbus.unit import BACKOFF_MAX_S, BACKOFF_MIN_S
from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.config import Config, parse
from edge.control import kernel as dispatch
from edge.cycle import ControlCycle
from hil.config import hil_of
from hil.site import SimSite


def config(port: Path) -> Config:
    bus = {"port": str(port), "baudrate": 19200}  # 8N1: a pseudo-terminal refuses parity E
    return parse({
        "site": {"id": "rtu-maps", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "bess", "role": "battery", "protocol": "modbus-rtu", "map": "pcs_generic",
             "serial": bus, "unit_id": 1, "capacity_kwh": 100, "max_charge_kw": 30,
             "max_discharge_kw": 30, "revert_s": 60, "ramp_kw_per_s": 1000,
             "bms": {"map": "bms_generic", "unit_id": 4}, "sim": {"initial_soc_pct": 60}},
            {"id": "pcc", "role": "meter", "measures": "grid", "protocol": "sunspec-rtu",
             "serial": bus, "unit_id": 2},
            {"id": "load", "role": "meter", "measures": "load", "protocol": "modbus-rtu",
             "map": "meter3p_generic", "serial": bus, "unit_id": 3,
             "sim": {"profile": "flat", "base_kw": 20, "day_kw": 20}},
        ],
        "control": {"functions": ["self_consumption"], "deadband_kw": 0.1},
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
        "hil": {"start": "2026-06-22T12:00:00+08:00"},
    })


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Config, SimSite, dict]]:
    cfg = config(tmp_path / "ttyRS485")  # no such port: the HIL makes the cable
    site = SimSite(cfg, Clock(hil_of(cfg).start, 20.0))
    await site.start()
    devices = build_devices(cfg)
    try:
        yield cfg, site, devices
    finally:
        for dev in devices.values():
            await dev.close()
        await site.stop()


async def test_map_units_and_a_sunspec_unit_share_one_rtu_master(rig) -> None:
    cfg, _, devices = rig
    bess, pcc, load = devices["bess"], devices["pcc"], devices["load"]
    assert isinstance(bess, MapBattery) and isinstance(load, MapMeter)
    assert isinstance(bess.endpoint, SerialEndpoint)
    assert bess.endpoint is load.endpoint is pcc.sunspec.endpoint
    assert Path(cfg.devices[0].serial.port).is_symlink()
    assert bess.describe()["protocol"] == "modbus-rtu"
    await asyncio.gather(*(d.connect() for d in devices.values()))
    r_bess, r_pcc, r_load = await asyncio.gather(bess.poll(), pcc.poll(), load.poll())
    assert r_bess.values["soc_pct"] == pytest.approx(60.0, abs=0.1)
    assert r_bess.values["max_charge_kw"] == 30.0 and r_bess.values["capacity_kwh"] == 100.0
    assert r_load.values["power_kw"] == pytest.approx(20.0, abs=0.01)
    assert "power_kw" in r_pcc.values


async def test_pcs_follows_a_setpoint_written_and_read_back_through_its_map(rig) -> None:
    _, site, devices = rig
    bess = devices["bess"]
    await bess.connect()
    await bess.write_power(-12.3, revert_s=45)  # charge: one write, verified by the next poll
    assert site.devices["bess"].held == {"enable": 1.0, "setpoint": pytest.approx(-12.3),
                                         "revert": 45.0, "grid_mode": 0.0,
                                         "auto_transfer": 0.0}
    await wait_for(lambda: site.state("bess")["power_kw"] == pytest.approx(-12.3, abs=0.05),
                   5.0, "HIL PCS charging at 12.3 kW")
    r = await bess.poll()
    assert r.values["power_kw"] == pytest.approx(-12.3, abs=0.05)
    assert r.values["dc_current_a"] < 0  # vendor + charge, sign -1: ours is - charge


async def test_slow_points_carry_the_time_they_were_read(rig) -> None:
    _, _, devices = rig
    load = devices["load"]
    await load.connect()  # reads the energy counters (poll: slow)
    first = await load.poll()
    second = await load.poll()
    assert set(first.stamps) == {"import_kwh", "export_kwh"}
    assert second.stamps == first.stamps  # not re-read: slow_every is 30 polls
    assert second.monotonic > first.monotonic > first.stamps["import_kwh"]
    assert second.value_age_s("import_kwh") > second.value_age_s("power_kw")


def bus_log(endpoint: SerialEndpoint) -> list[int]:
    """Unit ids of the requests the bus master sends from now on, in order."""
    sent: list[int] = []
    read, write = endpoint.read, endpoint.write

    async def logged_read(unit: int, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(unit)
        return await read(unit, *args, **kwargs)

    async def logged_write(unit: int, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(unit)
        return await write(unit, *args, **kwargs)

    endpoint.read, endpoint.write = logged_read, logged_write  # type: ignore[method-assign]
    return sent


async def until_recovered(dev, within_s: float) -> list[str]:  # type: ignore[no-untyped-def]
    """Poll until `dev` answers; the errors seen on the way. `within_s` only bounds the wait."""
    errors: list[str] = []
    deadline = time.monotonic() + within_s
    while True:
        try:
            reading = await dev.poll()
        except DeviceError as exc:
            errors.append(str(exc))
            if time.monotonic() > deadline:
                raise AssertionError(f"{dev.id} still failing after {within_s} s: "
                                     f"{errors[-3:]}") from exc
            await asyncio.sleep(0.05)
            continue
        assert reading.values
        return errors


async def test_silent_map_unit_backs_off_and_its_bus_neighbours_are_read_every_round(rig) -> None:
    """A dead battery on a live bus (PCS and BMS units give no reply at all). The PCC and
    the load meter are read in every round; the PCS takes the bus for one request (one
    timeout) only when its backoff window is over, each such probe doubling the window, and
    in between its polls fail before anything goes on the wire. It is back at the first
    probe once it answers again."""
    _, site, devices = rig
    await asyncio.gather(*(d.connect() for d in devices.values()))
    bess = devices["bess"]
    sent = bus_log(bess.endpoint)
    await site.stop_device("bess")
    probes = skips = 0
    for _ in range(60):  # bounds the wait only: the window grows with every probe
        sent.clear()
        results = await asyncio.gather(*(d.poll() for d in devices.values()),
                                       return_exceptions=True)
        r = dict(zip(devices, results, strict=True))
        assert isinstance(r["pcc"], Reading) and isinstance(r["load"], Reading), r
        assert isinstance(r["bess"], DeviceError), r["bess"]
        assert {2, 3} <= set(sent), sent  # PCC and load meter: both read this round
        assert sent.count(4) <= 1, sent  # the silent BMS backs off on its own
        if "backing off" in str(r["bess"]):
            assert 1 not in sent, sent  # refused before the wire
            skips += 1
        else:
            assert sent.count(1) == 1, (sent, str(r["bess"]))  # one request, no retry
            probes += 1
            assert bess._backoff_s == min(BACKOFF_MIN_S * 2 ** (probes - 1), BACKOFF_MAX_S)
        if probes >= 2 and skips >= probes:
            break
        await asyncio.sleep(0.1)
    assert probes >= 2 and skips >= probes, (probes, skips)
    await site.start_device("bess")
    errors = await until_recovered(bess, within_s=BACKOFF_MAX_S + 5)
    assert all("backing off" in e for e in errors), errors  # no further timeout
    assert (await bess.poll()).values["soc_pct"] > 0


async def test_self_consumption_discharges_an_rtu_map_battery(rig) -> None:
    cfg, site, devices = rig
    cycle = ControlCycle(cfg, devices, dispatch.load_kernel(), site.clock)
    await asyncio.gather(*(d.connect() for d in devices.values()))
    try:
        for _ in range(30):
            await cycle.step()
            await asyncio.sleep(cycle.period_wall_s)
        bess, pcc, held = site.state("bess"), site.state("pcc"), dict(site.devices["bess"].held)
    finally:
        await cycle.apply_safe_state()
    assert all(h.errors == 0 for h in cycle.health.values()), cycle.health
    assert cycle.stats.crashes == 0
    # 20 kW of building load: the battery covers it, the PCC settles near zero
    assert bess["power_kw"] == pytest.approx(20.0, abs=1.0), cycle.decision
    assert abs(pcc["power_kw"]) < 1.0
    assert held["enable"] == 1.0 and held["revert"] == 60.0
    assert site.devices["bess"].held["setpoint"] == 0.0  # the safe state went out over RTU


async def test_bms_on_its_own_unit_comes_with_the_battery_and_ages_when_silent(rig) -> None:
    _, site, devices = rig
    bess = devices["bess"]
    assert bess.describe()["bms"] == "unit 4 (bms_generic)"
    await bess.connect()
    await bess.write_power(-15.0, revert_s=60)  # charging, as the BMS sees it too
    await wait_for(lambda: site.state("bess")["power_kw"] == pytest.approx(-15.0, abs=0.05),
                   5.0, "HIL PCS charging at 15 kW")
    r = await bess.poll()
    v = r.values
    assert v["bms.soc_pct"] == pytest.approx(v["soc_pct"], abs=0.1)
    assert v["bms.dc_power_kw"] == pytest.approx(-15.0, abs=0.05) and v["bms.pack_current_a"] < 0
    assert v["bms.cell_voltage_max_v"] > v["bms.cell_voltage_min_v"] > 3.0
    assert v["bms.capacity_kwh"] == 100.0  # a slow point of the BMS map
    assert r.stamps["bms.capacity_kwh"] <= r.stamps["bms.soc_pct"] <= r.monotonic
    bess.bms.unit = 9  # nobody answers there: the BMS goes silent, the PCS does not
    later = await bess.poll()
    assert later.values["power_kw"] == pytest.approx(-15.0, abs=0.05)  # the battery still polls
    assert later.values["bms.soc_pct"] == v["bms.soc_pct"]  # carried forward ...
    assert later.stamps["bms.soc_pct"] == r.stamps["bms.soc_pct"]  # ... with its read time
    assert later.value_age_s("bms.soc_pct") > later.value_age_s("power_kw")

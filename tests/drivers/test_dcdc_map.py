"""A DC bus converter end to end on loopback Modbus TCP: the map (drivers/maps/
dcdc_generic.yaml) validates for role `dcdc`, the driver decodes scaled values from the
wire, and a v_ref write moves the simulated bus (hil/devices/dcbus.py) and expires with its revert
timer. Plus the config rules of the role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import free_port

from drivers.base import DcConverter, DeviceError
from drivers.modbus.mapped import MapDcConverter
from drivers.modbus.regmap import MapError, load_map, load_map_file
from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.config import ConfigError, parse
from hil.devices.dcbus import EFFICIENCY, MapDcBusSim
from hil.site import SimSite

START = "2026-06-22T12:00:00+08:00"
NOMINAL_V, RATED_KW, DROOP_PCT = 375.0, 50.0, 5.0
SLOPE = DROOP_PCT / 100 * NOMINAL_V / RATED_KW  # 0.375 V per kW


def site_dict(**sim) -> dict:
    return {
        "site": {"id": "dc", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "measures": "grid", "port": free_port(),
             "timeout_s": 0.5, "sim": {"profile": "flat", "day_kw": 30}},
            {"id": "dcdc1", "host": "127.0.0.1", "role": "dcdc", "map": "dcdc_generic", "port": free_port(),
             "timeout_s": 0.5, "rated_kw": RATED_KW, "bus_nominal_v": NOMINAL_V,
             "revert_s": 30, "sim": {"profile": "flat", "day_kw": 20, "droop_pct": DROOP_PCT,
                                     **sim}},
        ],
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
    }


@pytest.fixture
async def open_site() -> AsyncIterator:
    opened = []

    async def _open(**sim):
        cfg = parse(site_dict(**sim))
        # Speed 1: physics only moves when the test steps it (the wall clock barely does).
        site = SimSite(cfg, Clock(datetime.fromisoformat(START), 1.0))
        await site.start()
        devices = build_devices(cfg)
        opened.append((site, devices))
        for d in devices.values():
            await d.connect()
        site.step_to(site.t_s + 1)
        return site, devices["dcdc1"]

    yield _open
    for site, devices in opened:
        for d in devices.values():
            await d.close()
        await site.stop()


# -- the map --------------------------------------------------------------------------------
def test_dcdc_map_serves_the_role_with_signed_power_and_a_writable_v_ref():
    m = load_map("dcdc_generic")
    assert m.roles == ["dcdc"]
    bus, power, v_ref = m.point("bus_v"), m.point("power_kw"), m.point("v_ref")
    assert bus.unit == "V" and bus.access == "r"
    assert power.type == "int32" and power.unit == "kW"  # both directions through the converter
    assert v_ref.unit == "V" and v_ref.access == "rw" and v_ref.function == "holding"
    assert m.point("droop_v_per_kw").access == "r"  # the droop slope is the device's own


def test_a_dcdc_map_without_bus_voltage_is_refused_naming_the_key(tmp_path: Path):
    data = yaml.safe_load((Path(__file__).resolve().parents[2]
                           / "drivers/maps/dcdc_generic.yaml").read_text())
    data["name"] = "dcdc_nobus"
    data["points"] = [p for p in data["points"] if p["key"] != "bus_v"]
    path = tmp_path / "dcdc_nobus.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MapError, match="role dcdc needs a point with key 'bus_v'"):
        load_map_file(path)


def test_unsigned_power_on_a_dcdc_map_is_refused(tmp_path: Path):
    data = yaml.safe_load((Path(__file__).resolve().parents[2]
                           / "drivers/maps/dcdc_generic.yaml").read_text())
    data["name"] = "dcdc_unsigned"
    for p in data["points"]:
        if p["key"] == "power_kw":
            p["type"] = "uint32"
    path = tmp_path / "dcdc_unsigned.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MapError, match="power_kw changes sign"):
        load_map_file(path)


# -- the driver against the HIL bus ---------------------------------------------------------
async def test_converter_reads_scaled_bus_voltage_power_and_droop_from_the_wire(open_site):
    site, conv = await open_site()
    assert isinstance(conv, MapDcConverter) and isinstance(conv, DcConverter)
    assert isinstance(site.devices["dcdc1"], MapDcBusSim)
    r = (await conv.poll()).values
    assert r["bus_v"] == pytest.approx(NOMINAL_V - SLOPE * 20, abs=0.05)  # 367.5 V
    assert r["power_kw"] == pytest.approx(20.0, abs=0.001)
    assert r["v_ref"] == pytest.approx(NOMINAL_V)
    assert r["droop_v_per_kw"] == pytest.approx(SLOPE, abs=0.001)
    assert r["nominal_v"] == NOMINAL_V and r["rated_kw"] == RATED_KW
    assert r["bus_current_a"] == pytest.approx(20_000 / 367.5, abs=0.05)
    assert r["alarm_word"] == 0 and r["state"] == 2
    # On the wire: 0.1 V and 0.1 A counts, power in W as a big-endian int32.
    regs = await conv.endpoint.read(1, 2, 4)
    assert list(regs) == [3675, 544, 0, 20_000]
    # The site draws the DC bus through the converter: grid = AC load + DC load / efficiency.
    assert site.last.grid_kw == pytest.approx(30 + 20 / EFFICIENCY)


async def test_power_out_of_the_bus_reads_negative_and_lifts_the_voltage(open_site):
    site, conv = await open_site(day_kw=5, peak_kw=40)  # noon sun on PV on the DC bus
    truth = site.state("dcdc1")
    assert truth["dc_pv_kw"] > 30
    r = (await conv.poll()).values
    assert r["power_kw"] == pytest.approx(5 - truth["dc_pv_kw"], abs=0.001) and r["power_kw"] < -25
    assert r["bus_v"] == pytest.approx(NOMINAL_V - SLOPE * r["power_kw"], abs=0.06)
    assert r["bus_v"] > NOMINAL_V and r["bus_current_a"] < 0


async def test_v_ref_write_shifts_the_bus_and_reverts_when_not_rewritten(open_site):
    site, conv = await open_site()
    await conv.write_v_ref(390.0, 30)
    site.step_to(site.t_s + 1)
    r = (await conv.poll()).values
    assert r["v_ref"] == pytest.approx(390.0) and r["revert"] == 30
    assert r["bus_v"] == pytest.approx(390.0 - SLOPE * 20, abs=0.05)  # 382.5 V

    site.step_to(site.t_s + 20)
    await conv.write_v_ref(390.0, 30)  # re-written in time: the timer starts again
    site.step_to(site.t_s + 20)
    assert (await conv.poll()).values["v_ref"] == pytest.approx(390.0)
    site.step_to(site.t_s + 11)  # 31 s without a write: back to the converter's default
    r = (await conv.poll()).values
    assert r["v_ref"] == pytest.approx(NOMINAL_V)
    assert r["bus_v"] == pytest.approx(NOMINAL_V - SLOPE * 20, abs=0.05)


async def test_v_ref_outside_the_converter_range_is_refused(open_site):
    site, conv = await open_site()
    with pytest.raises(DeviceError):
        await conv.write_v_ref(450.0, 30)  # the converter takes nominal ± 15 %
    assert site.state("dcdc1")["v_ref"] == NOMINAL_V


# -- config ---------------------------------------------------------------------------------
def test_dcdc_config_needs_a_bus_nominal_a_map_protocol_and_one_bus():
    data = site_dict()
    del data["devices"][1]["bus_nominal_v"]
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert "devices[1].bus_nominal_v: is required" in err.value.problems

    data = site_dict()
    data["devices"][1]["protocol"] = "sunspec-tcp"
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert any(p.startswith("devices[1].protocol: must be one of") for p in err.value.problems)

    data = site_dict()
    data["devices"].append({**data["devices"][1], "id": "dcdc48", "port": free_port(),
                            "bus_nominal_v": 48, "rated_kw": 5})
    with pytest.raises(ConfigError, match="one DC bus per site"):
        parse(data)

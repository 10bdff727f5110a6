"""Register maps as data: validation at load, the codec, the map-driven drivers against the
map-driven HIL devices over loopback Modbus TCP, and a site controlled through them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import free_port
from pymodbus.server import ModbusTcpServer

from drivers.base import DeviceError
from drivers.modbus.endpoint import Endpoint
from drivers.modbus.mapped import MapBattery, MapDevice, MapMeter, MapPv, plan_reads
from drivers.modbus.regmap import (
    MAPS_DIR,
    MapError,
    MapPoint,
    RegisterMap,
    load_map,
    load_map_file,
    map_for,
    parse_map,
)
from edge.app.clock import Clock
from edge.app.devices import build_devices, check_maps
from edge.cli import main as cli_main
from edge.config import parse
from edge.control import kernel as dispatch
from edge.cycle import ControlCycle
from hil.config import hil_of
from hil.devices import build
from hil.devices.mapped import MapBatteryPcs, MapSimDevice, MapThreePhaseMeter
from hil.site import SimSite

SHIPPED = ("pcs_generic", "bms_generic", "meter3p_generic")


def write_map(tmp_path: Path, name: str, points: list[dict], **top) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "vendor": "test", "points": points, **top}))
    return path


BATTERY_POINTS = [
    {"key": "power_kw", "address": 0, "type": "int32", "scale": 0.001, "unit": "kW"},
    {"key": "soc_pct", "address": 2, "type": "uint16", "scale": 0.1, "unit": "%"},
    {"key": "setpoint", "address": 10, "type": "int16", "scale": 0.1, "unit": "kW", "access": "rw"},
]


# -- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_maps_load(name):
    m = load_map(name)
    assert m.name == name and m.points


def test_bad_type_names_file_point_and_field(tmp_path):
    pts = [dict(p) for p in BATTERY_POINTS]
    pts[1]["type"] = "uint8"
    path = write_map(tmp_path, "pcs_x", pts, roles=["battery"])
    with pytest.raises(MapError) as exc:
        load_map_file(path)
    msg = str(exc.value)
    assert "pcs_x.yaml: points[1].type (point soc_pct):" in msg
    assert "uint8" in msg and "uint16" in msg


def test_unsigned_register_for_a_signed_power_is_an_error(tmp_path):
    pts = [dict(p) for p in BATTERY_POINTS]
    pts[0]["type"] = "uint32"  # charging would read as +4.29 GW
    path = write_map(tmp_path, "pcs_x", pts, roles=["battery"])
    with pytest.raises(MapError) as exc:
        load_map_file(path)
    assert "points[0].type (point power_kw): power_kw changes sign" in str(exc.value)


def test_overlapping_addresses_are_an_error(tmp_path):
    pts = [*BATTERY_POINTS, {"key": "dc_voltage_v", "address": 1, "unit": "V"}]
    path = write_map(tmp_path, "pcs_x", pts, roles=["battery"])
    with pytest.raises(MapError) as exc:
        load_map_file(path)
    msg = str(exc.value)
    assert "pcs_x.yaml: points[3].address (point dc_voltage_v): holding register 1 overlaps " \
        "points[0] (power_kw, int32) at 0..1" in msg


def test_same_address_in_holding_and_input_tables_is_fine():
    parse_map({"name": "x", "vendor": "t", "points": [
        {"key": "a", "address": 0}, {"key": "b", "address": 0, "function": "input"}]})


def test_misspelled_role_key_is_named_with_the_fix(tmp_path):
    pts = [dict(p) for p in BATTERY_POINTS]
    pts[1]["key"] = "soc_pc"
    path = write_map(tmp_path, "pcs_x", pts, roles=["battery"])
    with pytest.raises(MapError) as exc:
        load_map_file(path)
    assert ("pcs_x.yaml: points[1].key (point soc_pc): 'soc_pc' is not a key role battery knows; "
            "did you mean 'soc_pct'?") in str(exc.value)


def test_missing_role_key_is_named(tmp_path):
    path = write_map(tmp_path, "pcs_x", BATTERY_POINTS[:2], roles=["battery"])
    with pytest.raises(MapError) as exc:
        load_map_file(path)
    assert "pcs_x.yaml: points: role battery needs a point with key 'setpoint'" in str(exc.value)


@pytest.mark.parametrize(("change", "expect"), [
    ({"unit": "W"}, "points[0].unit (point power_kw): power_kw must be in kW, got 'W' (use scale"),
    ({"key": "setpoint", "unit": "kW", "function": "input"},
     "points[0].function (point setpoint): control point setpoint must be a holding register"),
    ({"key": "setpoint", "unit": "kW"}, "points[0].access (point setpoint): control point setpoint must be rw or w"),
    ({"key": "enable", "unit": "", "access": "rw"}, "points[0].value (point enable): enable needs the value"),
    ({"access": "rw", "function": "input"}, "points[0].access (point power_kw): input registers are read-only"),
    ({"scale": 0}, "points[0].scale (point power_kw): must be a finite, non-zero multiplier"),
    ({"typo": 1}, "points[0].typo (point power_kw): is not a known field"),
])
def test_point_field_errors(change, expect):
    point = {"key": "power_kw", "address": 0, "type": "int32", "unit": "kW", **change}
    with pytest.raises(MapError) as exc:
        parse_map({"name": "x", "vendor": "t", "points": [point]}, "drivers/maps/x.yaml")
    assert f"drivers/maps/x.yaml: {expect}" in str(exc.value)


def test_map_file_that_is_not_utf8_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "pcs_x.yaml"
    path.write_bytes("name: pcs_x\nvendor: M\xfcller\n".encode("latin-1"))
    with pytest.raises(MapError) as exc:
        load_map_file(path)
    assert exc.value.source == str(path)
    assert exc.value.problems[0].startswith("not UTF-8 text")


def test_map_name_must_match_file_and_unknown_map_lists_known(tmp_path):
    path = write_map(tmp_path, "pcs_x", BATTERY_POINTS)
    path.rename(tmp_path / "other.yaml")
    with pytest.raises(MapError, match="name: 'pcs_x' must match the file name 'other'"):
        load_map_file(tmp_path / "other.yaml")
    with pytest.raises(MapError, match="no such map .available: .*pcs_generic"):
        load_map("nope")


def test_device_role_must_be_served_by_its_map():
    cfg = site_config(free_port(), free_port(), battery_map="meter3p_generic")
    bess = next(d for d in cfg.devices if d.role == "battery")
    with pytest.raises(MapError, match="device bess: map: meter3p_generic serves meter, not a battery"):
        map_for(bess)
    assert check_maps(cfg) == [
        "devices[0].map: device bess: map: meter3p_generic serves meter, not a battery; choose "
        "a map for role battery (it needs keys power_kw, soc_pct, setpoint)"]
    with pytest.raises(MapError, match="bms_generic serves no control role"):
        map_for(site_config(free_port(), free_port(), battery_map="bms_generic").devices[0])


# -- codec ----------------------------------------------------------------------------------
def _map(**top) -> RegisterMap:
    return RegisterMap(name="t", vendor="t", points=[MapPoint(key="x", address=0)], **top)


@pytest.mark.parametrize(("point", "value", "regs"), [
    (MapPoint(key="a", address=0, type="uint32"), 0x00012345, [0x0001, 0x2345]),
    (MapPoint(key="a", address=0, type="uint32", word_order="little"), 0x00012345, [0x2345, 0x0001]),
    (MapPoint(key="a", address=0, type="int16", byte_order="little"), 0x1234, [0x3412]),
    (MapPoint(key="a", address=0, type="int16"), -2, [0xFFFE]),
    # meter: vendor + export; importing 10 kW is -10000 W on the wire
    (MapPoint(key="power_kw", address=0, type="int32", scale=0.001, unit="kW", sign=-1),
     10.0, [0xFFFF, 0xD8F0]),
    # export counter: uint32, 0.01 kWh, low word first
    (MapPoint(key="export_kwh", address=0, type="uint32", scale=0.01, unit="kWh",
              word_order="little"), 123456.78, [0x614E, 0x00BC]),
    (MapPoint(key="a", address=0, type="float32"), 1.5, [0x3FC0, 0x0000]),
    (MapPoint(key="a", address=0, type="float32", word_order="little"), 1.5, [0x0000, 0x3FC0]),
])
def test_codec_encodes_to_wire_registers_and_back(point, value, regs):
    m = _map()
    assert m.encode(point, value) == regs
    assert m.decode(point, regs) == pytest.approx(value)


def test_map_level_orders_apply_unless_the_point_overrides():
    m = _map(word_order="little", byte_order="little")
    p = MapPoint(key="a", address=0, type="uint32")
    assert m.encode(p, 0x01020304) == [0x0403, 0x0201]
    q = MapPoint(key="a", address=0, type="uint32", word_order="big", byte_order="big")
    assert m.encode(q, 0x01020304) == [0x0102, 0x0304]


@pytest.mark.parametrize("ptype", ["uint16", "int16", "uint32", "int32", "float32"])
@pytest.mark.parametrize("order", ["big", "little"])
@pytest.mark.parametrize("sign", [1, -1])
def test_codec_round_trips(ptype, order, sign):
    m = _map(byte_order=order)
    p = MapPoint(key="a", address=0, type=ptype, word_order=order, scale=0.1, sign=sign)
    value = 123.4 * sign if ptype.startswith("uint") else -123.4
    assert m.decode(p, m.encode(p, value)) == pytest.approx(value, abs=1e-4)


def test_out_of_range_values_raise_or_saturate():
    m, p = _map(), MapPoint(key="setpoint", address=0, type="int16", scale=0.1, unit="kW")
    with pytest.raises(ValueError, match=r"setpoint: 5000 kW is 50000 counts, outside int16"):
        m.encode(p, 5000)
    assert m.encode(p, 5000, clamp=True) == [0x7FFF]


def test_reads_are_planned_per_contiguous_run_and_poll_class():
    m = load_map("pcs_generic")
    fast = plan_reads([p for p in m.points if p.poll == "fast"])
    slow = plan_reads([p for p in m.points if p.poll == "slow"])
    assert [(b.function, b.address, b.count) for b in fast] == [("holding", 0, 11), ("holding", 100, 5)]
    assert [(b.address, b.count) for b in slow] == [(20, 9)]
    assert [(b.address, b.count) for b in plan_reads(m.points, max_read=5)][:2] == [(0, 4), (4, 5)]


# -- drivers against the map-driven HIL devices ---------------------------------------------
def site_config(bess_port: int, meter_port: int, battery_map: str = "pcs_generic", **control):
    return parse({
        "site": {"id": "maps", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "bess", "host": "127.0.0.1", "role": "battery", "protocol": "modbus-tcp", "map": battery_map,
             "port": bess_port, "capacity_kwh": 100, "max_charge_kw": 30, "max_discharge_kw": 30,
             "revert_s": 60, "ramp_kw_per_s": 1000, "timeout_s": 0.5,
             "sim": {"initial_soc_pct": 60}},
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "measures": "grid", "protocol": "modbus-tcp",
             "map": "meter3p_generic", "port": meter_port, "timeout_s": 0.5,
             "sim": {"profile": "flat", "base_kw": 20, "day_kw": 20}},
        ],
        "control": {"functions": ["self_consumption"], "deadband_kw": 0.1, **control},
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
        "hil": {"start": "2026-06-22T12:00:00+08:00"},
    })


@contextlib.asynccontextmanager
async def served(*sims: MapSimDevice) -> AsyncIterator[Endpoint]:
    """The given HIL devices behind one loopback port, and a driver endpoint to it."""
    port = free_port()
    server = ModbusTcpServer([s.sim_device() for s in sims], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    endpoint = Endpoint("127.0.0.1", port, 0.5)
    try:
        yield endpoint
    finally:
        await endpoint.close()
        await server.shutdown()


def battery_cfg(battery_map: str = "pcs_generic"):
    return site_config(free_port(), free_port(), battery_map).devices[0]


async def test_battery_driver_reads_writes_and_verifies_through_the_pcs_map():
    sim = build(battery_cfg(), 100.0)
    assert isinstance(sim, MapBatteryPcs)
    async with served(sim) as ep:
        bess = MapBattery("bess", ep, 1, load_map("pcs_generic"))
        await bess.connect()
        r = await bess.poll()
        assert r.values["soc_pct"] == pytest.approx(60.0)
        assert r.values["max_charge_kw"] == 30.0 and r.values["power_kw"] == 0.0
        await bess.write_power(-12.34, 45)
        assert sim.held == {"enable": 1.0, "setpoint": pytest.approx(-12.3), "revert": 45.0,
                            "grid_mode": 0.0, "auto_transfer": 0.0}
        assert sim.command_kw == pytest.approx(-12.3)
        sim.battery.soc_pct = 61.0
        sim.power_kw = -12.3
        r = await bess.poll()
        assert r.values["power_kw"] == pytest.approx(-12.3)
        assert r.values["dc_current_a"] < 0  # vendor + charge, sign -1: ours is - charge
        assert r.values["soc_pct"] == pytest.approx(61.0)
        assert bess.describe() == {
            "protocol": "modbus-tcp", "endpoint": f"{ep.name}/1", "map": "pcs_generic",
            "vendor": "Generic (vendor-neutral)", "description": load_map("pcs_generic").description}


async def test_read_back_mismatch_raises():
    class Clamping(MapBatteryPcs):
        """Takes the command but holds at most 10 kW: what a derated PCS does."""

        def on_points(self, changes, before):
            self.held["setpoint"] = max(-10.0, min(10.0, self.held["setpoint"]))

    sim = Clamping(battery_cfg(), 100.0)
    regmap = load_map("pcs_generic").model_copy(update={"max_gap": 0})
    async with served(sim) as ep:
        bess = MapBattery("bess", ep, 1, regmap)
        bess._fast = bess._fast[:1]  # a poll that does not read the controls: read back
        await bess.write_power(5.0, 60)
        with pytest.raises(DeviceError, match=r"bess: read-back of enable, setpoint, revert, grid_mode at 100"):
            await bess.write_power(20.0, 60)


async def test_rejected_write_and_read_only_points_raise():
    sim = build(battery_cfg(), 100.0)
    async with served(sim) as ep:
        bess = MapBattery("bess", ep, 1, load_map("pcs_generic"))
        with pytest.raises(DeviceError, match="rejected"):
            await bess.write_power(29.0 + 50, 60)  # beyond the PCS rating: ILLEGAL_VALUE
        with pytest.raises(DeviceError, match="no writable point 'soc_pct'"):
            await bess.write({"soc_pct": 50})
        with pytest.raises(DeviceError, match="rejected"):  # RO register, ILLEGAL_ADDRESS
            await ep.write(1, 9, [500])


async def test_slow_points_are_read_every_n_polls():
    sim = build(battery_cfg(), 100.0)
    async with served(sim) as ep:
        bess = MapBattery("bess", ep, 1, load_map("pcs_generic"))
        await bess.connect()
        sim.charged_kwh = 7.0
        sim.battery.soc_pct = 70.0
        for _ in range(29):  # connect read the slow points; they are due again at poll 30
            r = await bess.poll()
        assert r.values["soc_pct"] == pytest.approx(70.0)  # fast: every poll
        assert r.values["charged_kwh"] == 0.0  # slow: cached
        r = await bess.poll()  # the 30th
        assert r.values["charged_kwh"] == pytest.approx(7.0)


async def test_bms_map_reads_input_registers_of_a_read_only_unit():
    sim = MapBatteryPcs(battery_cfg("bms_generic"), 100.0)  # same physics, BMS register view
    sim.power_kw = -15.0  # charging
    async with served(sim) as ep:
        bms = MapDevice("bms", ep, 1, load_map("bms_generic"))
        r = await bms.poll()
        v = r.values
        assert v["soc_pct"] == pytest.approx(60.0) and v["soh_pct"] == 100.0
        assert v["pack_current_a"] < 0 and v["dc_power_kw"] == pytest.approx(-15.0)
        assert v["cell_voltage_max_v"] > v["cell_voltage_min_v"] > 3.0
        assert v["max_charge_kw"] == 30.0 and v["capacity_kwh"] == 100.0
        with pytest.raises(DeviceError):  # nothing in the holding table
            await ep.read(1, 0, 1)


async def test_meter_sign_and_word_order_on_the_wire():
    cfg = site_config(free_port(), free_port()).devices[1]
    sim = build(cfg, 100.0)
    assert isinstance(sim, MapThreePhaseMeter) and sim.balancing
    sim.measure(10.0, 3600.0)  # 10 kWh imported
    sim.measure(-4.0, 1800.0)  # 2 kWh exported, exporting 4 kW now
    async with served(sim) as ep:
        raw = await ep.read(1, 6, 2)
        assert raw == [0x0000, 0x0FA0]  # +4000 W: the vendor counts export positive
        assert await ep.read(1, 22, 2) == [200, 0]  # 2.00 kWh, low word first
        meter = MapMeter("pcc", ep, 1, load_map("meter3p_generic"))
        v = (await meter.poll()).values
        assert v["power_kw"] == pytest.approx(-4.0)
        assert v["import_kwh"] == pytest.approx(10.0) and v["export_kwh"] == pytest.approx(2.0)
        assert v["current_l1_a"] == pytest.approx(4000 / 690, abs=0.01)


class _SimPv(MapSimDevice):
    """A bare PV inverter for the PV driver: fixed available power, % limit when enabled."""

    role = "pv"

    def point_values(self):
        on = self.held.get("enable") == 1
        limit = 100 * 1.0 if not on else self.held["limit"]
        return {"power_kw": min(40.0, limit / 100 * 50), "rated_kw": 50.0}


async def test_pv_driver_writes_limits_in_percent(tmp_path):
    path = write_map(tmp_path, "pv_x", [
        {"key": "power_kw", "address": 0, "type": "uint16", "scale": 0.1, "unit": "kW"},
        {"key": "rated_kw", "address": 1, "type": "uint16", "scale": 0.1, "unit": "kW", "poll": "slow"},
        {"key": "limit", "address": 10, "type": "uint16", "scale": 0.01, "unit": "%", "access": "rw"},
        {"key": "enable", "address": 11, "type": "uint16", "access": "rw", "value": 1},
        {"key": "revert", "address": 12, "type": "uint16", "unit": "s", "access": "w"},
    ], roles=["pv"])
    regmap = load_map_file(path)
    cfg = parse({"site": {"id": "s"}, "tariff": {"periods": [
        {"name": "f", "start": "00:00", "end": "00:00", "price": 1}]}, "devices": [
        {"id": "pv", "host": "127.0.0.1", "port": 502, "role": "pv", "rated_kw": 50, "protocol": "modbus-tcp", "map": "pv_x"},
        {"id": "m", "host": "127.0.0.1", "role": "meter", "port": 5020}]}).devices[0]
    sim = _SimPv(cfg, 100.0, regmap)
    async with served(sim) as ep:
        pv = MapPv("pv", ep, 1, regmap)
        v = (await pv.poll()).values
        assert v["limit_kw"] == 50.0 and v["power_kw"] == 40.0  # no limit active: rated
        await pv.write_limit(20.0, 30)
        assert sim.held == {"limit": 40.0, "enable": 1.0, "revert": 30.0}
        v = (await pv.poll()).values
        assert v["limit_kw"] == pytest.approx(20.0) and v["power_kw"] == pytest.approx(20.0)


def test_pcs_reverts_to_standby_when_commands_stop():
    sim = build(battery_cfg(), 100.0)
    env = _env(0.0)
    sim.step(env, 1.0)
    assert sim.write_registers(100, [1, 100, 30], [0, 0, 0], 100) is None  # 10 kW, 30 s
    assert sim.step(_env(10.0), 1.0) == pytest.approx(10.0)
    sim.step(_env(29.0), 1.0)
    assert sim.command_kw == 10.0
    sim.step(_env(30.0), 1.0)
    assert sim.command_kw == 0.0 and sim.held["enable"] == 0.0


def _env(t_s: float):
    from hil.devices.base import Env
    t = datetime.fromisoformat("2026-06-22T12:00:00+08:00")
    return Env(t_s, t, t, 31.2, 121.5)


# -- a site controlled through the maps -----------------------------------------------------
async def test_self_consumption_discharges_a_map_driven_battery_against_a_map_driven_meter():
    cfg = site_config(free_port(), free_port())
    clock = Clock(hil_of(cfg).start, 20.0)
    site = SimSite(cfg, clock)
    await site.start()
    devices = build_devices(cfg)
    assert isinstance(devices["bess"], MapBattery) and isinstance(devices["pcc"], MapMeter)
    cycle = ControlCycle(cfg, devices, dispatch.load_kernel(), clock)
    try:
        for dev in devices.values():
            await dev.connect()
        for _ in range(40):
            await cycle.step()
            await asyncio.sleep(cycle.period_wall_s)
        bess, pcc = site.state("bess"), site.state("pcc")
        image, decision = cycle.image, cycle.decision
        held = dict(site.devices["bess"].held)
        await cycle.apply_safe_state()
        safe = dict(site.devices["bess"].held)
    finally:
        await cycle.apply_safe_state()
        for dev in devices.values():
            await dev.close()
        await site.stop()
    # 20 kW of building load, importing: the battery covers it, the PCC settles near zero
    assert bess["power_kw"] == pytest.approx(20.0, abs=1.0)
    assert abs(pcc["power_kw"]) < 1.0
    assert image.value("pcc", "power_kw") == pytest.approx(pcc["power_kw"], abs=1.0)
    assert image.value("bess", "soc_pct") < 60.0
    assert cycle.health["bess"].errors == 0 and cycle.health["pcc"].errors == 0
    assert not cycle.memory.written["bess"].failed  # every write was found taken
    assert held["enable"] == 1.0 and held["revert"] == 60.0
    assert decision.bess_kw["bess"] == pytest.approx(held["setpoint"], abs=0.05)
    assert safe["setpoint"] == 0.0  # the safe state (0 kW) went out through the map too


def test_check_accepts_a_config_using_the_maps(tmp_path, capsys):
    cfg = site_config(15101, 15102).model_dump(mode="json", exclude_defaults=True)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "bess" in out and "modbus-tcp" in out and "configuration OK" in out
    assert check_maps(parse(yaml.safe_load(path.read_text()))) == []
    assert {f.stem for f in MAPS_DIR.glob("*.yaml")} >= set(SHIPPED)

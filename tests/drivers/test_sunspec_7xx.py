"""SunSpec beyond the classic chains: the 7xx DER models (701 measurement, 702 capacity, 704
controls, 713 storage, 715 heartbeat), float inverters (111-113), other meter models, and
repeating groups (705 curves). The codec is checked against pysunspec2's own decoder; the
drivers and the scanner run over real loopback sockets against HIL devices that serve
those chains (`sim.models`), on a manual clock so physics moves only when a test says so.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from conftest import free_port
from fakes import ManualClock
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from sunspec2 import device as pysunspec

from drivers.base import DeviceError
from drivers.modbus.endpoint import Endpoint
from drivers.sunspec import models as sunspec
from drivers.sunspec.roles import SunSpecBattery, SunSpecMeter, SunSpecPv
from drivers.sunspec.scan import OK, render_text, scan
from edge.config import Config, parse
from hil.site import SimSite

NOON = datetime.fromisoformat("2026-06-22T12:00:00+08:00")

# device id -> (role, chain): the combinations the drivers must handle
CHAINS = {
    "der_pv": ("pv", [1, 701, 702, 704, 715]),
    "float_pv": ("pv", [1, 111, 120, 123]),
    "both_pv": ("pv", [1, 103, 120, 123, 701, 702, 704]),
    "der_bess": ("battery", [1, 701, 702, 704, 713, 715, 802]),
    "bess_713": ("battery", [1, 113, 124, 713]),
    "meter_204": ("meter", [1, 204]),
}


def variants_config() -> Config:
    devices = []
    for dev_id, (role, chain) in CHAINS.items():
        d: dict = {"id": dev_id, "role": role, "host": "127.0.0.1", "port": free_port(),
                   "sim": {"models": chain}}
        if role == "pv":
            d.update(rated_kw=30, revert_s=60)
        elif role == "battery":
            d.update(capacity_kwh=40, max_charge_kw=20, max_discharge_kw=20, revert_s=60)
            d["sim"]["initial_soc_pct"] = 55
        else:
            d["measures"] = "grid"
        devices.append(d)
    return parse({
        "site": {"id": "t", "timezone": "Asia/Shanghai"},
        "devices": devices,
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
    })


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    clock = ManualClock(NOON)
    s = SimSite(variants_config(), clock)
    await s.start()
    clock.t = 1.0
    s.step_to(1.0)  # PV at its clear-sky noon output
    yield s
    await s.stop()


def advance(site: SimSite, seconds: float) -> None:
    site.clock.t += seconds  # type: ignore[attr-defined]
    site.step_to(site.clock.t)  # type: ignore[attr-defined]


_DRIVERS = {"pv": SunSpecPv, "battery": SunSpecBattery, "meter": SunSpecMeter}


@pytest.fixture
async def drivers(site: SimSite) -> AsyncIterator[dict]:
    made = {d.id: _DRIVERS[d.role](d.id, Endpoint("127.0.0.1", d.port, 1.0), d.unit_id)
            for d in site.config.devices}
    yield made
    for drv in made.values():
        await drv.close()


# -- codec -------------------------------------------------------------------------------
def test_704_lays_out_its_fixed_groups_where_pysunspec2_puts_them():
    m704 = sunspec.model(704)
    assert m704.length == 65  # the L its JSON declares: four PF groups after the points
    theirs = pysunspec.Model(704, 0, 65, data=bytes(2 * 67))
    offsets = {name: p.offset for name, p in theirs.points.items()}
    for g, group in theirs.groups.items():
        offsets |= {f"{g}.{name}": p.offset for name, p in group.points.items()}
    assert {name: p.offset for name, p in m704.points.items()} == offsets
    assert sunspec.layout([1, 701, 702, 704, 715], 40000)[715] == 40002 + 68 + 155 + 52 + 67


def test_705_curves_decode_as_repeating_groups_exactly_as_pysunspec2_does():
    m705 = sunspec.model(705)
    ncrv, npt = 2, 4
    length = m705.length + ncrv * (10 + 2 * npt)
    regs = [705, length] + [0] * length
    for name, value in (("NPt", npt), ("NCrv", ncrv), ("V_SF", -1), ("DeptRef_SF", 0),
                        ("RspTms_SF", -1)):
        p = m705.point(name)
        regs[p.offset:p.offset + p.size] = sunspec.encode_point(p, value)
    rnd = random.Random(7)
    for i in range(2 + m705.length, len(regs)):
        regs[i] = rnd.randrange(0, 3000)
    ours = {name: value for name, _, value in sunspec.decode_groups(m705, regs)}
    theirs = pysunspec.Model(705, 0, length, data=b"".join(r.to_bytes(2, "big") for r in regs))
    theirs = theirs.get_dict(computed=True)["Crv"]
    assert len(ours) == ncrv * (9 + 2 * npt)
    for c in range(ncrv):
        for k, v in theirs[c].items():
            if k == "Pt":
                for i, pt in enumerate(v):
                    for pk, pv in pt.items():
                        assert ours[f"Crv[{c}].Pt[{i}].{pk}"] == pytest.approx(pv), (c, i, pk)
            else:
                assert ours[f"Crv[{c}].{k}"] == pytest.approx(v), (c, k)


def test_curve_count_not_implemented_decodes_no_curves():
    m705 = sunspec.model(705)
    regs = sunspec.chain_registers([705])[2:-2]  # NCrv, NPt "not implemented" (0xFFFF)
    regs[1] += 18
    regs += [1] * 18
    assert sunspec.decode_groups(m705, regs) == []


@pytest.mark.parametrize("model_id, point", [
    (701, "W"),  # int16 0x8000
    (701, "LNV"),  # uint16 0xFFFF
    (701, "Hz"),  # uint32
    (701, "TotWhInj"),  # uint64
    (704, "WSet"),  # int32
    (704, "WSetEna"),  # enum16
    (701, "Alrm"),  # bitfield32
    (111, "W"),  # float32 NaN
    (1, "SN"),  # string of NULs
])
def test_not_implemented_sentinels_decode_as_missing(model_id, point):
    mdef = sunspec.model(model_id)
    regs = sunspec.chain_registers([model_id])[2:-2]
    assert sunspec.decode(mdef, regs)[point] is None


def test_value_whose_scale_factor_is_not_implemented_is_missing_not_unscaled():
    m701 = sunspec.model(701)
    regs = sunspec.chain_registers([701])[2:-2]
    w = m701.point("W")
    regs[w.offset] = 1234  # W present, W_SF left "not implemented"
    assert sunspec.decode(m701, regs)["W"] is None
    regs[m701.point("W_SF").offset] = 1  # W_SF = 1
    assert sunspec.decode(m701, regs)["W"] == 12340


def test_prefix_decodes_with_scale_factors_read_before():
    m701 = sunspec.model(701)
    regs = sunspec.chain_registers([701])[2:-2]
    for name, value, sf in (("W", 12000, 1), ("W_SF", 1, 0), ("TotWhInj", 5000, 0),
                            ("TotWh_SF", 0, 0)):
        p = m701.point(name)
        regs[p.offset:p.offset + p.size] = sunspec.encode_point(p, value, sf)
    prefix = regs[:m701.through("TotWhAbs")]
    values = sunspec.decode(m701, prefix, {"W_SF": 1, "TotWh_SF": 0})
    assert (values["W"], values["TotWhInj"]) == (12000, 5000)
    assert "W_SF" not in values and "MnAlrmInfo" not in values  # past the prefix
    assert sunspec.decode(m701, prefix)["W"] is None  # scale factor unknown: missing


# -- scan --------------------------------------------------------------------------------
async def test_scan_identifies_each_variant_and_prints_scaled_values_with_units(site):
    expect_lines = {  # (model, point) -> text the table shows for it
        "der_pv": [("701", "W", "kW"), ("701", "Hz", "50  Hz"), ("702", "WMaxRtg", "30 kW"),
                   ("704", "WMaxLimPctRvrtTms", "60  s"), ("704", "WMaxLimPct", "100  %")],
        "float_pv": [("111", "W", "kW"), ("111", "Hz", "50  Hz"), ("120", "WRtg", "30 kW")],
        "der_bess": [("713", "SoC", "55  %"), ("713", "WHRtg", "40 kWh"),
                     ("702", "WChaRteMaxRtg", "20 kW"), ("802", "SoC", "55  %WHRtg")],
        "meter_204": [("204", "W", "kW"), ("204", "Hz", "50  Hz")],
    }
    for dev_id, lines in expect_lines.items():
        cfg = site.devices[dev_id].cfg
        [report] = await scan("127.0.0.1", cfg.port, [1], timeout_s=2)
        assert report.status == OK, report.error
        assert report.model_ids == CHAINS[dev_id][1]
        assert (report.manufacturer, report.serial) == ("PEDF-HIL", dev_id)
        text = render_text([report])
        for mid, point, shown in lines:
            row = next((ln for ln in text.splitlines() if ln.split()[:2] == [mid, point]), None)
            assert row is not None and shown in row, (dev_id, mid, point, text)
    [pv] = await scan("127.0.0.1", site.devices["der_pv"].cfg.port, [1], timeout_s=2)
    w = next(m for m in pv.models if m.id == 701).points["W"]
    assert w.units == "W" and w.value == pytest.approx(site.state("der_pv")["power_kw"] * 1000, abs=1)
    assert next(m for m in pv.models if m.id == 701).label == "DER AC Measurement"


async def test_scan_leaves_not_implemented_points_out(site):
    [bess] = await scan("127.0.0.1", site.devices["der_bess"].cfg.port, [1], timeout_s=2)
    m701 = next(m for m in bess.models if m.id == 701)
    assert "VA" not in m701.points and "TmpCab" not in m701.points  # not served: 0x8000
    assert m701.points["ConnSt"].symbol == "CONNECTED"


async def test_scan_reads_the_curves_of_a_705_model():
    m705 = sunspec.model(705)
    length = m705.length + 1 * (10 + 2 * 2)
    chain = sunspec.chain_registers([1, 705])
    at = sunspec.layout([1, 705], base=0)[705]
    chain[at + 1] = length
    values = {"Ena": 1, "NPt": 2, "NCrv": 1, "V_SF": 0, "DeptRef_SF": 0, "RspTms_SF": 0}
    for name, value in values.items():
        p = m705.point(name)
        chain[at + p.offset:at + p.offset + p.size] = sunspec.encode_point(p, value)
    curve = [2, 1, 0, 100, 100, 0, 10, 0, 5, 0, 95, 30, 105, (-30) & 0xFFFF]
    image = chain[:at + 2 + m705.length] + curve + chain[at + 2 + m705.length:]
    port = free_port()
    server = ModbusTcpServer([SimDevice(id=1, simdata=[SimData(address=40000, values=image,
                                                               datatype=DataType.REGISTERS)])],
                             address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        [report] = await scan("127.0.0.1", port, [1], timeout_s=2)
    finally:
        await server.shutdown()
    assert report.status == OK and report.model_ids == [1, 705]
    pts = next(m for m in report.models if m.id == 705).points
    assert pts["Crv[0].ActPt"].value == 2
    assert pts["Crv[0].DeptRef"].symbol == "VAR_MAX_PCT"
    assert [pts[f"Crv[0].Pt[{i}].{k}"].value for i in (0, 1) for k in ("V", "Var")] == [95, 30, 105, -30]
    assert pts["Crv[0].Pt[0].V"].units == "VNomPct"


# -- drivers -----------------------------------------------------------------------------
@pytest.mark.parametrize("dev_id, uses", [
    ("der_pv", {"measurement": 701, "nameplate": 702, "limit": 704}),
    ("float_pv", {"measurement": 111, "nameplate": 120, "limit": 123}),
    ("both_pv", {"measurement": 701, "nameplate": 702, "limit": 704}),
    ("der_bess", {"measurement": 701, "power": 704, "soc": [802, 713], "nameplate": 702}),
    ("bess_713", {"measurement": 113, "power": 124, "soc": [713, 124]}),
    ("meter_204", {"measurement": 204}),
])
async def test_driver_reads_each_variant_through_the_models_it_offers(site, drivers, dev_id, uses):
    drv = drivers[dev_id]
    reading = await drv.poll()
    desc = drv.describe()
    assert desc["uses"] == uses
    assert desc["models"] == sorted(CHAINS[dev_id][1])
    truth = site.state(dev_id)
    assert reading.values["power_kw"] == pytest.approx(truth["power_kw"], abs=0.01)
    if "soc_pct" in truth:
        assert reading.values["soc_pct"] == pytest.approx(55.0, abs=0.1)
    if dev_id.endswith("_pv"):
        assert reading.values["rated_kw"] == 30.0 and reading.values["limit_kw"] == 30.0


async def test_heartbeats_are_sent_where_the_device_has_715_or_802(site, drivers):
    assert drivers["der_bess"].describe()["heartbeats"] == []  # not connected yet
    for _ in range(3):
        await drivers["der_bess"].poll()
        await drivers["der_pv"].poll()
        await drivers["float_pv"].poll()
    await drivers["der_bess"].heartbeats_sent()  # sent after the poll round, as the poller does
    assert drivers["der_bess"].describe()["heartbeats"] == ["715.ControllerHb", "802.CtrlHb"]
    assert drivers["der_pv"].describe()["heartbeats"] == ["715.ControllerHb"]
    assert drivers["float_pv"].describe()["heartbeats"] == []
    bess = site.devices["der_bess"]
    assert (bess.rw[715]["ControllerHb"], bess.rw[802]["CtrlHb"]) == (3, 3)
    await drivers["der_bess"].write_power(2.0, revert_s=60)  # a control write beats too
    assert bess.rw[715]["ControllerHb"] == 4
    await drivers["der_bess"].poll()  # reads back what the last beat wrote, then beats
    await drivers["der_bess"].heartbeats_sent()  # the poll does not wait for its beat
    assert bess.rw[715]["ControllerHb"] == 5


@pytest.mark.parametrize("dev_id", ["der_pv", "float_pv", "both_pv"])
async def test_pv_limit_is_honoured_and_read_back_on_each_control_path(site, drivers, dev_id):
    drv = drivers[dev_id]
    await drv.poll()
    await drv.write_limit(12.0, revert_s=60)
    assert site.state(dev_id)["limit_kw"] == pytest.approx(12.0, abs=0.01)
    advance(site, 1)
    reading = await drv.poll()
    assert reading.values["limit_kw"] == pytest.approx(12.0, abs=0.01)
    assert reading.values["power_kw"] == pytest.approx(12.0, abs=0.01)
    if drv.describe()["uses"]["limit"] == 704:
        held = site.devices[dev_id].rw[704]
        assert (held["WMaxLimPctEna"], held["WMaxLimPctRvrtTms"], held["WMaxLimPctEnaRvrt"]) == (1, 60, 0)
        assert site.devices[dev_id].rw[123]["WMaxLim_Ena"] == 0  # the other path untouched


@pytest.mark.parametrize("dev_id", ["der_bess", "bess_713"])
async def test_battery_power_is_honoured_on_each_control_path(site, drivers, dev_id):
    drv = drivers[dev_id]
    await drv.poll()
    for kw in (-7.5, 10.0, 0.0):
        await drv.write_power(kw, revert_s=60)
        advance(site, 1)
        assert site.state(dev_id)["command_kw"] == pytest.approx(kw, abs=0.01)
        assert (await drv.poll()).values["power_kw"] == pytest.approx(kw, abs=0.01)


async def test_704_reversion_points_the_device_lacks_are_not_written(site, drivers):
    pv, bess = site.devices["der_pv"], site.devices["der_bess"]
    pv.rw[704]["WMaxLimPctRvrt"] = None  # served as "not implemented" (0xFFFF)
    bess.rw[704] |= {"WSetRvrt": None, "WSetEnaRvrt": None}
    await drivers["der_pv"].poll()
    await drivers["der_bess"].poll()
    await drivers["der_pv"].write_limit(15.0, revert_s=30)
    await drivers["der_bess"].write_power(5.0, revert_s=30)
    assert pv.rw[704]["WMaxLimPctRvrt"] is None and pv.rw[704]["WMaxLimPctRvrtTms"] == 30
    assert bess.rw[704]["WSetRvrt"] is None and bess.rw[704]["WSetEnaRvrt"] is None
    assert bess.rw[704]["WSetRvrtTms"] == 30
    assert site.state("der_pv")["limit_kw"] == pytest.approx(15.0)
    assert site.state("der_bess")["command_kw"] == pytest.approx(5.0)


async def test_704_setpoint_beyond_the_device_rating_is_clamped_by_the_driver(site, drivers):
    drv = drivers["der_bess"]
    await drv.poll()
    await drv.write_power(-35.0, revert_s=60)  # 702 WChaRteMax is 20 kW
    assert site.state("der_bess")["command_kw"] == pytest.approx(-20.0)


async def test_704_write_the_device_silently_derates_is_found_not_taken(site, drivers):
    drv = drivers["der_bess"]
    await drv.poll()
    dev = site.devices["der_bess"]
    on_write = dev.on_write

    def derate(model_id, changes, before):  # a PCS that stores 5 kW whatever it is told
        if model_id == 704 and "WSet" in changes:
            dev.rw[704]["WSet"] = max(-5000.0, min(5000.0, float(changes["WSet"])))
        on_write(model_id, changes, before)

    dev.on_write = derate
    await drv.write_power(12.0, revert_s=60)  # 704 is read every poll: no read-back
    await drv.poll()
    assert re.search(r"model 704 write of \['WSetEna', 'WSetMod', 'WSet', 'WSetRvrt'\] at \d+: "
                     r"the device did not take the command", drv.refused_write() or "")


async def test_slow_models_are_read_at_discovery_then_every_n_polls_with_their_own_time(site, drivers):
    drv = drivers["der_pv"]
    drv.slow_every = 3
    first = await drv.poll()
    assert first.stamps["rated_kw"] <= first.monotonic and "power_kw" not in first.stamps
    site.devices["der_pv"].rated_kw = 25.0  # the nameplate (702) changes on the device
    readings = [await drv.poll() for _ in range(3)]
    assert [r.values["rated_kw"] for r in readings] == [30.0, 30.0, 25.0]
    assert [r.stamps["rated_kw"] for r in readings[:2]] == [first.stamps["rated_kw"]] * 2
    assert readings[2].stamps["rated_kw"] > first.stamps["rated_kw"]
    assert readings[1].value_age_s("rated_kw", readings[1].monotonic) > 0
    assert drv.describe()["poll"] == {"fast": [701, 704, 715], "slow": [1, 702], "slow_every": 3}


async def test_not_implemented_values_reach_the_driver_as_missing_not_numbers(site, drivers):
    pv, bess = site.devices["der_pv"], site.devices["der_bess"]
    pv_values, bess_values = pv.values, bess.values

    def no_counter():  # an inverter without an energy counter
        v = pv_values()
        return {**v, 701: {**v[701], "TotWhInj": None}}

    def bms_without_soc():  # the BMS (802) leaves SoC unimplemented: 713 has it
        v = bess_values()
        return {**v, 802: {**v[802], "SoC": None}}

    pv.values, bess.values = no_counter, bms_without_soc
    reading = await drivers["der_pv"].poll()
    assert "energy_kwh" not in reading.values and reading.values["power_kw"] > 0
    assert (await drivers["der_bess"].poll()).values["soc_pct"] == pytest.approx(55.0, abs=0.1)

    def nothing_implemented():
        v = bms_without_soc()
        return {**v, 713: {**v[713], "SoC": None}}

    bess.values = nothing_implemented
    with pytest.raises(DeviceError, match=r"no state of charge reported \(models \[802, 713\]\)"):
        await drivers["der_bess"].poll()
    pv.values = lambda: {**no_counter(), 701: {**no_counter()[701], "W": None}}
    with pytest.raises(DeviceError, match="not implemented"):
        await drivers["der_pv"].poll()


async def test_a_chain_without_what_the_role_needs_is_refused_naming_it():
    image = sunspec.chain_registers([1, 701, 704])
    port = free_port()
    server = ModbusTcpServer([SimDevice(id=1, simdata=[SimData(address=40000, values=image,
                                                               datatype=DataType.REGISTERS)])],
                             address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    pv = SunSpecPv("pv1", Endpoint("127.0.0.1", port, 1.0), 1)
    bess = SunSpecBattery("bess1", Endpoint("127.0.0.1", port, 1.0), 1)
    try:
        with pytest.raises(DeviceError, match=r"needs a nameplate \(702 or 120\) \(found \[1, 701, 704\]\)"):
            await asyncio.wait_for(pv.poll(), 10)
        with pytest.raises(DeviceError, match=r"needs a state of charge \(802, 713 or 124\)"):
            await asyncio.wait_for(bess.poll(), 10)
        assert pv.sunspec.models == {}  # refused: the next poll discovers again
    finally:
        await pv.close()
        await bess.close()
        await server.shutdown()

"""`pedf-edge scan` against real sockets: the HIL's SunSpec devices, a plain Modbus server
that is not SunSpec, a device whose chain is broken, and a port where nothing listens."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import free_port
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.sunspec.models import SUNS
from drivers.sunspec.scan import BROKEN_CHAIN, NO_ANSWER, NOT_SUNSPEC, OK, render_text, scan
from edge.app.clock import Clock
from edge.config import Config, parse
from hil.site import SimSite

ROOT = Path(__file__).resolve().parents[2]
NOON = datetime.fromisoformat("2026-06-22T12:00:00+08:00")  # the PV produces


def site_config(*, gateway: bool = False) -> Config:
    """PV, battery and meter each on its own port, or all behind one port as units 1, 2, 3."""
    ports = [free_port()] * 3 if gateway else [free_port() for _ in range(3)]
    units = [1, 2, 3] if gateway else [1, 1, 1]
    devices = [
        {"id": "pv1", "host": "127.0.0.1", "port": 502, "role": "pv", "rated_kw": 30},
        {"id": "bess1", "host": "127.0.0.1", "port": 502, "role": "battery", "capacity_kwh": 40, "max_charge_kw": 20,
         "max_discharge_kw": 20, "sim": {"initial_soc_pct": 55}},
        {"id": "pcc", "host": "127.0.0.1", "port": 502, "role": "meter", "measures": "grid"},
    ]
    for d, port, unit in zip(devices, ports, units, strict=True):
        d.update(host="127.0.0.1", port=port, unit_id=unit)
    return parse({
        "site": {"id": "t", "timezone": "Asia/Shanghai"},
        "devices": devices,
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
    })


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    s = SimSite(site_config(), clock=Clock(NOON, 1.0))
    await s.start()
    yield s
    await s.stop()


def port_of(site: SimSite, device_id: str) -> int:
    return site.devices[device_id].cfg.port


async def run_cli(*args: str) -> tuple[int, str, str]:
    """The real command in a subprocess, while this test's loop keeps serving the HIL."""
    proc = await asyncio.create_subprocess_exec(  # the installed command, not the source tree
        sys.executable, "-m", "edge.cli", "scan", *args, cwd=tempfile.gettempdir(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def serve(device: SimDevice) -> tuple[ModbusTcpServer, int]:
    port = free_port()
    server = ModbusTcpServer([device], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server, port


def regs(address: int, values: list[int]) -> SimData:
    return SimData(address=address, values=values, datatype=DataType.REGISTERS)


async def test_pv_inverter_is_identified_with_its_models_and_power_in_watts(site: SimSite) -> None:
    [pv] = await scan("127.0.0.1", port_of(site, "pv1"), [1], timeout_s=2)
    assert pv.status == OK and pv.error is None
    assert (pv.manufacturer, pv.model, pv.serial, pv.version) == ("PEDF-HIL", "HIL-PV", "pv1", "0.1")
    assert pv.base == 40000
    assert pv.model_ids == [1, 103, 120, 123]
    inverter = next(m for m in pv.models if m.id == 103)
    assert inverter.label == "Inverter (Three Phase)"
    assert inverter.points["W"].units == "W"
    assert inverter.points["W"].value == pytest.approx(site.state("pv1")["power_kw"] * 1000, abs=20)
    assert inverter.points["Hz"].value == pytest.approx(50.0)
    assert inverter.points["Hz"].units == "Hz"
    assert inverter.points["WH"].units == "Wh"
    assert inverter.points["St"].symbol == "MPPT"
    nameplate = next(m for m in pv.models if m.id == 120)
    assert (nameplate.points["WRtg"].value, nameplate.points["WRtg"].units) == (30000, "W")
    assert all(not name.endswith("_SF") for m in pv.models for name in m.points)
    text = render_text([pv])
    assert "PEDF-HIL HIL-PV  serial pv1" in text
    assert "WRtg" in text and "30000  W" in text


async def test_battery_reports_state_of_charge_and_meter_its_energy_in_wh(site: SimSite) -> None:
    [bess] = await scan("127.0.0.1", port_of(site, "bess1"), [1], timeout_s=2)
    assert bess.status == OK and bess.model_ids == [1, 103, 124, 802]
    keys = {(mid, name): pv for mid, name, pv in bess.key_values()}
    assert keys[(802, "SoC")].value == pytest.approx(55, abs=0.5)
    assert keys[(802, "SoC")].units == "%WHRtg"
    assert keys[(124, "WChaMax")].value == 20000 and keys[(124, "WChaMax")].units == "W"

    [meter] = await scan("127.0.0.1", port_of(site, "pcc"), [1], timeout_s=2)
    assert meter.status == OK and meter.model_ids == [1, 203]
    imp = next(m for m in meter.models if m.id == 203).points["TotWhImp"]
    assert imp.units == "Wh" and isinstance(imp.value, int | float)


async def test_cli_json_has_the_same_content_as_the_scan(site: SimSite) -> None:
    port = port_of(site, "pv1")
    rc, out, err = await run_cli(f"127.0.0.1:{port}", "--json")
    assert rc == 0, err
    [dev] = json.loads(out)
    [direct] = await scan("127.0.0.1", port, [1], timeout_s=2)
    assert dev["status"] == "ok" and dev["unit"] == 1 and dev["port"] == port
    assert (dev["manufacturer"], dev["model"], dev["serial"]) == ("PEDF-HIL", "HIL-PV", "pv1")
    assert dev["model_ids"] == [1, 103, 120, 123]
    assert [m["id"] for m in dev["models"]] == direct.model_ids
    w = dev["models"][1]["points"]["W"]
    assert w["units"] == "W" and w["value"] == pytest.approx(
        next(m for m in direct.models if m.id == 103).points["W"].value, abs=20)
    for got, want in zip(dev["models"], direct.models, strict=True):
        assert set(got["points"]) == set(want.points)  # same points, each with value and units
        assert all(set(p) >= {"value", "units"} for p in got["points"].values())


async def test_cli_text_output_shows_identity_and_key_values(site: SimSite) -> None:
    rc, out, err = await run_cli(f"127.0.0.1:{port_of(site, 'bess1')}")
    assert rc == 0, err
    assert "PEDF-HIL HIL-BESS  serial bess1" in out
    assert "model 802" in out
    assert any(line.split()[:2] == ["802", "SoC"] and line.endswith("%WHRtg")
               for line in out.splitlines())


async def test_nothing_listening_exits_4_and_says_what_to_check() -> None:
    port = free_port()
    rc, out, err = await run_cli(f"127.0.0.1:{port}", "--timeout", "1")
    assert rc == 4
    assert "NO ANSWER" in out and "connection refused" in out
    assert "firewall" in err and f"127.0.0.1:{port}" in err
    [report] = await scan("127.0.0.1", port, [1], timeout_s=1)
    assert report.status == NO_ANSWER


async def test_plain_modbus_device_without_sunspec_marker_exits_5() -> None:
    server, port = await serve(SimDevice(id=1, simdata=[regs(0, [1234] * 10), regs(40000, [7] * 10)]))
    try:
        rc, out, err = await run_cli(f"127.0.0.1:{port}", "--json")
        assert rc == 5, err
        [dev] = json.loads(out)
        assert dev["status"] == NOT_SUNSPEC and "SunS" in dev["error"]
        assert dev["models"] == [] and dev["manufacturer"] is None
        rc, out, _ = await run_cli(f"127.0.0.1:{port}")
        assert rc == 5 and "NOT SUNSPEC" in out and "register map" in out
    finally:
        await server.shutdown()


async def test_chain_without_end_marker_is_reported_broken_and_exits_5() -> None:
    # "SunS", then model 1 (L=66) and a header pointing beyond the registers that exist.
    image = [*SUNS, 1, 66, *([0] * 66), 103, 50]
    server, port = await serve(SimDevice(id=1, simdata=[regs(40000, image)]))
    try:
        [dev] = await scan("127.0.0.1", port, [1], timeout_s=1)
        assert dev.status == BROKEN_CHAIN
        assert "after models [1, 103]" in dev.error
        rc, _, _ = await run_cli(f"127.0.0.1:{port}", "--timeout", "1")
        assert rc == 5
    finally:
        await server.shutdown()


async def test_two_units_behind_one_gateway_port_are_both_reported() -> None:
    s = SimSite(site_config(gateway=True), clock=Clock(NOON, 1.0))
    await s.start()
    try:
        port = port_of(s, "pv1")
        rc, out, err = await run_cli(f"127.0.0.1:{port}", "--unit", "1", "--unit", "2", "--json")
        assert rc == 0, err
        pv, bess = json.loads(out)
        assert (pv["unit"], pv["serial"], pv["model_ids"]) == (1, "pv1", [1, 103, 120, 123])
        assert (bess["unit"], bess["serial"], bess["model_ids"]) == (2, "bess1", [1, 103, 124, 802])
        # A dead unit behind the gateway (it answers GATEWAY_NO_RESPONSE for it) is reported
        # on its own; its neighbours stay identified and the scan still succeeds.
        await s.stop_device("pcc")
        reports = await scan("127.0.0.1", port, [1, 3, 2], timeout_s=1)
        assert [r.status for r in reports] == [OK, NO_ANSWER, OK]
        assert "unit 3 did not" in reports[1].error
        rc, out, _ = await run_cli(f"127.0.0.1:{port}", "--unit", "3", "--unit", "2")
        assert rc == 0 and "NO ANSWER" in out and "serial bess1" in out
    finally:
        await s.stop()


async def test_a_port_that_accepts_but_never_replies_exits_4() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # read requests until the client goes away; never answer
        writer.close()

    port = free_port()
    server = await asyncio.start_server(swallow, "127.0.0.1", port)
    try:
        [dev] = await scan("127.0.0.1", port, [1], timeout_s=0.3)
        assert dev.status == NO_ANSWER and "never replied within 0.3 s" in dev.error
        rc, out, err = await run_cli(f"127.0.0.1:{port}", "--timeout", "0.3")
        assert rc == 4 and "check the unit id" in out
    finally:
        server.close()
        await server.wait_closed()

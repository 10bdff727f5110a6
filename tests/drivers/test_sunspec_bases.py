"""SunSpec discovery where the "SunS" marker is not at 40000: devices in the field also put
it at register 0 or 50000. Two HIL units behind one gateway port, a PV inverter whose chain
starts at 0 and a battery whose chain starts at 50000 (each answers ILLEGAL ADDRESS at the
bases it does not use) next to a PCC meter at the usual 40000, found over a real loopback
socket by the role drivers and by `pedf-edge scan`'s library function. A manual clock keeps
physics still between reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from conftest import free_port
from fakes import ManualClock

from drivers.modbus.endpoint import Endpoint
from drivers.sunspec.models import layout
from drivers.sunspec.roles import SunSpecBattery, SunSpecPv
from drivers.sunspec.scan import OK, render_text, scan
from edge.config import Config, parse
from hil.site import SimSite

NOON = datetime.fromisoformat("2026-06-22T12:00:00+08:00")
BASE_OF = {"pv1": 0, "bess1": 50000, "pcc": 40000}  # device -> register of its "SunS" marker


def gateway_config() -> Config:
    """PV (unit 1), battery (unit 2) and PCC meter (unit 3) behind one port, as on a
    Modbus TCP gateway."""
    port = free_port()
    return parse({
        "site": {"id": "t", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pv1", "role": "pv", "rated_kw": 30, "revert_s": 60, "host": "127.0.0.1",
             "port": port, "unit_id": 1},
            {"id": "bess1", "role": "battery", "capacity_kwh": 40, "max_charge_kw": 20,
             "max_discharge_kw": 20, "revert_s": 60, "sim": {"initial_soc_pct": 55},
             "host": "127.0.0.1", "port": port, "unit_id": 2},
            {"id": "pcc", "role": "meter", "measures": "grid", "host": "127.0.0.1",
             "port": port, "unit_id": 3},
        ],
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
    })


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    clock = ManualClock(NOON)
    s = SimSite(gateway_config(), clock)
    s.devices["pv1"].serve_at(BASE_OF["pv1"])
    s.devices["bess1"].serve_at(BASE_OF["bess1"])
    await s.start()
    clock.t = 1.0
    s.step_to(1.0)  # PV at its clear-sky noon output
    yield s
    await s.stop()


def chain_at(site: SimSite, dev_id: str) -> dict[int, int]:
    """Model id -> address of its ID register, as the device serves its chain."""
    return layout(list(site.devices[dev_id].models), BASE_OF[dev_id])


async def test_role_drivers_find_chains_at_0_and_50000_and_control_through_them(site) -> None:
    ep = Endpoint("127.0.0.1", site.config.devices[0].port, 1.0)
    pv, bess = SunSpecPv("pv1", ep, 1), SunSpecBattery("bess1", ep, 2)
    try:
        await pv.connect()
        await bess.connect()
        assert pv.sunspec.models == chain_at(site, "pv1")
        assert bess.sunspec.models == chain_at(site, "bess1")
        assert (pv.sunspec.common["SN"], bess.sunspec.common["SN"]) == ("pv1", "bess1")
        r_pv, r_bess = await pv.poll(), await bess.poll()
        assert site.state("pv1")["power_kw"] > 10
        assert r_pv.values["power_kw"] == pytest.approx(site.state("pv1")["power_kw"], abs=0.05)
        assert r_bess.values["soc_pct"] == pytest.approx(55, abs=0.5)
        # Writes land on the moved chains: verified by the next poll, and the devices act on them.
        await pv.write_limit(12.0, revert_s=60)
        await bess.write_power(-5.0, revert_s=60)
        assert site.state("pv1")["limit_kw"] == pytest.approx(12.0, abs=0.1)
        assert site.state("bess1")["command_kw"] == pytest.approx(-5.0, abs=0.1)
        await pv.poll()
        await bess.poll()
        assert pv.refused_write() is None and bess.refused_write() is None
    finally:
        await ep.close()


async def test_scan_reports_each_unit_at_the_base_of_its_marker(site) -> None:
    port = site.config.devices[0].port
    reports = await scan("127.0.0.1", port, [1, 2, 3], timeout_s=2)
    assert [(r.status, r.error, r.base, r.serial) for r in reports] == [
        (OK, None, 0, "pv1"), (OK, None, 50000, "bess1"), (OK, None, 40000, "pcc")]
    pv, bess, _ = reports
    for report, dev_id in zip(reports, BASE_OF, strict=True):
        assert {m.id: m.address for m in report.models} == chain_at(site, dev_id)
        assert all(m.error is None for m in report.models), report.models
    pv_w = next(m for m in pv.models if m.id == 103).points["W"].value
    soc = next(m for m in bess.models if m.id == 802).points["SoC"].value
    assert pv_w == pytest.approx(site.state("pv1")["power_kw"] * 1000, abs=20)
    assert soc == pytest.approx(55, abs=0.5)
    text = render_text(reports)
    assert f"127.0.0.1:{port} unit 1: SunSpec at 0  PEDF-HIL" in text
    assert f"127.0.0.1:{port} unit 2: SunSpec at 50000  PEDF-HIL" in text

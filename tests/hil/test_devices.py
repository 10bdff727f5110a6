"""Simulated devices over real loopback Modbus TCP, read and written like a controller would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest
from conftest import free_port, wait_for
from pymodbus.client import AsyncModbusTcpClient

from drivers.sunspec.models import END_ID, SUNS, decode, model
from edge.app.clock import Clock
from edge.config import Config, parse
from hil.site import SimSite

NOON = "2026-06-22T12:00:00+08:00"  # a Monday, summer solstice
MIDNIGHT = "2026-06-22T00:00:00+08:00"


def small_config(*, shared_port: bool = False, **sim: dict) -> Config:
    ports = [free_port()] * 4 if shared_port else [free_port() for _ in range(4)]
    units = [1, 2, 3, 4] if shared_port else [1, 1, 1, 1]
    devices = [
        {"id": "pv1", "host": "127.0.0.1", "port": 502, "role": "pv", "rated_kw": 30, "revert_s": 60, "sim": sim.get("pv", {})},
        {"id": "bess1", "host": "127.0.0.1", "port": 502, "role": "battery", "capacity_kwh": 40, "max_charge_kw": 20,
         "max_discharge_kw": 20, "revert_s": 60, "sim": {"initial_soc_pct": 50}},
        {"id": "pcc", "host": "127.0.0.1", "port": 502, "role": "meter", "measures": "grid"},
        {"id": "load", "host": "127.0.0.1", "port": 502, "role": "meter", "measures": "load",
         "sim": {"profile": "flat", "day_kw": 10}},
    ]
    for d, port, unit in zip(devices, ports, units, strict=True):
        d.update(host="127.0.0.1", port=port, unit_id=unit)
    return parse({
        "site": {"id": "t", "timezone": "Asia/Shanghai"},
        "devices": devices,
        "control": {"export_limit_kw": 0},
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}],
                   "export_price": 0.4},
    })


@pytest.fixture
async def make_site() -> AsyncIterator[Callable[..., object]]:
    sites: list[SimSite] = []

    async def _make(start: str, speed: float, config: Config | None = None) -> SimSite:
        site = SimSite(config or small_config(), clock=Clock(datetime.fromisoformat(start), speed))
        sites.append(site)
        await site.start()
        return site

    yield _make
    for s in sites:
        await s.stop()


class Sunspec:
    """A minimal SunSpec client over pymodbus: find SunS, walk the chain, decode models."""

    def __init__(self, site: SimSite, device_id: str) -> None:
        cfg = site.devices[device_id].cfg
        self.unit = cfg.unit_id
        self.client = AsyncModbusTcpClient(cfg.host, port=cfg.port, timeout=2, retries=0)
        self.starts: dict[int, int] = {}

    async def __aenter__(self) -> Sunspec:
        assert await self.client.connect()
        assert await self.regs(40000, 2) == list(SUNS)
        addr = 40002
        while (hdr := await self.regs(addr, 2))[0] != END_ID:
            self.starts[hdr[0]] = addr
            addr += 2 + hdr[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.close()

    async def regs(self, address: int, count: int) -> list[int]:
        out: list[int] = []
        while count > 0:
            n = min(count, 120)
            rr = await self.client.read_holding_registers(address, count=n, device_id=self.unit)
            assert not rr.isError(), rr
            out += rr.registers
            address, count = address + n, count - n
        return out

    async def read(self, model_id: int) -> dict:
        mdef = model(model_id)
        return decode(mdef, await self.regs(self.starts[model_id], 2 + mdef.length))

    def addr(self, model_id: int, point: str) -> int:
        return self.starts[model_id] + model(model_id).point(point).offset

    async def write(self, model_id: int, point: str, values: list[int]):
        address = self.addr(model_id, point)
        return await self.client.write_registers(address, values, device_id=self.unit)


async def test_chain_of_each_role_decodes_with_the_driver_codec(make_site) -> None:
    site = await make_site(NOON, 50)
    expected = {
        "pv1": [1, 103, 120, 123], "bess1": [1, 103, 124, 802], "pcc": [1, 203], "load": [1, 203],
    }
    for dev_id, models in expected.items():
        async with Sunspec(site, dev_id) as ss:
            assert list(ss.starts) == models
            common = await ss.read(1)
            assert (common["Mn"], common["SN"], common["Vr"]) == ("PEDF-HIL", dev_id, "0.1")
    async with Sunspec(site, "pv1") as ss:
        assert (await ss.read(120))["WRtg"] == 30000
        assert (await ss.read(123))["WMaxLimPct_SF"] == -1
    async with Sunspec(site, "bess1") as ss:
        m802 = await ss.read(802)
        assert (m802["WHRtg"], m802["SoCMin"], m802["SoCMax"], m802["SoH"]) == (40000, 2, 100, 100)
        assert (await ss.read(124))["InOutWRte_SF"] == -2
    async with Sunspec(site, "load") as ss:
        m203 = await ss.read(203)
        assert m203["W"] == pytest.approx(10000) and m203["PhVphA"] == 230 and m203["Hz"] == 50


async def test_pv_limit_caps_output_then_device_reverts_after_rvrt_tms(make_site) -> None:
    site = await make_site(NOON, 100)
    async with Sunspec(site, "pv1") as ss:
        assert (await ss.read(103))["W"] > 25000  # clear summer noon, 30 kW rated
        # WMaxLimPct=50.0 %, WinTms 0, RvrtTms 120 s, RmpTms 0, Ena=1 (contiguous RW block)
        rr = await ss.write(123, "WMaxLimPct", [500, 0, 120, 0, 1])
        assert not rr.isError(), rr
        seen: dict = {}

        async def limited() -> bool:
            seen.update(await ss.read(103))
            return seen["W"] <= 15000

        await wait_async(limited, 10, "PV output at the 50 % limit")
        assert seen["St"] == 5  # THROTTLED
        assert site.state("pv1")["limit_kw"] == pytest.approx(15)

        async def reverted() -> bool:
            m123, m103 = await ss.read(123), await ss.read(103)
            return m123["WMaxLim_Ena"] == 0 and m103["W"] > 25000

        await wait_async(reverted, 20, "limit to revert after 120 simulated seconds")
        assert site.state("pv1")["limit_kw"] is None


async def test_battery_discharge_lowers_soc_and_the_grid_meter_follows(make_site) -> None:
    site = await make_site(MIDNIGHT, 600)
    async with Sunspec(site, "bess1") as bess, Sunspec(site, "pcc") as pcc, \
            Sunspec(site, "load") as load, Sunspec(site, "pv1") as pv:
        soc0 = (await bess.read(802))["SoC"]
        assert (await pcc.read(203))["W"] == pytest.approx(10000)  # night: grid = load
        assert not (await bess.write(124, "StorCtl_Mod", [2])).isError()  # bit1: discharge
        # OutWRte 25.00 %, InWRte 0, WinTms 0, RvrtTms 0 = never revert
        assert not (await bess.write(124, "OutWRte", [2500, 0, 0, 0])).isError()

        async def discharging() -> bool:
            return (await bess.read(802))["SoC"] < soc0 - 0.5

        await wait_async(discharging, 15, "SoC to fall while discharging")
        m124 = await bess.read(124)
        assert m124["ChaSt"] == 3 and m124["ChaState"] < soc0
        b_w = (await bess.read(103))["W"]
        grid_w = (await pcc.read(203))["W"]
        load_w = (await load.read(203))["W"]
        pv_w = (await pv.read(103))["W"]
        assert b_w == pytest.approx(5000)  # 25 % of WChaMax 20 kW
        assert abs(grid_w - (load_w - pv_w - b_w)) <= 100  # balance within 0.1 kW
        assert grid_w == pytest.approx(5000, abs=100)

        # Charge at 50 %: −10 kW, grid imports 20 kW, SoC rises.
        assert not (await bess.write(124, "StorCtl_Mod", [1])).isError()
        assert not (await bess.write(124, "InWRte", [5000])).isError()
        soc1 = site.state("bess1")["soc_pct"]
        await wait_for(lambda: site.state("bess1")["soc_pct"] > soc1 + 0.5, 15, "SoC to rise")
        assert (await bess.read(103))["W"] == pytest.approx(-10000)
        assert (await pcc.read(203))["W"] == pytest.approx(20000, abs=100)
        assert (await bess.read(124))["ChaSt"] == 4


async def test_battery_command_reverts_to_idle_when_not_rewritten(make_site) -> None:
    site = await make_site(MIDNIGHT, 300)
    async with Sunspec(site, "bess1") as bess:
        # StorCtl_Mod=2 then OutWRte 50 %, InWRte 0, WinTms 0, RvrtTms 30 s
        assert not (await bess.write(124, "StorCtl_Mod", [2])).isError()
        assert not (await bess.write(124, "OutWRte", [5000, 0, 0, 30])).isError()
        await wait_for(lambda: site.state("bess1")["power_kw"] > 9, 10, "discharge to start")
        await wait_for(lambda: site.state("bess1")["power_kw"] == 0, 10, "revert to 0 kW")
        m124 = await bess.read(124)
        assert m124["StorCtl_Mod"] == 0 and m124["ChaSt"] == 6
        assert (await bess.read(103))["W"] == 0


async def test_writes_to_read_only_points_are_rejected(make_site) -> None:
    site = await make_site(NOON, 50)
    async with Sunspec(site, "pv1") as pv, Sunspec(site, "bess1") as bess:
        for rr in (
            await pv.write(103, "W", [1]),
            await pv.client.write_register(40000, 0, device_id=pv.unit),  # SunS marker
            await pv.write(120, "WRtg", [1]),
            await bess.write(802, "SoC", [500]),
            await bess.write(124, "ChaState", [500]),
        ):
            assert rr.isError() and rr.exception_code == 2, rr  # ILLEGAL_ADDRESS
        rr = await pv.write(123, "WMaxLimPct", [2000])  # 200 %: RW but out of range
        assert rr.isError() and rr.exception_code == 3, rr  # ILLEGAL_VALUE
        assert not (await bess.write(802, "CtrlHb", [7])).isError()  # RW accepted, read back
        # Read-modify-write of 124's first RW run, "not implemented" words (WChaGra…) unchanged
        block = await bess.regs(bess.addr(124, "WChaMax"), 6)
        assert 0xFFFF in block
        assert not (await bess.write(124, "WChaMax", block)).isError()
        assert (await bess.read(802))["CtrlHb"] == 7
        assert site.state("bess1")["power_kw"] == 0


async def test_stopped_device_refuses_connections_and_answers_after_start(make_site) -> None:
    site = await make_site(NOON, 50)
    cfg = site.devices["pv1"].cfg
    await site.stop_device("pv1")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(cfg.host, cfg.port)
    t_stopped = site.t_s
    await wait_for(lambda: site.t_s > t_stopped + 10, 5, "physics to keep running")
    await site.start_device("pv1")
    async with Sunspec(site, "pv1") as ss:
        assert (await ss.read(103))["W"] > 25000


async def test_shared_endpoint_keeps_serving_other_units_while_one_is_stopped(make_site) -> None:
    site = await make_site(NOON, 50, small_config(shared_port=True))
    async with Sunspec(site, "pcc") as pcc:
        await site.stop_device("pv1")
        rr = await pcc.client.read_holding_registers(40000, count=2, device_id=1)  # pv1's unit
        assert rr.isError() and rr.exception_code == 0x0B  # GATEWAY_NO_RESPONSE
        assert (await pcc.read(203))["W"] is not None
        await site.start_device("pv1")
        rr = await pcc.client.read_holding_registers(40000, count=2, device_id=1)
        assert rr.registers == list(SUNS)


def test_offline_day_balances_and_counts_energy() -> None:
    """A day stepped without sockets: per-minute samples, balance, ledgers, determinism."""
    cfg = small_config(pv={"peak_kw": 30})
    runs = []
    for _ in range(2):
        site = SimSite(cfg, clock=Clock(datetime.fromisoformat(MIDNIGHT), 1))
        site.step_to(86400)
        runs.append(site)
    a, b = runs
    assert a.kpis() == b.kpis() and a.samples == b.samples
    assert len(a.samples) == 1440
    for s in a.samples:
        assert s.grid_kw == pytest.approx(s.load_kw - s.pv_kw - s.bess_kw)
    k = a.kpis()
    real, nb = k["with_battery"], k["no_battery"]
    assert real["load_kwh"] == pytest.approx(240)  # flat 10 kW
    assert real["import_kwh"] - real["export_kwh"] == pytest.approx(
        real["load_kwh"] - real["pv_kwh"] - real["discharge_kwh"] + real["charge_kwh"])
    assert real["export_kwh"] > 0 and nb["export_kwh"] == pytest.approx(0, abs=1e-9)  # zero export
    assert nb["pv_curtailed_kwh"] > 0 and real["pv_curtailed_kwh"] == pytest.approx(0)
    assert nb["energy_cost"] == pytest.approx(nb["import_kwh"] * 1.0)
    assert real["energy_cost"] == pytest.approx(real["import_kwh"] - 0.4 * real["export_kwh"])


async def wait_async(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """`wait_for` for async predicates (reads over Modbus)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_driver_reads_the_scale_factor_before_its_first_limit_write(make_site) -> None:
    from drivers.modbus.endpoint import Endpoint
    from drivers.sunspec.roles import SunSpecPv

    site = await make_site(NOON, 1)
    cfg = next(d for d in site.config.devices if d.id == "pv1")
    pv = SunSpecPv("pv1", Endpoint(cfg.host, cfg.port, 1.0), cfg.unit_id)
    await pv.connect()  # reads the nameplate (120), not yet the controls (123, SF -1)
    await pv.write_limit(15.0, 60)  # 50 % of 30 kW: with SF 0 assumed it would be 5 %
    assert site.state("pv1")["limit_kw"] == pytest.approx(15.0)
    await pv.close()

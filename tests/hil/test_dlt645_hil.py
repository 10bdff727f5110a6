"""DL/T 645 meters in the HIL: the driver (drivers/dlt645/, built from the config by the
registry) polls simulated meters over real loopback TCP and reads what the site simulated;
foreign addresses stay silent, unknown identifiers get error replies, fault injection
closes and reopens the gateway, and values beyond the XX.XXXX kW format clamp loudly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from conftest import free_port
from fakes import ManualClock

from drivers.base import DeviceError
from drivers.dlt645 import bus as dlt_bus
from drivers.dlt645 import frame as dlt
from drivers.dlt645 import meter as dlt_meter
from edge.app.devices import build_devices
from edge.config import Config, parse
from hil.serve.dlt645 import encode_value, format_limit
from hil.site import SimSite

PCC, LOAD = "202600000001", "202600000002"


def config(load_kw: float = 20.0, **pcc: float) -> Config:
    """PV over SunSpec; the PCC and load meters are DL/T 645 meters behind one gateway;
    `pcc`: more settings of the PCC meter (ct_ratio, pt_ratio)."""
    gateway = free_port()
    return parse({
        "site": {"id": "t", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pv1", "host": "127.0.0.1", "role": "pv", "rated_kw": 60, "port": free_port(), "sim": {"peak_kw": 60}},
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "measures": "grid", "protocol": "dlt645-tcp",
             "address": PCC, "port": gateway, "timeout_s": 0.3, **pcc},
            {"id": "load", "host": "127.0.0.1", "role": "meter", "measures": "load", "protocol": "dlt645-tcp",
             "address": LOAD, "port": gateway, "timeout_s": 0.3,
             "sim": {"profile": "flat", "day_kw": load_kw}},
        ],
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
    })


@pytest.fixture
async def make_site() -> AsyncIterator[Callable[..., object]]:
    opened: list[tuple[SimSite, dict]] = []

    async def _make(cfg: Config, start: str = "2026-06-22T06:00:00+08:00"):
        site = SimSite(cfg, clock=ManualClock(start))
        await site.start()
        drivers = build_devices(cfg)
        opened.append((site, drivers))
        return site, drivers

    yield _make
    for site, drivers in opened:
        for drv in drivers.values():
            await drv.close()
        await site.stop()


def advance(site: SimSite, t_s: float) -> None:
    site.clock.t = t_s  # type: ignore[attr-defined]
    site.step_to(t_s)


# --- value encoding ------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "fmt"), [
    (-12.3456, (3, 4, True)), (79.9999, (3, 4, True)), (0.0, (3, 4, True)),
    (230.1, (2, 1, False)), (-115.942, (3, 3, True)), (123456.78, (4, 2, False)),
])
def test_encoded_values_decode_with_the_driver_codec(value, fmt) -> None:
    raw, clamped = encode_value(value, *fmt)
    assert not clamped
    assert dlt.decode_value(raw, *fmt) == pytest.approx(value)


def test_power_beyond_the_xx_xxxx_format_clamps_and_counters_roll_over() -> None:
    assert format_limit(3, 4, True) == 79.9999
    raw, clamped = encode_value(-123.4, 3, 4, True)
    assert clamped and dlt.decode_value(raw, 3, 4, True) == -79.9999
    raw, clamped = encode_value(1_000_012.34, 4, 2, False, wrap=True)
    assert not clamped and dlt.decode_value(raw, 4, 2, False) == pytest.approx(12.34)


# --- the driver against the HIL ------------------------------------------------------------

async def test_driver_reads_what_the_site_simulated_within_resolution(make_site) -> None:
    site, drivers = await make_site(config())
    advance(site, 8 * 3600)  # 06:00 -> 14:00: imports in the morning, exports at midday
    pcc, load = site.state("pcc"), site.state("load")
    assert pcc["import_kwh"] > 1 and pcc["export_kwh"] > 1 and pcc["power_kw"] < -5
    await asyncio.gather(drivers["pcc"].connect(), drivers["load"].connect())
    r = (await drivers["pcc"].poll()).values
    assert r["power_kw"] == pytest.approx(pcc["power_kw"], abs=0.00005)
    assert r["import_kwh"] == pytest.approx(pcc["import_kwh"], abs=0.005)
    assert r["export_kwh"] == pytest.approx(pcc["export_kwh"], abs=0.005)
    assert r["import_kwh"] == pytest.approx(site.ledger.import_kwh, abs=0.005)
    assert r["export_kwh"] == pytest.approx(site.ledger.export_kwh, abs=0.005)
    for phase in "abc":
        assert r[f"voltage_{phase}_v"] == 230.0
        assert r[f"current_{phase}_a"] == pytest.approx(pcc["power_kw"] * 1000 / 690, abs=0.0005)
        assert r[f"current_{phase}_a"] < 0  # reverse (export) current carries the sign
    r_load = (await drivers["load"].poll()).values  # same gateway, other address
    assert r_load["power_kw"] == pytest.approx(load["power_kw"]) == pytest.approx(20.0)
    assert r_load["import_kwh"] == pytest.approx(site.ledger.load_kwh, abs=0.005)


async def test_foreign_address_is_silent_and_unknown_identifier_gets_an_error_reply(
        make_site) -> None:
    site, drivers = await make_site(config())
    cfg = site.devices["pcc"].cfg
    stranger = dlt_meter.Dlt645Meter("stranger", "202600000099", dlt_bus.Tcp(cfg.host, cfg.port), 0.3)
    try:
        with pytest.raises(DeviceError, match="stranger: DI [0-9A-F]{8}: no reply within 0.3 s"):
            await stranger.poll()
    finally:
        await stranger.close()
    with pytest.raises(DeviceError, match="pcc: DI 04000401: .*no such data"):
        await drivers["pcc"].read(0x04000401)  # error reply: the link stays up
    assert (await drivers["pcc"].poll()).values["voltage_a_v"] == 230.0


async def test_read_address_answers_and_broadcast_stays_silent(make_site) -> None:
    site, _ = await make_site(config())
    cfg = site.devices["pcc"].cfg
    site.devices["load"].online = False  # one meter on the bus, so the wildcard has one answer
    reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
    try:
        writer.write(dlt.encode_frame(b"\xaa" * 6, 0x13, b""))
        frame = await asyncio.wait_for(dlt.read_frame(reader), 1)
        assert (frame.control, frame.data) == (0x93, dlt.encode_address(PCC))
        writer.write(dlt.read_request(b"\x99" * 6, 0x02030000))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(dlt.read_frame(reader), 0.3)
    finally:
        writer.close()


async def test_stopped_meter_is_silent_and_the_last_one_stopped_closes_the_gateway(
        make_site) -> None:
    site, drivers = await make_site(config())
    pcc, load = drivers["pcc"], drivers["load"]
    await pcc.poll()
    await site.stop_device("load")
    with pytest.raises(DeviceError, match="load: DI [0-9A-F]{8}: no reply within"):
        await load.poll()
    with pytest.raises(DeviceError, match="load: backing off"):  # no timeout on every poll
        await load.poll()
    await pcc.poll()  # the other meter on the bus still answers
    await site.stop_device("pcc")
    with pytest.raises(DeviceError, match="pcc: DI [0-9A-F]{8}: connection lost"):
        await pcc.poll()
    with pytest.raises(DeviceError, match="pcc: cannot open transport"):
        await pcc.poll()
    advance(site, 600)  # physics and counters keep running while the meters are away
    await site.start_device("pcc")
    await asyncio.sleep(dlt_bus.BACKOFF_MIN_S)  # the bus re-opens after its reconnect backoff
    await pcc.connect()
    r = (await pcc.poll()).values
    assert r["import_kwh"] > 0
    assert r["import_kwh"] == pytest.approx(site.state("pcc")["import_kwh"], abs=0.005)
    await asyncio.sleep(dlt_bus.BACKOFF_MIN_S)  # load's first backoff is over: it is probed again
    with pytest.raises(DeviceError, match="no reply within"):
        await load.poll()  # still stopped: silent on the reopened bus
    await site.start_device("load")
    await asyncio.sleep(2 * dlt_bus.BACKOFF_MIN_S)  # silent twice in a row: the backoff doubled
    assert (await load.poll()).values["power_kw"] == pytest.approx(20.0)


async def test_pcc_beyond_79_9999_kw_reads_the_format_limit_and_warns_once(
        make_site, caplog) -> None:
    site, drivers = await make_site(config(load_kw=120.0), start="2026-06-22T00:00:00+08:00")
    advance(site, 60)
    assert site.state("pcc")["power_kw"] == pytest.approx(120.0)
    with caplog.at_level(logging.WARNING, logger="hil.serve.dlt645"):
        for _ in range(2):
            assert (await drivers["pcc"].poll()).values["power_kw"] == 79.9999
    warnings = [r.getMessage() for r in caplog.records if "outside what DL/T 645" in r.getMessage()]
    assert len(warnings) == 1 and "pcc: power_kw = 120.0000" in warnings[0]
    assert "reads 79.9999" in warnings[0]


async def test_pcc_above_80_kw_on_ct_ratio_reads_in_full_and_the_wire_carries_secondary(
        make_site, caplog) -> None:
    """The same 120 kW site behind 100/5 A CTs (ct_ratio 20): the meter carries 6 kW on the
    wire, the driver configured with the same ratio reads 120 kW, nothing clamps."""
    site, drivers = await make_site(config(load_kw=120.0, ct_ratio=20),
                                    start="2026-06-22T00:00:00+08:00")
    advance(site, 600)
    pcc = site.state("pcc")
    assert pcc["power_kw"] == pytest.approx(120.0)
    with caplog.at_level(logging.WARNING, logger="hil.serve.dlt645"):
        raw = await drivers["pcc"].read(0x02030000)
        await drivers["pcc"].connect()
        r = (await drivers["pcc"].poll()).values
    assert dlt.decode_value(raw, 3, 4, signed=True) == pytest.approx(6.0, abs=0.0001)
    assert r["power_kw"] == pytest.approx(120.0, abs=20 * 0.00005)
    assert r["import_kwh"] == pytest.approx(pcc["import_kwh"], abs=20 * 0.005)
    assert r["current_a_a"] == pytest.approx(120_000 / 690, abs=20 * 0.0005)
    assert r["voltage_a_v"] == 230.0  # no PT on a low-voltage feeder
    assert not [m for m in caplog.messages if "outside what DL/T 645" in m]

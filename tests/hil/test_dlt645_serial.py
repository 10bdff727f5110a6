"""DL/T 645 meters on one RS-485 bus, end to end: the HIL serves two meters on a serial port
(its end of a virtual cable, hil/serve/cable.py) and the controller's drivers, built from the same
config by the registry, open the other end by the configured path. Both meters share one
bus: one connection, one request on the wire at a time; every poll round reads the power of
each meter and one slow value, in rotation across the meters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import free_port
from fakes import ManualClock

from drivers.base import DeviceError, Reading
from drivers.dlt645 import bus as dlt_bus
from drivers.dlt645 import frame as dlt
from drivers.dlt645 import meter as dlt_meter
from edge.app.devices import build_devices
from edge.config import Config, parse
from hil.site import SimSite

PCC, LOAD = "202600000001", "202600000002"
# The slow requests of a meter, by the keys each one refreshes.
SLOW_GROUPS = [frozenset(dlt.BLOCKS.get(di) or (dlt.KEY_OF[di],)) for di in dlt.SLOW]
SINGLE_GROUPS = [frozenset({k}) for k in dlt.POINTS if k not in dlt.FAST]


def config(port: Path) -> Config:
    """SunSpec PV on TCP; the PCC and load meters are DL/T 645 meters on one serial bus.
    8N1: a pseudo-terminal refuses even parity (meters default to 8E1)."""
    bus = {"port": str(port), "parity": "N"}
    return parse({
        "site": {"id": "rs485", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pv1", "host": "127.0.0.1", "role": "pv", "rated_kw": 60, "port": free_port(), "sim": {"peak_kw": 60}},
            {"id": "pcc", "role": "meter", "measures": "grid", "protocol": "dlt645-serial",
             "address": PCC, "serial": bus},
            {"id": "load", "role": "meter", "measures": "load", "protocol": "dlt645-serial",
             "address": LOAD, "serial": bus, "sim": {"profile": "flat", "day_kw": 20}},
        ],
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]},
    })


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[SimSite, dict]]:
    cfg = config(tmp_path / "dev" / "ttyRS485")  # no such port: the HIL makes the cable
    site = SimSite(cfg, clock=ManualClock("2026-06-22T06:00:00+08:00"))
    await site.start()
    drivers = build_devices(cfg)
    try:
        yield site, drivers
    finally:
        for drv in drivers.values():
            await drv.close()
        await site.stop()


def advance(site: SimSite, t_s: float) -> None:
    site.clock.t = t_s  # type: ignore[attr-defined]
    site.step_to(t_s)


def refreshed(before: Reading, after: Reading) -> set[str]:
    return {k for k, t in after.stamps.items() if t != before.stamps.get(k)}


async def test_two_meters_on_one_pty_bus_share_one_connection_and_read_the_site(rig) -> None:
    site, drivers = rig
    pcc, load = drivers["pcc"], drivers["load"]
    port = pcc.bus.opener.port
    assert pcc.bus is load.bus
    assert Path(port).is_symlink()  # the controller's end of the HIL's virtual cable
    assert pcc.describe() == {"protocol": "dlt645", "endpoint": f"serial://{port}?2400-8N1",
                              "address": PCC}
    advance(site, 8 * 3600)  # 06:00 -> 14:00: PV exports at midday
    await asyncio.gather(pcc.connect(), load.connect())
    r_pcc, r_load = await asyncio.gather(pcc.poll(), load.poll())
    truth = site.state("pcc")
    assert truth["power_kw"] < -5 and truth["import_kwh"] > 1
    assert r_pcc.values["power_kw"] == pytest.approx(truth["power_kw"], abs=0.00005)
    assert r_pcc.values["import_kwh"] == pytest.approx(truth["import_kwh"], abs=0.005)
    assert r_pcc.values["export_kwh"] == pytest.approx(truth["export_kwh"], abs=0.005)
    assert r_pcc.values["voltage_b_v"] == 230.0 and r_pcc.values["power_factor_c"] == 1.0
    assert r_pcc.values["current_a_a"] == pytest.approx(truth["power_kw"] * 1000 / 690, abs=0.0005)
    assert r_load.values["power_kw"] == pytest.approx(20.0)
    assert r_load.values["import_kwh"] == pytest.approx(site.ledger.load_kwh, abs=0.005)


async def test_each_round_reads_every_power_and_one_slow_request_in_rotation(rig) -> None:
    site, drivers = rig
    pcc, load = drivers["pcc"], drivers["load"]
    await asyncio.gather(pcc.connect(), load.connect())
    last = dict(zip(("pcc", "load"), await asyncio.gather(pcc.poll(), load.poll()), strict=True))
    seen: dict[str, set[frozenset[str]]] = {"pcc": set(), "load": set()}
    rounds = 2 * len(dlt.SLOW)
    for i in range(rounds):
        advance(site, 60.0 * (i + 1))
        now = dict(zip(("pcc", "load"), await asyncio.gather(pcc.poll(), load.poll()), strict=True))
        changes = {m: refreshed(last[m], now[m]) for m in now}
        assert sum(bool(c) for c in changes.values()) == 1, changes  # one slow request a round
        for m, keys in changes.items():
            assert now[m].monotonic > last[m].monotonic  # power: every round, both meters
            assert all(t <= now[m].monotonic for t in now[m].stamps.values())
            if keys:
                assert frozenset(keys) in SLOW_GROUPS, keys  # a block, or one energy counter
                seen[m].add(frozenset(keys))
        last = now
    assert seen == {"pcc": set(SLOW_GROUPS), "load": set(SLOW_GROUPS)}  # nobody starves


async def test_meter_without_block_identifiers_is_read_one_identifier_at_a_time(rig) -> None:
    site, drivers = rig
    site._gateway(site.devices["pcc"]).block_reads = False  # an older meter generation
    pcc, load = drivers["pcc"], drivers["load"]
    await asyncio.gather(pcc.connect(), load.connect())  # blocks refused: single reads
    last = await pcc.poll()
    assert set(dlt.POINTS) <= last.values.keys()
    seen = set()
    for _ in range(2 * len(SINGLE_GROUPS)):  # the two meters take turns
        now, _ = await asyncio.gather(pcc.poll(), load.poll())
        keys = frozenset(refreshed(last, now))
        assert not keys or keys in SINGLE_GROUPS, keys
        seen.add(keys)
        last = now
    assert seen - {frozenset()} == set(SINGLE_GROUPS)


def bus_log(bus: dlt_bus.Dlt645Bus) -> list[bytes]:
    """Addresses of the meters the bus master sends a request to from now on, in order."""
    sent: list[bytes] = []
    read = bus.read

    async def logged(address: bytes, di: int, who: str) -> bytes:
        sent.append(address)
        return await read(address, di, who)

    bus.read = logged  # type: ignore[method-assign]
    return sent


async def until_recovered(meter: dlt_meter.Dlt645Meter, within_s: float) -> tuple[Reading, list[str]]:
    """Poll until `meter` answers: its reading and the errors on the way. `within_s` only
    bounds the wait."""
    errors: list[str] = []
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await meter.poll(), errors
        except DeviceError as exc:
            errors.append(str(exc))
            if time.monotonic() > deadline:
                raise AssertionError(f"{meter.id} still failing after {within_s} s: "
                                     f"{errors[-3:]}") from exc
            await asyncio.sleep(0.05)


async def test_silent_meter_backs_off_and_its_neighbour_is_read_every_round(rig) -> None:
    """A dead meter on a live bus (no reply at all). The other meter is read in every round;
    the silent one takes the bus for one request (one timeout) only when its backoff window
    is over, each such probe doubling the window, and in between its polls fail before
    anything goes on the wire. It is back at the first probe once it answers again."""
    site, drivers = rig
    pcc, load = drivers["pcc"], drivers["load"]
    await asyncio.gather(pcc.connect(), load.connect())
    sent = bus_log(pcc.bus)
    await site.stop_device("load")
    probes = skips = 0
    for _ in range(60):  # bounds the wait only: the window grows with every probe
        sent.clear()
        r_pcc, r_load = await asyncio.gather(pcc.poll(), load.poll(), return_exceptions=True)
        assert isinstance(r_pcc, Reading), r_pcc
        assert pcc.address in sent
        assert isinstance(r_load, DeviceError), r_load
        if "backing off" in str(r_load):
            assert load.address not in sent, "a meter backing off must not reach the wire"
            skips += 1
        else:
            assert "no reply within" in str(r_load), r_load
            assert sent.count(load.address) == 1  # one request, no retry
            probes += 1
            assert load._backoff_s == min(dlt_bus.BACKOFF_MIN_S * 2 ** (probes - 1), dlt_bus.BACKOFF_MAX_S)
        if probes >= 2 and skips >= probes:
            break
        await asyncio.sleep(0.1)
    assert probes >= 2 and skips >= probes, (probes, skips)
    await site.start_device("load")
    advance(site, 60)
    reading, errors = await until_recovered(load, within_s=dlt_bus.BACKOFF_MAX_S + 5)
    assert all("backing off" in e for e in errors), errors  # no further timeout
    assert reading.values["power_kw"] == pytest.approx(20.0)


async def test_stopped_bus_goes_silent_but_the_cable_stays_plugged_in(rig) -> None:
    site, drivers = rig
    pcc = drivers["pcc"]
    await pcc.poll()
    await site.stop_device("pcc")
    await site.stop_device("load")  # the last meter: the HIL closes its end of the cable
    assert not site._gateway(site.devices["pcc"]).serving
    with pytest.raises(DeviceError, match="no reply within"):
        await pcc.poll()
    assert Path(pcc.bus.opener.port).is_symlink()
    await site.start_device("pcc")
    await asyncio.sleep(dlt_bus.BACKOFF_MIN_S)
    assert "power_kw" in (await pcc.poll()).values

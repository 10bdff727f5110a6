"""SunSpec role drivers over real loopback sockets: several units behind one endpoint (a
gateway), a unit that stops answering, and writes verified by read-back.

A small Modbus TCP proxy between the driver and the HIL stands in for the field: it can
swallow every request to one unit id (a slave that never answers: no reply at all, not even a
gateway exception) and rewrite the values of a write (a device that silently stores
something else), and it counts what passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest
from conftest import free_port

from drivers.base import DeviceError
from drivers.sunspec_tcp import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    Endpoint,
    SunSpecBattery,
    SunSpecMeter,
    SunSpecPv,
)
from edge.clock import Clock
from edge.config import Config, parse
from hil.site import SimSite

NOON = "2026-06-22T12:00:00+08:00"
BUDGET_S = 0.8  # what edge/cycle.py gives each poll at 1 Hz


def shared_config(port: int) -> Config:
    devices = [
        {"id": "pv1", "role": "pv", "rated_kw": 30, "revert_s": 60, "unit_id": 1},
        {"id": "bess1", "role": "battery", "capacity_kwh": 40, "max_charge_kw": 20,
         "max_discharge_kw": 20, "revert_s": 60, "sim": {"initial_soc_pct": 50}, "unit_id": 2},
        {"id": "pcc", "role": "meter", "measures": "grid", "unit_id": 3},
    ]
    for d in devices:
        d.update(host="127.0.0.1", port=port)
    return parse({
        "site": {"id": "t", "timezone": "Asia/Shanghai"},
        "devices": devices,
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}],
                   "export_price": 0.4},
    })


class Proxy:
    """Modbus TCP man-in-the-middle: forwards whole MBAP frames both ways."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.silent: set[int] = set()  # unit ids whose requests are swallowed
        self.rewrite: Callable[[int, list[int]], list[int]] | None = None  # (unit, regs) of FC16
        self.swallowed: dict[int, int] = {}
        self.requests: list[tuple[int, int]] = []  # (unit, function code) forwarded
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        back = asyncio.create_task(self._pipe(up_r, writer))
        self._tasks |= {back, asyncio.current_task()}  # type: ignore[arg-type]
        try:
            while True:
                header = await reader.readexactly(7)
                body = await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                unit, fc = header[6], body[0]
                if unit in self.silent:
                    self.swallowed[unit] = self.swallowed.get(unit, 0) + 1
                    continue
                if fc == 0x10 and self.rewrite is not None:
                    regs = [int.from_bytes(body[6 + 2 * i:8 + 2 * i], "big")
                            for i in range(body[5] // 2)]
                    body = body[:6] + b"".join(r.to_bytes(2, "big") for r in self.rewrite(unit, regs))
                self.requests.append((unit, fc))
                up_w.write(header + body)
                await up_w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            back.cancel()
            writer.close()
            up_w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    s = SimSite(shared_config(free_port()), clock=Clock(datetime.fromisoformat(NOON), 60))
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def proxy(site: SimSite) -> AsyncIterator[Proxy]:
    p = Proxy(site.config.devices[0].port)
    await p.start()
    yield p
    await p.stop()


def drivers_on(port: int, timeout_s: float) -> tuple[Endpoint, dict]:
    ep = Endpoint("127.0.0.1", port, timeout_s)
    return ep, {"pv1": SunSpecPv("pv1", ep, 1), "bess1": SunSpecBattery("bess1", ep, 2),
                "pcc": SunSpecMeter("pcc", ep, 3)}


async def poll_round(devices: dict) -> dict[str, object]:
    """One cycle's poll, the way edge/cycle.py runs it: all at once, each under the budget."""
    async def one(dev):  # type: ignore[no-untyped-def]
        return await asyncio.wait_for(dev.poll(), BUDGET_S)

    results = await asyncio.gather(*(one(d) for d in devices.values()), return_exceptions=True)
    return dict(zip(devices, results, strict=True))


async def until_recovered(dev, within_s: float) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while True:
        try:
            reading = await asyncio.wait_for(dev.poll(), BUDGET_S)
            assert reading.values
            return time.monotonic() - t0
        except (DeviceError, TimeoutError):
            if time.monotonic() - t0 > within_s:
                raise
            await asyncio.sleep(0.1)


async def test_silent_unit_does_not_stall_its_neighbours_behind_one_gateway(site, proxy):
    """Unit 2 gets no reply at all; units 1 and 3 on the same connection keep polling well
    inside their budget every round, the connection is never dropped, the silent unit is
    probed only once per (growing) backoff window, and it recovers once it answers again."""
    ep, devices = drivers_on(proxy.port, timeout_s=0.3)
    for dev in devices.values():
        await dev.connect()
    proxy.silent.add(2)
    errors = []
    for _ in range(8):
        t0 = time.monotonic()
        results = await poll_round(devices)
        elapsed = time.monotonic() - t0
        assert not isinstance(results["pv1"], BaseException), results["pv1"]
        assert not isinstance(results["pcc"], BaseException), results["pcc"]
        assert results["pcc"].values["power_kw"] is not None
        assert isinstance(results["bess1"], DeviceError), results["bess1"]
        errors.append(str(results["bess1"]))
        assert elapsed < BUDGET_S, f"round took {elapsed:.2f} s"
        await asyncio.sleep(0.2)
    assert proxy.connections == 1, "a silent unit must not drop the shared connection"
    assert ep.connected
    assert 2 <= proxy.swallowed[2] <= 4, proxy.swallowed  # 8 rounds in ~3 s: 0.5, 1, 2 s windows
    backing_off = [e for e in errors if re.search(r"unit 2 backing off for \d", e)]
    assert len(backing_off) == 8 - proxy.swallowed[2], errors  # the other rounds failed at once

    proxy.silent.clear()
    took = await until_recovered(devices["bess1"], within_s=BACKOFF_MAX_S + 1)
    assert took <= 4.5  # the window at most doubled once more
    results = await poll_round(devices)
    assert not any(isinstance(r, BaseException) for r in results.values()), results
    assert proxy.connections == 1


async def test_a_poll_cancelled_by_the_cycle_deadline_counts_as_no_reply(site, proxy):
    """timeout_s above the cycle's budget: the cycle, not pymodbus, abandons the request.
    The unit still backs off, and the connection stays up for its neighbours."""
    ep, devices = drivers_on(proxy.port, timeout_s=2.0)
    for dev in devices.values():
        await dev.connect()
    proxy.silent.add(2)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(devices["bess1"].poll(), 0.3)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="unit 2 backing off"):
        await devices["bess1"].poll()
    assert time.monotonic() - t0 < 0.05
    assert ep.connected and proxy.connections == 1
    assert "power_kw" in (await asyncio.wait_for(devices["pcc"].poll(), BUDGET_S)).values
    proxy.silent.clear()
    await until_recovered(devices["bess1"], within_s=BACKOFF_MIN_S + 1)


async def test_gateway_no_response_backs_off_and_recovers(site):
    """The HIL gateway answers a stopped unit with GATEWAY_NO_RESPONSE (11)."""
    ep, devices = drivers_on(site.config.devices[0].port, timeout_s=0.5)
    for dev in devices.values():
        await dev.connect()
    await site.stop_device("pv1")
    for _ in range(4):
        results = await poll_round(devices)
        assert isinstance(results["pv1"], DeviceError)
        assert results["bess1"].values["soc_pct"] > 0
        assert "power_kw" in results["pcc"].values
        await asyncio.sleep(0.1)
    with pytest.raises(DeviceError, match="unit 1 backing off"):
        await devices["pv1"].poll()
    await site.start_device("pv1")
    await until_recovered(devices["pv1"], within_s=BACKOFF_MAX_S + 1)


async def test_write_is_verified_by_one_read_back(site, proxy):
    ep, devices = drivers_on(proxy.port, timeout_s=0.5)
    pv = devices["pv1"]
    await pv.poll()  # reads model 123, so its scale factor is known
    proxy.requests.clear()
    await pv.write_limit(12.0, revert_s=60)
    assert proxy.requests == [(1, 0x10), (1, 0x03)]  # the write, then one read-back
    assert site.state("pv1")["limit_kw"] == pytest.approx(12.0, abs=0.1)


async def test_write_the_device_silently_changes_raises(site, proxy):
    ep, devices = drivers_on(proxy.port, timeout_s=0.5)
    pv, bess = devices["pv1"], devices["bess1"]
    await pv.connect()
    await bess.connect()
    # The device acks the write but stores another revert timer (WMaxLimPct_RvrtTms is the
    # third register of the WMaxLimPct..WMaxLim_Ena block).
    proxy.rewrite = lambda unit, regs: (
        [regs[0], regs[1], regs[2] + 7, *regs[3:]] if unit == 1 else regs)
    with pytest.raises(DeviceError, match=r"unit 1: model 123 write of \['WMaxLimPct'.*\] at \d+ "
                                          r"not taken"):
        await pv.write_limit(12.0, revert_s=60)
    await bess.write_power(-5.0, revert_s=60)  # other units' writes are untouched

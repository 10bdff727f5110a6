"""SunSpec role drivers over real loopback sockets: several units behind one endpoint (a
gateway), a unit that stops answering, and writes verified by the next poll.

A small Modbus TCP proxy between the driver and the HIL stands in for the field: it can
swallow every request to one unit id (a slave that never answers: no reply at all, not even a
gateway exception), rewrite the values of a write (a device that silently stores
something else), hold a request or answer it with an exception, and it counts what passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

import pytest
from conftest import free_port, wait_for

from drivers.base import DeviceError, Reading
from drivers.modbus.endpoint import Endpoint, ModbusExceptionReply
from drivers.modbus.unit import BACKOFF_MAX_S, BACKOFF_MIN_S
from drivers.sunspec.roles import SunSpecBattery, SunSpecMeter, SunSpecPv
from edge.app.clock import Clock
from edge.config import Config, parse
from hil.site import SimSite

NOON = "2026-06-22T12:00:00+08:00"


def shared_config(port: int) -> Config:
    devices = [
        {"id": "pv1", "host": "127.0.0.1", "port": 502, "role": "pv", "rated_kw": 30, "revert_s": 60, "unit_id": 1},
        {"id": "bess1", "host": "127.0.0.1", "port": 502, "role": "battery", "capacity_kwh": 40, "max_charge_kw": 20,
         "max_discharge_kw": 20, "revert_s": 60, "sim": {"initial_soc_pct": 50}, "unit_id": 2},
        {"id": "pcc", "host": "127.0.0.1", "port": 502, "role": "meter", "measures": "grid", "unit_id": 3},
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
        # (unit, function code, address) -> a Modbus exception code to answer instead of
        # forwarding, or None to forward; awaited, so it may hold the request
        self.on_request: Callable[[int, int, int], Awaitable[int | None]] | None = None
        self.swallowed: dict[int, int] = {}
        self.requests: list[tuple[int, int]] = []  # (unit, function code) forwarded
        self.reads: list[tuple[int, int, int]] = []  # (unit, address, count) of FC3 forwarded
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
                if self.on_request is not None:
                    code = await self.on_request(unit, fc, int.from_bytes(body[1:3], "big"))
                    if code is not None:
                        writer.write(header[:4] + (3).to_bytes(2, "big")
                                     + bytes((unit, fc | 0x80, code)))
                        await writer.drain()
                        continue
                if fc == 0x10 and self.rewrite is not None:
                    regs = [int.from_bytes(body[6 + 2 * i:8 + 2 * i], "big")
                            for i in range(body[5] // 2)]
                    body = body[:6] + b"".join(r.to_bytes(2, "big") for r in self.rewrite(unit, regs))
                self.requests.append((unit, fc))
                if fc == 0x03:
                    self.reads.append((unit, int.from_bytes(body[1:3], "big"),
                                       int.from_bytes(body[3:5], "big")))
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
    """One cycle's poll, the way edge/cycle.py runs it: every device at once. Without the
    cycle's deadline: whether a silent unit stalls its neighbours shows in what crosses the
    wire (the proxy's counts), not in how fast this machine is."""
    results = await asyncio.gather(*(d.poll() for d in devices.values()), return_exceptions=True)
    return dict(zip(devices, results, strict=True))


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


def window_s(probes: int) -> float:
    """The backoff window after `probes` requests in a row went unanswered."""
    return min(BACKOFF_MIN_S * 2 ** (probes - 1), BACKOFF_MAX_S)


async def test_silent_unit_does_not_stall_its_neighbours_behind_one_gateway(site, proxy):
    """Unit 2 gets no reply at all. Units 1 and 3 on the same connection are read in every
    round, and the silent unit holds the connection for at most one request (one timeout)
    per backoff window: while it backs off its polls fail before anything goes on the wire,
    and each probe that finds it still silent doubles the window. The connection is never
    dropped, and the unit is back at the first probe after it answers again."""
    ep, devices = drivers_on(proxy.port, timeout_s=0.3)
    for dev in devices.values():
        await dev.connect()
    unit = devices["bess1"].sunspec
    proxy.silent.add(2)
    probes = skips = 0
    for _ in range(40):  # bounds the wait only: the window grows with every probe
        swallowed, forwarded = proxy.swallowed.get(2, 0), len(proxy.requests)
        results = await poll_round(devices)
        assert isinstance(results["pv1"], Reading), results["pv1"]
        assert isinstance(results["pcc"], Reading), results["pcc"]
        assert results["pcc"].values["power_kw"] is not None
        assert {u for u, _ in proxy.requests[forwarded:]} == {1, 3}  # both read, this round
        error = results["bess1"]
        assert isinstance(error, DeviceError), error
        sent = proxy.swallowed.get(2, 0) - swallowed
        if re.search(r"unit 2 backing off for \d", str(error)):
            assert sent == 0, "a unit backing off must not reach the wire"
            skips += 1
        else:
            assert sent == 1, (sent, str(error))  # one request, no retry, then its timeout
            probes += 1
            assert unit._backoff_s == window_s(probes)
        if probes >= 3 and skips >= probes:
            break
        await asyncio.sleep(0.2)
    assert probes >= 3 and skips >= probes, (probes, skips)
    assert proxy.connections == 1, "a silent unit must not drop the shared connection"
    assert ep.connected

    proxy.silent.clear()
    errors = await until_recovered(devices["bess1"], within_s=BACKOFF_MAX_S + 5)
    assert all("unit 2 backing off" in e for e in errors), errors  # no further timeout
    assert proxy.swallowed[2] == probes and unit._backoff_s == 0.0
    results = await poll_round(devices)
    assert not any(isinstance(r, BaseException) for r in results.values()), results
    assert proxy.connections == 1


async def test_a_poll_cancelled_by_the_cycle_deadline_counts_as_no_reply(site, proxy):
    """timeout_s above the cycle's budget: the cycle, not pymodbus, abandons the request
    (cancels the poll while the request is on the wire). The unit still backs off, and the
    connection stays up for its neighbours."""
    ep, devices = drivers_on(proxy.port, timeout_s=5.0)
    for dev in devices.values():
        await dev.connect()
    unit = devices["bess1"].sunspec
    proxy.silent.add(2)
    poll = asyncio.create_task(devices["bess1"].poll())
    await wait_for(lambda: proxy.swallowed.get(2) == 1, 5, "the request to unit 2 on the wire")
    poll.cancel()  # what asyncio.wait_for does when the cycle's deadline passes
    with pytest.raises(asyncio.CancelledError):
        await poll
    assert ep.unanswered(2) and unit._backoff_s == BACKOFF_MIN_S
    with pytest.raises(DeviceError, match="unit 2 backing off"):
        await devices["bess1"].poll()
    assert proxy.swallowed[2] == 1  # refused before the wire, not queued for another timeout
    assert ep.connected and proxy.connections == 1
    assert "power_kw" in (await devices["pcc"].poll()).values
    proxy.silent.clear()
    errors = await until_recovered(devices["bess1"], within_s=BACKOFF_MAX_S + 5)
    assert all("unit 2 backing off" in e for e in errors), errors


async def test_gateway_no_response_backs_off_and_recovers(site, proxy):
    """The HIL gateway answers a stopped unit with GATEWAY_NO_RESPONSE (11): the unit backs
    off as if it were silent, one request per window, and is back at the first probe once
    it runs again."""
    ep, devices = drivers_on(proxy.port, timeout_s=0.5)
    for dev in devices.values():
        await dev.connect()
    unit = devices["pv1"].sunspec
    await site.stop_device("pv1")
    probes = skips = 0
    for _ in range(40):  # bounds the wait only
        forwarded = len(proxy.requests)
        results = await poll_round(devices)
        assert isinstance(results["bess1"], Reading) and results["bess1"].values["soc_pct"] > 0
        assert isinstance(results["pcc"], Reading) and "power_kw" in results["pcc"].values
        error = results["pv1"]
        assert isinstance(error, DeviceError), error
        sent = sum(u == 1 for u, _ in proxy.requests[forwarded:])
        if "unit 1 backing off" in str(error):
            assert sent == 0, "a unit backing off must not reach the wire"
            skips += 1
        else:
            assert isinstance(error, ModbusExceptionReply) and error.code == 11, error
            assert sent == 1
            probes += 1
            assert unit._backoff_s == window_s(probes)
        if probes >= 2 and skips >= probes:
            break
        await asyncio.sleep(0.1)
    assert probes >= 2 and skips >= probes, (probes, skips)
    await site.start_device("pv1")
    errors = await until_recovered(devices["pv1"], within_s=BACKOFF_MAX_S + 5)
    assert all("unit 1 backing off" in e for e in errors), errors
    assert unit._backoff_s == 0.0


async def test_a_write_every_poll_reads_is_verified_by_the_next_poll_not_a_read_back(site, proxy):
    ep, devices = drivers_on(proxy.port, timeout_s=0.5)
    pv = devices["pv1"]
    await pv.poll()  # reads model 123, so its scale factor is known
    proxy.requests.clear()
    await pv.write_limit(12.0, revert_s=60)
    assert proxy.requests == [(1, 0x10)]  # the write alone: model 123 is read every poll
    assert site.state("pv1")["limit_kw"] == pytest.approx(12.0, abs=0.1)
    proxy.requests.clear()
    await pv.poll()
    assert proxy.requests == [(1, 0x03)]
    assert pv.refused_write() is None


async def test_a_write_no_poll_reads_is_verified_by_one_read_back(site, proxy):
    ep, devices = drivers_on(proxy.port, timeout_s=0.5)
    pv = devices["pv1"]
    await pv.poll()
    pv.sunspec.polled = {mid: through for mid, through in pv._fast.items() if mid != 123}
    proxy.requests.clear()
    await pv.write_limit(12.0, revert_s=60)
    assert proxy.requests == [(1, 0x10), (1, 0x03)]  # the write, then one read-back


async def test_write_the_device_silently_changes_is_found_by_the_next_poll(site, proxy):
    ep, devices = drivers_on(proxy.port, timeout_s=0.5)
    pv, bess = devices["pv1"], devices["bess1"]
    await pv.connect()
    await bess.connect()
    # The device acks the write but stores another revert timer (WMaxLimPct_RvrtTms is the
    # third register of the WMaxLimPct..WMaxLim_Ena block).
    proxy.rewrite = lambda unit, regs: (
        [regs[0], regs[1], regs[2] + 7, *regs[3:]] if unit == 1 else regs)
    await pv.write_limit(12.0, revert_s=60)
    await bess.write_power(-5.0, revert_s=60)  # other units' writes are untouched
    await pv.poll()  # the device answered: its poll stands
    await bess.poll()
    assert re.match(r".* unit 1: model 123 write of \['WMaxLimPct'.*\] at \d+: the device did "
                    r"not take the command", pv.refused_write() or "")
    assert bess.refused_write() is None and pv.refused_write() is None

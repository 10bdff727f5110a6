"""SunSpec over Modbus RTU: the controller's drivers against the HIL's RTU server across a
pseudo-terminal "cable", with two units (battery 1, PCC meter 2) on one bus.

The cable: two `os.openpty()` pairs whose master ends the test joins byte for byte (what
`socat pty pty` would do). The HIL opens one slave by name, the controller the other, so
both sides run the real pyserial/termios path. The test sees every byte that crosses, which
lets it check the bus discipline: one request, its reply, a silent gap, the next request.

A pty has no baud rate, so the cable keeps the line's own time (`WireClock`): every byte that
crosses takes its character time at BAUD, and the silence between frames is what the master
waits, measured on that clock, whatever the speed of the machine running the test.
"""

from __future__ import annotations

import asyncio
import copy
import os
import tty
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import wait_for

from drivers.base import DeviceError
from drivers.modbus import serial as modbus_serial
from drivers.modbus.endpoint import ConnectFailed
from drivers.modbus.serial import SerialEndpoint, frame_gap_s
from drivers.modbus.unit import BACKOFF_MAX_S
from edge import config as config_mod
from edge.app.devices import build_devices
from edge.config import Config, SerialParams
from hil.site import SimSite

ROOT = Path(__file__).resolve().parents[2]
BAUD = 9600  # t3.5 = 4.0 ms at 8N1: large enough to see on the wire monitor
TIMEOUT_S = 0.3  # at most half the poll deadline on a shared bus (edge/config.py)


class WireClock:
    """The line's time: bytes crossing take their character time (`carry`); otherwise time
    moves only while the master waits for the line to be quiet (`sleep`, standing in for
    the serial endpoint's `asyncio.sleep`; `monotonic` for its clock)."""

    def __init__(self, char_s: float) -> None:
        self.char_s = char_s
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)

    def carry(self, nbytes: int) -> tuple[float, float]:
        """(first byte starts, last byte ends) of `nbytes` sent back to back from now."""
        start = self.now
        self.now += nbytes * self.char_s
        return start, self.now


class NullModem:
    """Two pty pairs, masters joined: bytes written to one slave come out of the other.
    `wire` records (start, end on `clock`, "req"/"rsp", bytes) for every chunk that crosses."""

    def __init__(self) -> None:
        self._hil_master, self._hil_slave = os.openpty()
        self._ctl_master, self._ctl_slave = os.openpty()
        for fd in (self._hil_slave, self._ctl_slave):
            tty.setraw(fd)  # no echo, no line editing, before anyone opens it by name
        for fd in (self._hil_master, self._ctl_master):
            os.set_blocking(fd, False)
        # The test keeps both slaves open too, so a side that closes its port (the HIL
        # stopping) leaves no hang-up on the masters: the cable just goes quiet.
        self.hil_port = os.ttyname(self._hil_slave)
        self.ctl_port = os.ttyname(self._ctl_slave)
        self.clock = WireClock(10 / BAUD)  # 8N1: 10 bits a character
        self.wire: list[tuple[float, float, str, bytes]] = []
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._ctl_master, self._pump, self._ctl_master, self._hil_master, "req")
        self._loop.add_reader(self._hil_master, self._pump, self._hil_master, self._ctl_master, "rsp")

    def _pump(self, src: int, dst: int, direction: str) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, InterruptedError):
            return
        self.wire.append((*self.clock.carry(len(data)), direction, data))
        try:
            os.write(dst, data)
        except BlockingIOError:
            pass  # nobody draining the far end and its queue is full: bytes are lost, as on a wire

    def close(self) -> None:
        self._loop.remove_reader(self._ctl_master)
        self._loop.remove_reader(self._hil_master)
        for fd in (self._hil_master, self._hil_slave, self._ctl_master, self._ctl_slave):
            os.close(fd)


def _crc16(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _frames(wire: list[tuple[float, float, str, bytes]]) -> list[tuple[float, float, str, bytes]]:
    """Merge consecutive chunks in one direction: (first byte starts, last byte ends, dir,
    bytes)."""
    runs: list[tuple[float, float, str, bytes]] = []
    for start, end, direction, data in wire:
        if runs and runs[-1][2] == direction:
            t0, _, _, prev = runs[-1]
            runs[-1] = (t0, end, direction, prev + data)
        else:
            runs.append((start, end, direction, data))
    return runs


def _request_length(frame: bytes) -> int:
    fc = frame[1]
    if fc == 3:
        return 8  # unit, fc, address, count, crc
    if fc == 16:
        return 9 + frame[6]  # ... count, byte count, data, crc
    raise AssertionError(f"unexpected function code {fc} in request {frame.hex()}")


def rtu_site(port: str) -> Config:
    """The demo tariff and site, with only a battery (unit 1) and the PCC meter (unit 2),
    both SunSpec over RTU on `port`."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs/demo.yaml").read_text()))
    serial = {"port": port, "baudrate": BAUD, "parity": "N", "stopbits": 1, "bytesize": 8}
    devices = {d["id"]: d for d in data["devices"]}
    bess, pcc = devices["bess1"], devices["pcc"]
    for dev, unit in ((bess, 1), (pcc, 2)):
        for key in ("host", "port"):
            dev.pop(key)
        dev.update(protocol="sunspec-rtu", serial=serial, unit_id=unit, timeout_s=TIMEOUT_S)
    bess.update(ramp_kw_per_s=1000, sim={"initial_soc_pct": 50})
    data["devices"] = [bess, pcc]
    return config_mod.parse(data, "rtu test site")


@pytest.fixture
async def modem():
    cable = NullModem()
    yield cable
    cable.close()


@pytest.fixture
async def site(modem):
    # The same site seen from both ends of the cable: the HIL opens its end of the pty pair.
    sim = SimSite(rtu_site(modem.hil_port))
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def devices(modem, site):
    devs = build_devices(rtu_site(modem.ctl_port))
    yield devs
    for d in devs.values():
        await d.close()


async def test_two_units_on_one_bus_share_one_serial_master(devices):
    bess, pcc = devices["bess1"], devices["pcc"]
    assert bess.sunspec.endpoint is pcc.sunspec.endpoint
    assert isinstance(bess.sunspec.endpoint, SerialEndpoint)
    await asyncio.gather(bess.connect(), pcc.connect())  # SunSpec discovery, both units at once
    assert {103, 124} <= set(bess.sunspec.models)
    assert 203 in pcc.sunspec.models
    assert bess.describe()["protocol"] == "sunspec-rtu"
    assert pcc.describe()["serial"] == "pcc"
    b, m = await asyncio.gather(bess.poll(), pcc.poll())
    assert b.values["soc_pct"] == pytest.approx(50, abs=1)
    assert "power_kw" in m.values


async def test_battery_follows_a_setpoint_written_over_rtu(site, devices):
    bess, pcc = devices["bess1"], devices["pcc"]
    await bess.connect()
    await bess.write_power(-30.0, revert_s=60)  # charge 30 kW
    await wait_for(lambda: site.state("bess1")["power_kw"] == pytest.approx(-30.0, abs=0.5),
                   5.0, "HIL battery charging at 30 kW")
    await pcc.connect()
    reading = await bess.poll()
    assert reading.values["power_kw"] == pytest.approx(-30.0, abs=0.5)
    # The PCC meter sees the building load plus the charging battery.
    grid = (await pcc.poll()).values["power_kw"]
    assert grid == pytest.approx(site.last.grid_kw, abs=2.0)


async def test_requests_to_two_units_never_interleave_on_the_wire(modem, devices, monkeypatch):
    bess, pcc = devices["bess1"], devices["pcc"]
    await asyncio.gather(bess.connect(), pcc.connect())
    # The master paces on the line's time: the gaps below are its waits, in wire time.
    monkeypatch.setattr(modbus_serial, "time", modem.clock)
    monkeypatch.setattr(modbus_serial, "asyncio", SimpleNamespace(sleep=modem.clock.sleep))
    modem.wire.clear()
    for _ in range(5):  # many callers at once: polls of both units and a setpoint write
        await asyncio.gather(bess.poll(), pcc.poll(), pcc.poll(), bess.write_power(10.0, 60))
    runs = _frames(modem.wire)
    assert len(runs) >= 40 and runs[0][2] == "req"
    gap = frame_gap_s(SerialParams(port="x", baudrate=BAUD))
    units = set()
    for i in range(0, len(runs), 2):
        t_req, _, d_req, req = runs[i]
        assert d_req == "req"
        assert len(req) == _request_length(req), f"two requests back to back: {req.hex()}"
        assert _crc16(req) == 0
        assert i + 1 < len(runs), f"request {req.hex()} got no reply"
        _, t_rsp_end, d_rsp, rsp = runs[i + 1]
        assert d_rsp == "rsp" and _crc16(rsp) == 0, f"garbled or merged reply {rsp.hex()}"
        assert rsp[0] == req[0], f"unit {rsp[0]} answered a request to unit {req[0]}"
        assert rsp[1] == req[1], f"reply {rsp.hex()} is not an answer to {req.hex()}"
        units.add(req[0])
        if i + 2 < len(runs):
            silence = runs[i + 2][0] - t_rsp_end  # wire time, not this machine's
            assert silence >= gap - 1e-12, f"next request after {silence * 1000:.2f} ms < t3.5"
    assert units == {1, 2}


async def test_silent_bus_fails_each_unit_on_its_one_unanswered_request_then_recovers(
        modem, site, devices):
    """The poll gives up after the one request that got no reply: no retry, nothing else
    queued on the bus behind it; the unit backs off and is read again once the bus is back."""
    bess, pcc = devices["bess1"], devices["pcc"]
    await asyncio.gather(bess.connect(), pcc.connect())
    await site.stop_device("bess1")
    await site.stop_device("pcc")  # last unit on the bus: the HIL closes its serial port
    assert not any(bus.serving for bus in site._buses.values())
    for dev, unit in ((bess, 1), (pcc, 2)):
        modem.wire.clear()
        with pytest.raises(DeviceError, match=rf"unit {unit}: read \d+: .*No response"):
            await asyncio.wait_for(dev.poll(), 10 * TIMEOUT_S)  # bounds the wait only
        assert [(d, data[0]) for _, _, d, data in _frames(modem.wire)] == [("req", unit)]
        assert dev.sunspec.endpoint.unanswered(unit) and dev.sunspec.backing_off
    await site.start_device("bess1")
    await site.start_device("pcc")
    await wait_for(lambda: not (bess.sunspec.backing_off or pcc.sunspec.backing_off), 5,
                   "both units' backoff windows to end")
    assert (await bess.poll()).values["soc_pct"] > 0
    assert "power_kw" in (await pcc.poll()).values


async def test_one_silent_unit_does_not_take_the_bus_down(site, devices):
    bess, pcc = devices["bess1"], devices["pcc"]
    await asyncio.gather(bess.connect(), pcc.connect())
    await site.stop_device("pcc")  # a dead slave: no reply at all, the bus stays up
    for _ in range(3):
        meter, battery = await asyncio.gather(pcc.poll(), bess.poll(), return_exceptions=True)
        assert isinstance(meter, DeviceError)
        assert not isinstance(battery, BaseException), battery
    assert pcc.sunspec.backing_off  # probed again once its window is over
    await site.start_device("pcc")
    await wait_for(lambda: not pcc.sunspec.backing_off, BACKOFF_MAX_S + 5, "the window to end")
    assert "power_kw" in (await pcc.poll()).values


async def test_missing_serial_port_is_a_clear_connect_failure(tmp_path):
    ep = SerialEndpoint(SerialParams(port=str(tmp_path / "ttyUSB9")), timeout_s=TIMEOUT_S)
    with pytest.raises(ConnectFailed, match="cannot open the serial port"):
        await ep.read(1, 40000, 2)
    with pytest.raises(ConnectFailed, match="backoff"):
        await ep.read(1, 40000, 2)
    await ep.close()

"""DL/T 645 meter driver: codec against hand-computed frames, then the driver against the
`dlt645` package's own asyncio TCP server as the peer, and a scripted peer for the faults
that server cannot produce (foreign address, late reply, bad checksum, silence)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable

import pytest
from conftest import free_port, wait_for
from dlt645.aio import AsyncMeterServerService

from drivers.base import DeviceError, Meter
from drivers.dlt645 import bus as dlt_bus
from drivers.dlt645 import frame as dlt
from drivers.dlt645 import meter as dlt_meter
from edge.vpp.schemas.catalogue import undeclared
from edge.vpp.schemas.reports import DeviceReport

ADDRESS = "123456789012"
WIRE_ADDRESS = bytes.fromhex("129078563412")  # A0 (lowest two digits) first
# Checksums by hand: 68+12+90+78+56+34+12+68 = 0x256; +11+04+33+33+36+35 -> 0x36C -> 6C.
READ_POWER = bytes.fromhex("fefefefe 68129078563412 68 11 04 33333635 6c 16")
# Reply -12.3456 kW: value 56 34 12 with the sign bit on the top byte -> 56 34 92, +33 each.
POWER_REPLY = bytes.fromhex("68129078563412 68 91 07 33333635 8967c5 a4 16")
NO_DATA_REPLY = bytes.fromhex("68129078563412 68 d1 01 35 8d 16")  # error bit1: no such data


# --- codec -------------------------------------------------------------------------------

def test_address_goes_on_the_wire_lowest_digits_first():
    assert dlt.encode_address(ADDRESS) == WIRE_ADDRESS
    with pytest.raises(ValueError, match="12 digits"):
        dlt.encode_address("12345")


def test_read_request_matches_hand_computed_frame():
    assert dlt.read_request(WIRE_ADDRESS, 0x02030000) == READ_POWER


def test_decode_removes_0x33_and_reads_negative_power():
    frame = dlt.decode_frame(POWER_REPLY)
    assert (frame.address, frame.control) == (WIRE_ADDRESS, dlt.READ_REPLY)
    assert frame.data == bytes.fromhex("00000302 563492")
    value = dlt.read_reply_value(frame, 0x02030000)
    assert dlt.decode_value(value, 3, 4, signed=True) == -12.3456


def test_encode_decode_round_trip():
    frame = dlt.decode_frame(dlt.encode_frame(WIRE_ADDRESS, 0x91, b"\x00\xcd\xff")[4:])
    assert frame == dlt.Frame(WIRE_ADDRESS, 0x91, b"\x00\xcd\xff")


def test_bcd_both_ways_and_non_bcd_rejected():
    assert dlt.bcd_encode(1234567, 4) == bytes.fromhex("67452301")
    assert dlt.bcd_decode(bytes.fromhex("67452301")) == 1234567
    with pytest.raises(dlt.FrameError, match="not BCD"):
        dlt.bcd_decode(b"\x1a")
    with pytest.raises(ValueError):
        dlt.bcd_encode(100, 1)


def test_unsigned_value_keeps_digit_8_in_top_byte():
    assert dlt.decode_value(bytes.fromhex("00000080"), 4, 2, signed=False) == 800000.0
    assert dlt.decode_value(bytes.fromhex("000080"), 3, 3, signed=True) == -0.0


def test_bad_checksum_rejected():
    broken = POWER_REPLY[:-2] + b"\xa5\x16"
    with pytest.raises(dlt.FrameError, match="checksum"):
        dlt.decode_frame(broken)


def test_error_reply_raises_with_di_and_reason():
    with pytest.raises(DeviceError, match="DI 02030000.*no such data"):
        dlt.read_reply_value(dlt.decode_frame(NO_DATA_REPLY), 0x02030000)


def test_reply_for_another_di_is_not_the_answer():
    assert dlt.read_reply_value(dlt.decode_frame(POWER_REPLY), 0x02010100) is None


# --- against the dlt645 package's server -------------------------------------------------

VALUES = {
    "power_kw": -12.3456,
    "voltage_a_v": 230.1, "voltage_b_v": 229.9, "voltage_c_v": 231.0,
    "current_a_a": 10.5, "current_b_a": -2.25, "current_c_a": 0.0,
    "power_factor": -0.985, "power_factor_a": 0.99, "power_factor_b": 0.98,
    "power_factor_c": -0.5, "import_kwh": 12345.67, "export_kwh": 234.5,
}


async def start_peer(port: int) -> AsyncMeterServerService:
    server = AsyncMeterServerService.new_tcp_server("127.0.0.1", port)
    # The package compares the raw address bytes of the request with what it stores, and
    # set_address("1234...") would store them in nameplate order; give it the wire order.
    server.set_address(WIRE_ADDRESS)
    for key, value in VALUES.items():
        di = dlt.POINTS[key][0]
        assert (server.set_00 if di >> 24 == 0 else server.set_02)(di, value), key
    await server.start()
    return server


@pytest.fixture
async def peer():
    port = free_port()
    server = await start_peer(port)
    yield server, port
    await server.stop()


async def test_connect_reads_every_value_one_by_one_where_the_package_server_has_no_blocks(peer):
    server, port = peer
    meter = dlt_meter.Dlt645Meter("pcc", ADDRESS, dlt_bus.Tcp("127.0.0.1", port), timeout_s=1.0)
    assert isinstance(meter, Meter)
    assert meter.describe() == {"protocol": "dlt645", "endpoint": f"tcp://127.0.0.1:{port}",
                                "address": ADDRESS}
    try:
        await meter.connect()  # its server answers "no such data" to 02-01-FF-00 and friends
        reading = await meter.poll()
        assert reading.values == pytest.approx(VALUES)
        assert set(reading.stamps) == set(VALUES) - {"power_kw"}  # slow values, own read time
        assert all(t <= reading.monotonic for t in reading.stamps.values())
        server.set_02(0x02030000, 7.5)  # the site turns to import: + on the grid meter
        assert (await meter.poll()).values["power_kw"] == 7.5
    finally:
        await meter.close()


async def test_stopped_server_raises_then_meter_recovers_after_restart(peer):
    server, port = peer
    meter = dlt_meter.Dlt645Meter("pcc", ADDRESS, dlt_bus.Tcp("127.0.0.1", port), timeout_s=1.0)
    await meter.poll()
    await server.stop()
    with pytest.raises(DeviceError, match="pcc: DI [0-9A-F]{8}: connection lost"):
        await meter.poll()
    with pytest.raises(DeviceError, match="cannot open transport"):
        await meter.poll()
    with pytest.raises(DeviceError, match="reconnect backoff"):  # not re-opened on every poll
        await meter.poll()
    server = await start_peer(port)
    await asyncio.sleep(dlt_bus.BACKOFF_MIN_S)
    try:
        await meter.connect()
        assert (await meter.poll()).values["import_kwh"] == 12345.67
    finally:
        await meter.close()
        await server.stop()


async def test_wrong_address_gets_no_valid_answer(peer):
    # A real meter stays silent; the package's server answers with an error reply.
    _, port = peer
    meter = dlt_meter.Dlt645Meter("pcc", "000000000001", dlt_bus.Tcp("127.0.0.1", port), timeout_s=0.5)
    try:
        with pytest.raises(DeviceError, match="DI [0-9A-F]{8}.*error"):
            await meter.poll()
    finally:
        await meter.close()


async def test_ct_and_pt_ratios_turn_the_secondary_values_into_primary_ones(peer):
    """A meter behind 400/5 A CTs and 10 kV/100 V PTs reports secondary values; the driver
    hands on primary ones: power and energy x 8000, current x 80, voltage x 100."""
    _, port = peer
    meter = dlt_meter.Dlt645Meter("pcc", ADDRESS, dlt_bus.Tcp("127.0.0.1", port), timeout_s=1.0,
                          ct_ratio=80, pt_ratio=100)
    try:
        await meter.connect()
        values = (await meter.poll()).values
    finally:
        await meter.close()
    assert values["power_kw"] == pytest.approx(-12.3456 * 8000)  # -98.8 MW: no 80 kW ceiling
    assert values["import_kwh"] == pytest.approx(12345.67 * 8000)
    assert values["export_kwh"] == pytest.approx(234.5 * 8000)
    assert values["current_a_a"] == pytest.approx(10.5 * 80)
    assert values["current_b_a"] == pytest.approx(-2.25 * 80)
    assert values["voltage_a_v"] == pytest.approx(23010.0)
    assert values["power_factor"] == -0.985 and values["power_factor_c"] == -0.5
    assert meter.describe()["ct_ratio"] == 80 and meter.describe()["pt_ratio"] == 100


def site_with_meter(**meter) -> dict:
    return {
        "site": {"id": "s"},
        "devices": [{"id": "pcc", "role": "meter", "host": "127.0.0.1", "port": 8899, **meter}],
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]},
    }


def test_config_passes_the_ratios_to_the_dlt645_driver():
    from edge.app.devices import build_devices
    from edge.config import parse

    cfg = parse(site_with_meter(protocol="dlt645-tcp", address="000000000001", ct_ratio=400,
                                pt_ratio=1))
    meter = build_devices(cfg)["pcc"]
    assert (meter.ct_ratio, meter.pt_ratio) == (400, 1)
    assert meter.describe()["ct_ratio"] == 400
    assert undeclared(DeviceReport, meter.describe()) == []  # the devices message declares it


def test_check_summary_shows_the_ratios(tmp_path, capsys):
    import yaml

    from edge.cli import main

    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site_with_meter(protocol="dlt645-tcp", address="000000000001",
                                                   ct_ratio=400)))
    assert main(["check", "-c", str(path)]) == 0
    assert "measures grid, CT 400 × PT 1" in capsys.readouterr().out


@pytest.mark.parametrize("fields, message", [
    ({"protocol": "sunspec-tcp", "ct_ratio": 40}, "ct_ratio/pt_ratio apply to DL/T 645 meters"),
    ({"protocol": "modbus-tcp", "map": "meter3p_generic", "pt_ratio": 100},
     "a modbus-tcp meter reports primary values"),
    ({"protocol": "dlt645-tcp", "address": "000000000001", "ct_ratio": 0.2}, "ct_ratio"),
])
def test_ratios_belong_to_dlt645_meters_and_are_at_least_one(fields, message):
    from edge.config import ConfigError, parse

    with pytest.raises(ConfigError) as err:
        parse(site_with_meter(**fields))
    assert message in str(err.value)


# --- a scripted peer for faults the package's server does not produce ---------------------

async def scripted_peer(answer: Callable[[dlt.Frame], bytes]):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(answer(await dlt.read_frame(reader)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    port = free_port()
    return await asyncio.start_server(handle, "127.0.0.1", port), port


def reply(address: bytes, di_bytes: bytes, value: bytes) -> bytes:
    return dlt.encode_frame(address, dlt.READ_REPLY, di_bytes + value)


async def read_power_via(answer: Callable[[dlt.Frame], bytes], timeout_s: float = 0.3) -> float:
    server, port = await scripted_peer(answer)
    meter = dlt_meter.Dlt645Meter("pcc", ADDRESS, dlt_bus.Tcp("127.0.0.1", port), timeout_s=timeout_s)
    try:
        return dlt.decode_value(await meter.read(0x02030000), 3, 4, signed=True)
    finally:
        await meter.close()
        server.close()


async def test_frames_for_other_addresses_and_stale_replies_are_skipped():
    other = dlt.encode_address("000000000002")

    def answer(req: dlt.Frame) -> bytes:
        return (reply(other, req.data, b"\x00\x00\x01")  # another meter on the bus
                + reply(req.address, b"\x00\x01\x01\x02", b"\x01\x23")  # late voltage reply
                + reply(req.address, req.data, bytes.fromhex("000015")))

    assert await read_power_via(answer) == 15.0


async def test_only_frames_for_another_address_time_out():
    other = dlt.encode_address("000000000002")
    with pytest.raises(DeviceError, match="DI 02030000: no reply within 0.3 s"):
        await read_power_via(lambda req: reply(other, req.data, b"\x00\x00\x01"))


async def test_bad_checksum_raises_with_di():
    def answer(req: dlt.Frame) -> bytes:
        good = reply(req.address, req.data, b"\x00\x00\x01")
        return good[:-2] + bytes([good[-2] ^ 0xFF, 0x16])

    with pytest.raises(DeviceError, match="DI 02030000: bad checksum"):
        await read_power_via(answer)


# --- serial: the package's async RTU server on one end of a socat pty pair ----------------

@pytest.fixture
async def pty_pair(tmp_path):
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat not installed (apt-get install socat)")
    a, b = tmp_path / "meter", tmp_path / "edge"
    proc = await asyncio.create_subprocess_exec(
        socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}",
        stderr=asyncio.subprocess.DEVNULL)
    await wait_for(lambda: a.exists() and b.exists(), 5.0, "socat ptys")
    yield str(a), str(b)
    proc.terminate()
    await proc.wait()


async def test_poll_over_serial_pty_against_the_package_rtu_server(pty_pair):
    # 8N1 here: a Linux pty refuses parity (tcsetattr EINVAL); real meters default to 8E1.
    meter_end, edge_end = pty_pair
    server = AsyncMeterServerService.new_rtu_server(meter_end, baud_rate=2400, parity="N")
    server.set_address(WIRE_ADDRESS)
    for key, (di, *_) in dlt.POINTS.items():
        (server.set_00 if di >> 24 == 0 else server.set_02)(di, VALUES[key])
    server.set_02(0x02030000, 3.25)
    assert await server.start()
    meter = dlt_meter.Dlt645Meter("pcc", ADDRESS, dlt_bus.Serial(edge_end, parity="N"), timeout_s=1.0)
    try:
        assert (await meter.poll()).values["power_kw"] == 3.25
        assert meter.describe()["endpoint"] == f"serial://{edge_end}?2400-8N1"
    finally:
        await meter.close()
        await server.stop()


def test_config_builds_a_dlt645_meter_through_the_registry():
    from edge.app.devices import build_devices
    from edge.config import parse

    cfg = parse({
        "site": {"id": "s"},
        "devices": [{"id": "pcc", "role": "meter", "protocol": "dlt645-tcp", "host": "127.0.0.1",
                     "port": 8899, "address": "000000000001"}],
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]},
    })
    meter = build_devices(cfg)["pcc"]
    assert meter.describe()["protocol"].startswith("dlt645")


async def test_cancelled_read_drops_the_link_so_a_late_reply_cannot_pass_as_fresh():
    """A peer that answers only after the caller gave up: the next read must not see it."""
    from drivers.dlt645.bus import Tcp
    from drivers.dlt645.meter import Dlt645Meter

    replies: list[asyncio.StreamWriter] = []

    async def slow_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        replies.append(writer)
        await reader.read(64)  # take the request, never answer in time

    server = await asyncio.start_server(slow_peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    meter = Dlt645Meter("pcc", "000000000001", Tcp("127.0.0.1", port), timeout_s=5.0)
    task = asyncio.create_task(meter.poll())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not meter.bus.connected  # the next poll opens a fresh link
    server.close()
    await server.wait_closed()


async def test_a_slow_value_the_meter_refuses_never_fails_its_poll():
    """Blocks refused -> single reads; export 'no such data' -> dropped; import 'other
    error' -> kept trying, logged; power, what control needs, polls on regardless."""
    def answer(req: dlt.Frame) -> bytes:
        di = int.from_bytes(req.data[:4], "little")
        if di in dlt.BLOCKS or di == 0x00020000:
            return dlt.encode_frame(req.address, dlt.READ_ERROR, bytes([dlt.ERR_NO_DATA]))
        if di == 0x00010000:
            return dlt.encode_frame(req.address, dlt.READ_ERROR, b"\x01")
        size = next(s for di_, s, *_ in dlt.POINTS.values() if di_ == di)
        return reply(req.address, req.data, b"\x00" * (size - 1) + b"\x01")

    server, port = await scripted_peer(answer)
    meter = dlt_meter.Dlt645Meter("pcc", ADDRESS, dlt_bus.Tcp("127.0.0.1", port), timeout_s=0.3)
    try:
        await meter.connect()
        for _ in range(2 * len(dlt.POINTS)):  # every slow turn comes round at least once
            values = (await meter.poll()).values
        assert values["power_kw"] == 1.0 and values["voltage_c_v"] == 10.0  # 00 01 -> 10.0 V
        assert "import_kwh" not in values and "export_kwh" not in values
        assert 0x00020000 not in meter._slow_dis and 0x00010000 in meter._slow_dis
    finally:
        await meter.close()
        server.close()

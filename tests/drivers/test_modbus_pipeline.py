"""Pipelined Modbus TCP (`max_in_flight` > 1) over real loopback sockets: the HIL serves three
SunSpec units behind one port, and a proxy between the endpoint and the HIL sees the wire as
the gateway would - how many requests are sent and not yet answered, at most - and can hold
replies (all of them until several requests are out, then sent back last first; or one
unit's until the test lets them go) or cut the connection.

What it proves: units behind one endpoint have several requests on the wire at once and
replies are matched by transaction id in any order, decoding what one-at-a-time decodes; a
timed-out request or one abandoned by its caller does not poison the next; a lost
connection fails every request in flight and the next request reconnects; the default of
one keeps strictly one request on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from conftest import wait_for
from test_sunspec_driver import Proxy, poll_round, site  # noqa: F401 (fixture)

from drivers.base import DeviceError, Reading
from drivers.modbus.endpoint import Endpoint
from drivers.sunspec.roles import SunSpecBattery, SunSpecMeter, SunSpecPv

UNITS = (1, 2, 3)
BLOCKS = {1: (40000, 69), 2: (40000, 60), 3: (40000, 50)}  # sizes differ: a mismatch shows


class WireProxy(Proxy):
    """Modbus TCP between the endpoint and the HIL, counting per transaction id (the
    SunSpec tests' proxy, whose listener it reuses, counts per unit)."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.outstanding: dict[int, int] = {}  # transaction id -> unit, sent and not answered
        self.max_outstanding = 0
        self.requests: list[tuple[int, int]] = []  # (unit, transaction id) as they came
        self.replies: list[tuple[int, int]] = []  # (unit, transaction id) as sent back
        self.gate = 0  # hold this many replies, then send them back, last request first
        self.held_units: set[int] = set()  # replies held until release()
        self.paced_s = 0.0  # hold each reply this long: a gateway working through a queue
        self._gated: list[bytes] = []
        self._held: list[bytes] = []
        self._writer: asyncio.StreamWriter | None = None

    def reset(self) -> None:
        self.max_outstanding = len(self.outstanding)
        self.requests.clear()
        self.replies.clear()

    def release(self) -> None:
        """Send the held units' replies (late, to requests the endpoint gave up on)."""
        self.held_units.clear()
        held, self._held = self._held, []
        for frame in held:
            self._send(frame)

    def cut(self) -> None:
        """Close the endpoint's connection, as a gateway that restarts would."""
        if self._writer is not None:
            self._writer.close()

    def _send(self, frame: bytes) -> None:
        tid = int.from_bytes(frame[:2], "big")
        self.replies.append((self.outstanding.pop(tid, -1), tid))
        if self._writer is not None:
            self._writer.write(frame)

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes:
        header = await reader.readexactly(7)
        return header + await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writer = writer
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        back = asyncio.create_task(self._back(up_r))
        self._tasks |= {back, asyncio.current_task()}  # type: ignore[arg-type]
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError,
                                 asyncio.CancelledError):
            while True:
                frame = await self._frame(reader)
                tid, unit = int.from_bytes(frame[:2], "big"), frame[6]
                self.outstanding[tid] = unit
                self.max_outstanding = max(self.max_outstanding, len(self.outstanding))
                self.requests.append((unit, tid))
                up_w.write(frame)
                await up_w.drain()
        back.cancel()
        for w in (writer, up_w):
            w.close()
        for pending in (self.outstanding, self._held, self._gated):
            pending.clear()

    async def _back(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError,
                                 asyncio.CancelledError):
            while True:
                frame = await self._frame(reader)
                if self.paced_s:
                    await asyncio.sleep(self.paced_s)
                if frame[6] in self.held_units:
                    self._held.append(frame)
                elif self.gate:
                    self._gated.append(frame)
                    if len(self._gated) == self.gate:
                        self.gate = 0
                        order = {tid: i for i, (_, tid) in enumerate(self.requests)}
                        gated, self._gated = self._gated, []
                        for f in sorted(gated, key=lambda f: -order[int.from_bytes(f[:2], "big")]):
                            self._send(f)
                else:
                    self._send(frame)


@pytest.fixture
async def wire(site) -> AsyncIterator[WireProxy]:  # noqa: F811
    p = WireProxy(site.config.devices[0].port)
    await p.start()
    yield p
    await p.stop()


async def read_blocks(ep: Endpoint, units=UNITS) -> list:
    return await asyncio.gather(*(ep.read(u, *BLOCKS[u]) for u in units), return_exceptions=True)


async def reference(wire: WireProxy) -> dict[int, list[int]]:
    """The common-model blocks read one at a time (they do not change while the HIL runs)."""
    ep = Endpoint("127.0.0.1", wire.port, 2.0)
    try:
        return {u: await ep.read(u, *BLOCKS[u]) for u in UNITS}
    finally:
        await ep.close()


async def test_units_behind_one_gateway_are_on_the_wire_at_once_and_replies_match_in_any_order(
        wire):
    expected = await reference(wire)
    ep = Endpoint("127.0.0.1", wire.port, 2.0, max_in_flight=3)
    wire.reset()
    wire.gate = 3  # no reply until all three requests are out; then back last first
    results = await read_blocks(ep)
    assert dict(zip(UNITS, results, strict=True)) == expected
    assert wire.max_outstanding == 3
    assert [u for u, _ in wire.replies] == [u for u, _ in reversed(wire.requests)]
    assert wire.connections == 2  # the reference's, then the pipelined endpoint's one
    await ep.close()


def drivers(port: int, max_in_flight: int) -> dict:
    ep = Endpoint("127.0.0.1", port, 2.0, max_in_flight=max_in_flight)
    return {"pv1": SunSpecPv("pv1", ep, 1), "bess1": SunSpecBattery("bess1", ep, 2),
            "pcc": SunSpecMeter("pcc", ep, 3)}


async def polled(port: int, max_in_flight: int, wire: WireProxy, gate: int
                 ) -> tuple[dict, dict]:
    """A poll round of the three units (after discovery): the readings and what each
    device decoded of itself (describe() without the endpoint)."""
    devices = drivers(port, max_in_flight)
    await asyncio.gather(*(d.connect() for d in devices.values()))
    wire.reset()
    wire.gate = gate
    readings = await poll_round(devices)
    described = {name: {**d.describe(), "endpoint": None} for name, d in devices.items()}
    for d in devices.values():
        await d.close()
    return readings, described


async def test_sunspec_units_behind_one_gateway_poll_together_and_decode_as_one_at_a_time(
        wire):
    one, one_described = await polled(wire.port, 1, wire, gate=0)
    assert wire.max_outstanding == 1
    three, three_described = await polled(wire.port, 3, wire, gate=3)
    assert wire.max_outstanding == 3  # each unit's poll read went out before any answer
    assert one_described == three_described
    for name, a in one.items():
        b = three[name]
        assert isinstance(a, Reading) and isinstance(b, Reading), (name, a, b)
        assert a.values.keys() == b.values.keys()
        assert [k for k, v in a.values.items() if v is None] == \
            [k for k, v in b.values.items() if v is None]


async def test_the_default_keeps_strictly_one_request_on_the_wire(wire):
    devices = drivers(wire.port, 1)
    await asyncio.gather(*(d.connect() for d in devices.values()))
    for _ in range(3):
        results = await poll_round(devices)
        assert all(isinstance(r, Reading) for r in results.values()), results
    assert {u for u, _ in wire.requests} == set(UNITS)
    assert wire.max_outstanding == 1
    for d in devices.values():
        await d.close()


async def test_a_timed_out_request_does_not_poison_the_next_ones(wire):
    expected = await reference(wire)
    ep = Endpoint("127.0.0.1", wire.port, 1.0, max_in_flight=3)
    wire.held_units.add(2)
    r1, r2, r3 = await read_blocks(ep)
    assert (r1, r3) == (expected[1], expected[3])
    assert isinstance(r2, DeviceError) and "no reply" in str(r2), r2
    assert ep.unanswered(2) and not ep.unanswered(1)
    wire.release()  # unit 2's reply arrives after its request timed out: discarded by its id
    assert await ep.read(2, 40000, 10) == expected[2][:10]
    assert await ep.read(1, *BLOCKS[1]) == expected[1]
    assert not ep.unanswered(2)
    assert wire.connections == 2  # the connection stayed up through the timeout
    await ep.close()


async def test_requests_queued_behind_answered_ones_wait_past_one_timeout(wire):
    """A gateway answers four pipelined requests one by one, each reply 0.4 s after the one
    before: the last comes 1.6 s after it was sent, past the 1 s timeout, but the device was
    answering all along - none of them is taken for silence."""
    expected = await reference(wire)
    ep = Endpoint("127.0.0.1", wire.port, 1.0, max_in_flight=4)
    wire.paced_s = 0.4
    results = await asyncio.gather(*(ep.read(u, *BLOCKS[u]) for u in (1, 2, 3, 1)))
    assert results == [expected[1], expected[2], expected[3], expected[1]]
    assert wire.max_outstanding == 4
    assert not any(ep.unanswered(u) for u in UNITS)
    await ep.close()


async def test_a_request_abandoned_by_its_caller_keeps_its_place_on_the_wire(wire):
    expected = await reference(wire)
    ep = Endpoint("127.0.0.1", wire.port, 5.0, max_in_flight=2)
    wire.reset()
    wire.held_units.add(2)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ep.read(2, *BLOCKS[2]), 0.2)  # the cycle's deadline
    assert ep.unanswered(2)
    both = asyncio.gather(ep.read(1, *BLOCKS[1]), ep.read(3, *BLOCKS[3]))
    await wait_for(lambda: len(wire.requests) >= 2, 10, "a request beside the abandoned one")
    wire.release()  # the abandoned request's reply frees its place for the third
    assert await both == [expected[1], expected[3]]
    assert wire.max_outstanding == 2
    await ep.close()


async def test_a_request_cancelled_before_its_turn_on_the_wire_is_not_unanswered(wire):
    expected = await reference(wire)
    ep = Endpoint("127.0.0.1", wire.port, 5.0, max_in_flight=2)
    wire.reset()
    wire.held_units.update({2, 3})
    for unit in (2, 3, 1):  # units 2 and 3 take both places; unit 1 waits, and is cut off
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ep.read(unit, *BLOCKS[unit]), 0.2)
    assert [u for u, _ in wire.requests] == [2, 3]
    assert ep.unanswered(2) and ep.unanswered(3)
    assert not ep.unanswered(1)  # its request never left: no reply is missing
    wire.release()
    assert await ep.read(1, *BLOCKS[1]) == expected[1]
    await ep.close()


async def test_a_lost_connection_fails_every_request_in_flight_and_the_next_reconnects(wire):
    expected = await reference(wire)
    ep = Endpoint("127.0.0.1", wire.port, 5.0, max_in_flight=3)
    wire.held_units.update(UNITS)
    pending = asyncio.ensure_future(read_blocks(ep))
    await wait_for(lambda: len(wire.outstanding) == 3, 10, "three requests in flight")
    wire.cut()
    results = await pending
    for unit, r in zip(UNITS, results, strict=True):
        assert isinstance(r, DeviceError) and "connection closed" in str(r), r
        assert not ep.unanswered(unit)  # the connection failed, not the unit
    assert not ep.connected
    wire.held_units.clear()
    assert dict(zip(UNITS, await read_blocks(ep), strict=True)) == expected
    assert wire.connections == 3
    await ep.close()


async def test_the_hil_answers_requests_that_arrive_together(site):  # noqa: F811
    """Three requests in one segment (a pipelining client): three replies, each under its own
    transaction id."""
    frames = b"".join(
        tid.to_bytes(2, "big") + b"\0\0\0\x06" + bytes((unit, 3))
        + BLOCKS[unit][0].to_bytes(2, "big") + BLOCKS[unit][1].to_bytes(2, "big")
        for tid, unit in ((7, 1), (8, 2), (9, 3)))
    reader, writer = await asyncio.open_connection("127.0.0.1", site.config.devices[0].port)
    writer.write(frames)
    seen = {}
    for _ in range(3):
        frame = await asyncio.wait_for(WireProxy._frame(reader), 10)  # noqa: SLF001
        seen[int.from_bytes(frame[:2], "big")] = (frame[6], frame[7], frame[8] // 2)
    writer.close()
    assert seen == {7: (1, 3, 69), 8: (2, 3, 60), 9: (3, 3, 50)}

"""The DL/T 645 transport: one master per RS-485 port or serial-to-Ethernet gateway.

The transport is any asyncio (StreamReader, StreamWriter) pair from an `Opener`: `Tcp`
for a serial-to-Ethernet gateway, `Serial` for an RS-485 adapter (pyserial-asyncio,
imported only when used, so TCP-only sites do not need it). Every meter on one port or
gateway shares one `Dlt645Bus`: one connection, one request on the wire at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from drivers.base import DeviceError
from drivers.dlt645.frame import ErrorReply, FrameError, read_frame, read_reply_value, read_request

log = logging.getLogger(__name__)

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 10.0


@dataclass(frozen=True)
class Tcp:
    """Opener for a meter behind a serial-to-Ethernet gateway (transparent mode)."""

    host: str
    port: int

    def __call__(self) -> Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        return asyncio.open_connection(self.host, self.port)

    def __str__(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True)
class Serial:
    """Opener for an RS-485 adapter; DL/T 645-2007 meters default to 2400 bit/s 8E1."""

    port: str
    baudrate: int = 2400
    parity: str = "E"
    bytesize: int = 8
    stopbits: int = 1

    def __call__(self) -> Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        import serial_asyncio  # optional: only RS-485 sites need pyserial-asyncio

        return serial_asyncio.open_serial_connection(
            url=self.port, baudrate=self.baudrate, parity=self.parity, bytesize=self.bytesize,
            stopbits=self.stopbits)

    def __str__(self) -> str:
        return f"serial://{self.port}?{self.baudrate}-{self.bytesize}{self.parity}{self.stopbits}"


class NoReply(DeviceError):
    """The addressed meter did not answer in time (or the request was abandoned on the wire)."""


class Dlt645Bus:
    """One DL/T 645 master on one port or gateway, shared by every meter on it: one
    connection, one lock, so a request is answered or timed out before the next one, to any
    meter, goes out. After a timeout or a broken frame the connection is dropped (re-opening
    a serial port flushes its input; a TCP gateway gets a fresh socket), so a late reply can
    never pass as the answer to a later request; it is re-opened on the next request, with
    backoff (0.5 s doubling to 10 s) while it cannot be opened.

    The bus also hands out the slow-read turn (`slow_turn` / `pass_turn`): one meter at a
    time reads a slow value, so a poll round costs one fast read per meter plus one slow read,
    which is what fits a 1 s cycle at 2400 bit/s."""

    def __init__(self, opener: Opener, timeout_s: float) -> None:
        self.opener = opener
        self.timeout_s = timeout_s
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._retry_at = 0.0
        self._backoff_s = 0.0
        self._meters: list[object] = []  # slow-read turn order
        self._turn = 0
        self._waited: set[int] = set()  # meters that polled since the turn holder last did
        self.unanswered: set[bytes] = set()  # meter addresses whose last request got no reply

    @property
    def name(self) -> str:
        return str(self.opener)

    @property
    def connected(self) -> bool:
        return self._streams is not None

    @property
    def shared(self) -> bool:
        """More than one meter on the bus: a silent one would make the others wait."""
        return len(self._meters) > 1

    # -- slow-read turn ---------------------------------------------------------------------
    def attach(self, meter: object) -> None:
        if meter not in self._meters:
            self._meters.append(meter)

    def slow_turn(self, meter: object) -> bool:
        """May `meter` read a slow value in this poll? The turn holder may; a meter that polls
        twice while the holder does not poll at all (never polled, removed) takes the turn."""
        if meter not in self._meters:
            return True
        holder = self._meters[self._turn % len(self._meters)]
        if holder is meter:
            return True
        if id(meter) in self._waited:
            self._turn = self._meters.index(meter)
            self._waited.clear()
            return True
        self._waited.add(id(meter))
        return False

    def pass_turn(self, meter: object) -> None:
        if meter in self._meters and self._meters[self._turn % len(self._meters)] is meter:
            self._turn = (self._turn + 1) % len(self._meters)
            self._waited.clear()

    # -- connection -------------------------------------------------------------------------
    async def _ensure(self, who: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is not None:
            return self._streams
        left = self._retry_at - time.monotonic()
        if left > 0:
            raise DeviceError(f"{who}: {self.name}: reconnect backoff ({left:.1f} s left)")
        try:
            self._streams = await asyncio.wait_for(self.opener(), self.timeout_s)
        except (OSError, TimeoutError, ImportError) as exc:
            self._backoff_s = min(max(self._backoff_s * 2, BACKOFF_MIN_S), BACKOFF_MAX_S)
            self._retry_at = time.monotonic() + self._backoff_s
            raise DeviceError(f"{who}: cannot open transport {self.name}: "
                              f"{exc or 'timed out'}") from exc
        self._backoff_s = 0.0
        return self._streams

    def _drop(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            try:
                await streams[1].wait_closed()
            except OSError:
                pass

    async def read(self, address: bytes, di: int, who: str) -> bytes:
        """Value bytes of one data identifier of the meter at `address` (0x33 offset removed,
        still BCD). `who` names the meter in errors."""
        async with self._lock:
            reader, writer = await self._ensure(who)
            self.unanswered.add(address)  # until its reply arrives
            try:
                async with asyncio.timeout(self.timeout_s):
                    writer.write(read_request(address, di))
                    await writer.drain()
                    while True:
                        frame = await read_frame(reader)
                        if frame.address != address:
                            log.debug("%s: ignoring frame for %s", who, frame.address.hex())
                            continue
                        value = read_reply_value(frame, di)
                        if value is not None:
                            self.unanswered.discard(address)
                            return value
            except ErrorReply as exc:
                self.unanswered.discard(address)
                raise ErrorReply(f"{who}: {exc}", exc.code) from exc  # the link is fine
            except TimeoutError:
                self._drop()
                raise NoReply(f"{who}: DI {di:08X}: no reply within {self.timeout_s} s") from None
            except FrameError as exc:
                self.unanswered.discard(address)  # something answered, garbled
                reason = str(exc)
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.unanswered.discard(address)  # the link failed, not the meter
                reason = f"connection lost: {exc}"
            except asyncio.CancelledError:
                # Cancelled by the cycle's deadline with a request on the wire: its late reply
                # would match the same DI next time and pass as fresh. Drop the link now.
                self._drop()
                raise
            self._drop()
            raise DeviceError(f"{who}: DI {di:08X}: {reason}")

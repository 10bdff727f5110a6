"""DL/T 645-2007 electricity meters (RS-485 or a TCP gateway): power, phase voltages and
currents, import and export energy.

Why our own codec instead of the `dlt645` package's client (v3.2.0, which we still use as
the test peer): its client, sync and async alike, turns every failure (error reply, bad
checksum, timeout, refused connection, foreign address) into `None` plus a loguru line,
so we could not raise `DeviceError` naming the DI and the reason; its stream parser skips
frames with a bad checksum silently; it never checks that a reply carries the DI that was
asked, so a late reply after a timeout is taken as the answer to the next request; and it
puts the meter address on the wire in nameplate order, where the standard sends A0 (the
lowest two digits) first, so it cannot talk to a standard meter unless the caller
pre-reverses the address. The protocol subset we need is a page of pure functions.

The transport is any asyncio (StreamReader, StreamWriter) pair from an `Opener`: `Tcp`
for a serial-to-Ethernet gateway, `Serial` for an RS-485 adapter (pyserial-asyncio,
imported only when used, so TCP-only sites do not need it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from drivers.base import DeviceError, Reading

log = logging.getLogger(__name__)

PREAMBLE = b"\xfe" * 4  # wakes RS-485 transceivers; receivers skip it
START, END = 0x68, 0x16
READ, READ_REPLY, READ_ERROR = 0x11, 0x91, 0xD1
_ERRORS = ("other error", "no such data", "password/authorisation", "baud rate fixed",
           "too many year zones", "too many day periods", "too many tariffs")

# key -> (DI, bytes, decimals, signed). Formats from DL/T 645-2007 appendix A; signed values
# carry their sign in the top bit of the highest byte, the rest is BCD.
POINTS: dict[str, tuple[int, int, int, bool]] = {
    "power_kw": (0x02030000, 3, 4, True),  # + forward (import), - reverse (export)
    "voltage_a_v": (0x02010100, 2, 1, False),
    "voltage_b_v": (0x02010200, 2, 1, False),
    "voltage_c_v": (0x02010300, 2, 1, False),
    "current_a_a": (0x02020100, 3, 3, True),
    "current_b_a": (0x02020200, 3, 3, True),
    "current_c_a": (0x02020300, 3, 3, True),
    "import_kwh": (0x00010000, 4, 2, False),
    "export_kwh": (0x00020000, 4, 2, False),
}


class FrameError(ValueError):
    """Bytes that are not a valid DL/T 645 frame."""


@dataclass(frozen=True, slots=True)
class Frame:
    address: bytes  # 6 bytes as on the wire (A0 first)
    control: int
    data: bytes  # with the 0x33 offset removed


# --- codec: pure functions ---------------------------------------------------------------

def bcd_encode(value: int, size: int) -> bytes:
    """Non-negative int -> `size` BCD bytes, least significant byte first (wire order)."""
    digits = f"{value:0{2 * size}d}"
    if len(digits) > 2 * size:
        raise ValueError(f"{value} does not fit in {size} BCD bytes")
    return bytes.fromhex(digits)[::-1]


def bcd_decode(raw: bytes) -> int:
    """BCD bytes, least significant first -> int; a nibble above 9 raises FrameError."""
    text = raw[::-1].hex()
    if not text.isdigit():
        raise FrameError(f"not BCD: {raw.hex(' ')}")
    return int(text or "0")


def encode_address(address: str) -> bytes:
    """Nameplate address '123456789012' -> wire bytes 12 90 78 56 34 12 (A0 first)."""
    if len(address) != 12 or not address.isdigit():
        raise ValueError(f"DL/T 645 address must be 12 digits, got {address!r}")
    return bcd_encode(int(address), 6)


def checksum(body: bytes) -> int:
    return sum(body) & 0xFF


def encode_frame(address: bytes, control: int, data: bytes) -> bytes:
    body = bytes([START, *address, START, control, len(data), *((b + 0x33) & 0xFF for b in data)])
    return PREAMBLE + body + bytes([checksum(body), END])


def decode_frame(raw: bytes) -> Frame:
    """One complete frame from its first 0x68 to the 0x16 (no preamble)."""
    if len(raw) < 12 or raw[0] != START or raw[7] != START:
        raise FrameError(f"bad frame header: {raw[:10].hex(' ')}")
    n = raw[9]
    if len(raw) != 12 + n or raw[-1] != END:
        raise FrameError(f"bad length or end byte: {raw.hex(' ')}")
    if checksum(raw[:-2]) != raw[-2]:
        raise FrameError(f"bad checksum {raw[-2]:02X}, expected {checksum(raw[:-2]):02X}")
    return Frame(bytes(raw[1:7]), raw[8], bytes((b - 0x33) & 0xFF for b in raw[10:-2]))


def read_request(address: bytes, di: int) -> bytes:
    return encode_frame(address, READ, di.to_bytes(4, "little"))


def error_reason(code: int) -> str:
    reasons = [text for bit, text in enumerate(_ERRORS) if code >> bit & 1]
    return ", ".join(reasons) or f"error code {code:02X}"


def read_reply_value(frame: Frame, di: int) -> bytes | None:
    """The value bytes of a reply to a read of `di`; None if the frame answers something
    else (a late reply to an earlier request, our own echo on a half-duplex bus)."""
    if frame.control == READ_ERROR:
        raise DeviceError(f"DI {di:08X}: meter replied with an error: "
                          f"{error_reason(frame.data[0] if frame.data else 0)}")
    if frame.control != READ_REPLY or frame.data[:4] != di.to_bytes(4, "little"):
        return None
    return frame.data[4:]


def decode_value(raw: bytes, size: int, decimals: int, signed: bool) -> float:
    if len(raw) < size:
        raise FrameError(f"{len(raw)} value bytes, expected {size}")
    raw = raw[:size]
    negative = signed and raw[-1] & 0x80
    if negative:
        raw = raw[:-1] + bytes([raw[-1] & 0x7F])
    value = bcd_decode(raw) / 10**decimals
    return -value if negative else value


# --- transport and driver -----------------------------------------------------------------

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


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

    def __call__(self) -> Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        import serial_asyncio  # optional: only RS-485 sites need pyserial-asyncio

        return serial_asyncio.open_serial_connection(
            url=self.port, baudrate=self.baudrate, parity=self.parity, bytesize=8, stopbits=1)

    def __str__(self) -> str:
        return f"serial://{self.port}?{self.baudrate}-8{self.parity}1"


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Skip preamble and noise up to a 0x68, then read exactly one frame."""
    while (await reader.readexactly(1))[0] != START:
        pass
    head = bytes([START]) + await reader.readexactly(9)
    if head[7] != START:
        raise FrameError(f"bad frame header: {head.hex(' ')}")
    return decode_frame(head + await reader.readexactly(head[9] + 2))


class Dlt645Meter:
    """A meter role driver (drivers.base.Meter). One request at a time per meter; after a
    timeout or a broken frame the connection is dropped, so no stale bytes survive into
    the next request, and re-opened on the next poll."""

    def __init__(self, device_id: str, address: str, opener: Opener, timeout_s: float = 1.0):
        self.id = device_id
        self.address = encode_address(address)
        self.timeout_s = timeout_s
        self._open = opener
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        if self._streams is None:
            try:
                self._streams = await asyncio.wait_for(self._open(), self.timeout_s)
            except (OSError, TimeoutError) as exc:
                raise DeviceError(f"{self.id}: cannot open transport: {exc or 'timed out'}") from exc

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            try:
                await streams[1].wait_closed()
            except OSError:
                pass

    def describe(self) -> dict:
        return {"protocol": "dlt645", "endpoint": str(self._open),
                "address": self.address[::-1].hex()}

    async def read(self, di: int) -> bytes:
        """Value bytes of one data identifier (0x33 offset removed, still BCD)."""
        async with self._lock:
            await self.connect()
            assert self._streams is not None
            reader, writer = self._streams
            try:
                async with asyncio.timeout(self.timeout_s):
                    writer.write(read_request(self.address, di))
                    await writer.drain()
                    while True:
                        frame = await read_frame(reader)
                        if frame.address != self.address:
                            log.debug("%s: ignoring frame for %s", self.id, frame.address.hex())
                            continue
                        value = read_reply_value(frame, di)
                        if value is not None:
                            return value
            except DeviceError as exc:
                raise DeviceError(f"{self.id}: {exc}") from exc  # error reply: link is fine
            except TimeoutError:
                reason = f"no reply within {self.timeout_s} s"
            except FrameError as exc:
                reason = str(exc)
            except (OSError, asyncio.IncompleteReadError) as exc:
                reason = f"connection lost: {exc}"
            except asyncio.CancelledError:
                # Cancelled by the cycle's deadline with a request on the wire: its late reply
                # would match the same DI next poll and pass as fresh. Drop the link now.
                self._streams = None
                writer.close()
                raise
            await self.close()
            raise DeviceError(f"{self.id}: DI {di:08X}: {reason}")

    async def poll(self) -> Reading:
        values: dict[str, float] = {}
        for key, (di, size, decimals, signed) in POINTS.items():
            raw = await self.read(di)
            try:
                values[key] = decode_value(raw, size, decimals, signed)
            except FrameError as exc:
                raise DeviceError(f"{self.id}: DI {di:08X}: {exc}") from exc
        return Reading(self.id, values)

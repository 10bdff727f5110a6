"""DL/T 645-2007 electricity meters: the frame codec and the data identifiers we read
(power, phase voltages, currents and power factors, import and export energy).

Why our own codec instead of the `dlt645` package's client (v3.2.0, which we still use as
the test peer): its client, sync and async alike, turns every failure (error reply, bad
checksum, timeout, refused connection, foreign address) into `None` plus a loguru line,
so we could not raise `DeviceError` naming the DI and the reason; its stream parser skips
frames with a bad checksum silently; it never checks that a reply carries the DI that was
asked, so a late reply after a timeout is taken as the answer to the next request; and it
puts the meter address on the wire in nameplate order, where the standard sends A0 (the
lowest two digits) first, so it cannot talk to a standard meter unless the caller
pre-reverses the address. The protocol subset we need is a page of pure functions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from drivers.base import DeviceError

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
    "power_factor": (0x02060000, 2, 3, True),
    "power_factor_a": (0x02060100, 2, 3, True),
    "power_factor_b": (0x02060200, 2, 3, True),
    "power_factor_c": (0x02060300, 2, 3, True),
    "import_kwh": (0x00010000, 4, 2, False),
    "export_kwh": (0x00020000, 4, 2, False),
}
# Block identifiers (DI1 = FF): one request, the members' values back to back in this order.
BLOCKS: dict[int, tuple[str, ...]] = {
    0x0201FF00: ("voltage_a_v", "voltage_b_v", "voltage_c_v"),
    0x0202FF00: ("current_a_a", "current_b_a", "current_c_a"),
    0x0206FF00: ("power_factor", "power_factor_a", "power_factor_b", "power_factor_c"),
}
FAST: tuple[str, ...] = ("power_kw",)  # read every poll
# Slow requests, one per turn, in rotation: blocks first, energy counters as single DIs.
SLOW: tuple[int, ...] = (0x0201FF00, 0x0202FF00, 0x0206FF00, 0x00010000, 0x00020000)
KEY_OF = {di: key for key, (di, *_) in POINTS.items()}
# Bus time budget (`poll_round_s`): a read request is 4 preamble + 16 bytes; a reply as many
# plus its value bytes; DL/T 645-2007 lets a meter wait 20 ms or more before it answers.
_REQUEST_CHARS, _REPLY_CHARS, _TURNAROUND_S = 20, 20, 0.02
ERR_NO_DATA = 0x02  # error-reply bit 1: the meter does not have this identifier


class FrameError(ValueError):
    """Bytes that are not a valid DL/T 645 frame."""


class ErrorReply(DeviceError):
    """The meter answered, with an error reply (C=0xD1); `code` holds its error bits."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Frame:
    address: bytes  # 6 bytes as on the wire (A0 first)
    control: int
    data: bytes  # with the 0x33 offset removed


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


BROADCAST_ADDRESS = "9" * 12
_OWN_ADDRESS = ("give the meter's own 12-digit address (on its nameplate, or read it once "
                "over a link to that meter alone)")


def address_problem(address: str) -> str | None:
    """Why `address` cannot name one meter to poll, with what to use instead; None if it can.
    The broadcast address gets no reply, and a wildcard (AA digit pairs, abbreviated
    addressing) is answered by every matching meter on the bus at once, each reply carrying
    that meter's own address rather than this one."""
    if address == BROADCAST_ADDRESS:
        return (f"{address} is the DL/T 645 broadcast address: meters act on a broadcast but "
                f"never reply, so every read would time out; {_OWN_ADDRESS}")
    if len(address) == 12 and "a" in address.lower() and all(c in "0123456789Aa" for c in address):
        return (f"{address!r} is a DL/T 645 wildcard address: every meter on the bus that "
                "matches it answers at once, so replies collide and none carries this address; "
                f"{_OWN_ADDRESS}")
    if len(address) != 12 or not address.isdigit():
        return f"{address!r} is not a DL/T 645 meter address: 12 decimal digits, e.g. '000000000001'"
    return None


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
        code = frame.data[0] if frame.data else 0
        raise ErrorReply(f"DI {di:08X}: meter replied with an error: {error_reason(code)}", code)
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


def poll_round_s(meters: int, baudrate: int, bytesize: int = 8, parity: bool = True,
                 stopbits: int = 1) -> float:
    """Bus time of one poll round at least: every meter's power read plus one slow read
    (the largest block), at `baudrate` with 1 start bit per character."""
    char_s = (1 + bytesize + parity + stopbits) / baudrate
    fast = sum(POINTS[k][1] for k in FAST)
    slow = max(sum(POINTS[k][1] for k in keys) for keys in BLOCKS.values())

    def one(value_bytes: int) -> float:
        return (_REQUEST_CHARS + _REPLY_CHARS + value_bytes) * char_s + _TURNAROUND_S

    return meters * one(fast) + one(slow)


def decode_values(di: int, raw: bytes) -> dict[str, float]:
    """The value bytes of a reply to `di` (a single or a block identifier) -> {key: value}."""
    keys = BLOCKS.get(di) or (KEY_OF[di],)
    values: dict[str, float] = {}
    for key in keys:
        _, size, decimals, signed = POINTS[key]
        values[key] = decode_value(raw, size, decimals, signed)
        raw = raw[size:]
    return values


def transformer_factor(key: str, ct_ratio: float, pt_ratio: float) -> float:
    """What a secondary value of `key` is multiplied by to give the primary one: currents by
    the CT ratio, voltages by the PT ratio, powers and energies by both, power factor and
    frequency by nothing."""
    if key.startswith("current"):
        return ct_ratio
    if key.startswith("voltage"):
        return pt_ratio
    if key.startswith("power_factor") or key.startswith("frequency"):
        return 1.0
    if key.startswith("power") or key.endswith("_kwh"):
        return ct_ratio * pt_ratio
    raise KeyError(f"no transformer scaling known for {key!r}")


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Skip preamble and noise up to a 0x68, then read exactly one frame."""
    while (await reader.readexactly(1))[0] != START:
        pass
    head = bytes([START]) + await reader.readexactly(9)
    if head[7] != START:
        raise FrameError(f"bad frame header: {head.hex(' ')}")
    return decode_frame(head + await reader.readexactly(head[9] + 2))

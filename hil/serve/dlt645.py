"""Simulated DL/T 645-2007 meters on one bus: behind a serial-to-Ethernet gateway (one
asyncio TCP server per host:port answers for every meter, by address, configured there,
like a transparent gateway in front of an RS-485 bus) or on a serial port (`Dlt645SerialBus`:
a real adapter, or the HIL's end of a virtual cable, hil/serve/rtu.py).

Frames are built and parsed with the driver's own codec (drivers/dlt645/frame.py), so both sides
share one truth. Behaviour, as a real bus meter:

- read (C=0x11) of a data identifier the meter knows -> normal reply C=0x91, data = DI +
  value bytes (BCD, little-endian, +0x33 on the wire);
- read of a block DI (DI1 = FF: every phase in one reply) -> the members' values back to back,
  unless `block_reads` is off (an older meter): then "no such data", as for any unknown DI;
- read of a DI it does not know -> error reply C=0xD1 with error byte 0x02 ("no such data");
- read address (C=0x13, to AAAAAAAAAAAA) -> C=0x93 with the meter's address;
- any other control code addressed to the meter -> error reply (C | 0xC0, "other error");
- a frame for a foreign address, the broadcast address, a frame with a bad checksum, or any
  request while the meter is offline (fault injection) -> silence; the master times out.
  Address bytes 0xAA are wildcards (abbreviated addressing), as the standard allows.

Value formats (DL/T 645-2007 appendix A) and their limits:
- active power XX.XXXX kW in 3 bytes, sign in the top bit of the highest byte: the highest
  digit can only be 0..7, so the format carries at most ±79.9999 kW. A meter on a larger
  feeder is CT-connected and reports *secondary* values that the master multiplies by the
  CT/PT ratio: a meter configured with `ct_ratio` / `pt_ratio` serves the site's values
  divided by them (hil/devices/dlt645.py `Dlt645SimMeter`), and the driver multiplies them back.
  What still falls outside the format is clamped to ±79.9999 kW, with a warning once per
  excursion: give the meter a CT ratio, or keep the simulated site within the range.
- current XXX.XXX A signed (±799.999 A, clamped the same way), voltage XXX.X V (≤ 999.9 V),
  power factor X.XXX signed, frequency XX.XX Hz;
- energy XXXXXX.XX kWh (4 bytes): rolls over at 1 000 000 kWh, as a meter register does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Protocol

from drivers.dlt645.frame import (
    BLOCKS,
    POINTS,
    READ,
    READ_ERROR,
    READ_REPLY,
    FrameError,
    bcd_encode,
    encode_address,
    encode_frame,
    read_frame,
)
from edge.config import SerialParams
from hil.serve.cable import VirtualCable, needs_cable

log = logging.getLogger(__name__)

READ_ADDRESS, READ_ADDRESS_REPLY = 0x13, 0x93
ERR_OTHER, ERR_NO_DATA = 0x01, 0x02
BROADCAST = b"\x99" * 6
WILDCARD = 0xAA

# DI -> (key of Source.dlt645_values(), bytes, decimals, signed): the driver's points, plus
# the per-phase powers, power factor and frequency a real meter also answers.
FORMATS: dict[int, tuple[str, int, int, bool]] = {
    di: (key, size, decimals, signed) for key, (di, size, decimals, signed) in POINTS.items()
} | {
    0x02030100: ("power_a_kw", 3, 4, True),
    0x02030200: ("power_b_kw", 3, 4, True),
    0x02030300: ("power_c_kw", 3, 4, True),
    0x02800002: ("frequency_hz", 2, 2, False),
}
PROTOCOLS = ("dlt645-tcp", "dlt645-serial")  # behind a TCP gateway, on a serial bus
ROLLS_OVER = {"import_kwh", "export_kwh"}  # counters wrap; measurements clamp


class Source(Protocol):
    """A simulated meter as the server sees it."""

    id: str
    online: bool

    @property
    def address(self) -> str: ...  # 12-digit nameplate address

    def dlt645_values(self) -> dict[str, float]: ...  # by FORMATS key, engineering units


def encode_value(value: float, size: int, decimals: int, signed: bool,
                 wrap: bool = False) -> tuple[bytes, bool]:
    """Engineering value -> `size` value bytes (BCD, least significant first, no 0x33
    offset), the inverse of drivers.dlt645.frame.decode_value. Returns (bytes, clamped): a value
    outside the format is clamped to its limit, or, with `wrap`, taken modulo the format
    (an energy register rolling over)."""
    counts = round(abs(value) * 10**decimals)
    negative = signed and value < 0 and counts > 0
    if not signed and value < 0:
        counts = 0  # unsigned formats carry no sign: a negative value reads as 0
    limit = round(format_limit(size, decimals, signed) * 10**decimals)
    clamped = counts > limit
    if clamped:
        counts = counts % (limit + 1) if wrap else limit
    raw = bytearray(bcd_encode(counts, size))
    if negative:
        raw[-1] |= 0x80
    return bytes(raw), clamped and not wrap


def format_limit(size: int, decimals: int, signed: bool) -> float:
    """Largest magnitude a format carries. Signed: the top bit of the highest byte is the
    sign, so that byte's high digit is 0..7 (XX.XXXX kW -> 79.9999)."""
    return ((8 * 10 ** (2 * size - 1) if signed else 10 ** (2 * size)) - 1) / 10**decimals


def _matches(wire: bytes, target: bytes) -> bool:
    return all(w in (t, WILDCARD) for w, t in zip(wire, target, strict=True))


class MeterBus:
    """The meters on one bus and how they answer; subclasses say where the bus is."""

    where = "?"

    def __init__(self, meters: Iterable[Source] = ()) -> None:
        self.meters: list[Source] = []
        self.reply_delay_s = 0.0  # fault injection: a slow meter or a slow gateway
        self.block_reads = True  # False: an older meter without block identifiers
        self._clients: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self._clamped: set[tuple[str, str]] = set()  # (meter, key) out of format right now
        for m in meters:
            self.add(m)

    def add(self, meter: Source) -> None:
        wire = encode_address(meter.address)
        if any(encode_address(m.address) == wire for m in self.meters):
            raise ValueError(f"meter {meter.id}: address {meter.address} is already served on "
                             f"{self.where}; each meter on a bus needs its own")
        self.meters.append(meter)

    def __str__(self) -> str:
        ids = ", ".join(f"{m.id} ({m.address})" for m in self.meters)
        return f"DL/T 645 {ids} on {self.where}"

    @property
    def serving(self) -> bool:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """The bus goes silent for now (fault injection)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop serving for good (a serial bus also unplugs its virtual cable)."""
        await self.stop()

    async def _end_clients(self) -> None:
        clients, self._clients = self._clients, {}
        for writer in clients.values():
            writer.close()  # the handler sees EOF and returns
        if clients:
            _, pending = await asyncio.wait(clients, timeout=1.0)
            for task in pending:  # stuck in a reply delay, a drain, or a read on a quiet port
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one connection -------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        try:
            while True:
                try:
                    frame = await read_frame(reader)
                except FrameError as exc:
                    log.debug("%s: ignoring a bad frame: %s", self, exc)
                    continue  # a meter stays silent; the master times out and retries
                for reply in self.replies(frame.address, frame.control, frame.data):
                    if self.reply_delay_s:
                        await asyncio.sleep(self.reply_delay_s)
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the master hung up, or stop() closed the connection
        except asyncio.CancelledError:
            pass  # stop() owns this task; end quietly (asyncio's stream callback logs otherwise)
        finally:
            self._clients.pop(task, None)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    def replies(self, address: bytes, control: int, data: bytes) -> list[bytes]:
        """The frames the meters on this bus send back for one request (usually 0 or 1)."""
        if address == BROADCAST:
            return []  # broadcast (time sync, freeze): meters act and never answer
        out = []
        for meter in self.meters:
            own = encode_address(meter.address)
            if meter.online and _matches(address, own):
                out.append(self._answer(meter, own, control, data))
        return out

    def _answer(self, meter: Source, own: bytes, control: int, data: bytes) -> bytes:
        if control == READ_ADDRESS:
            return encode_frame(own, READ_ADDRESS_REPLY, own)
        if control != READ:
            return encode_frame(own, control | 0xC0, bytes([ERR_OTHER]))
        di = int.from_bytes(data[:4], "little") if len(data) >= 4 else -1
        if di in BLOCKS and self.block_reads:
            items = [(k, *POINTS[k][1:]) for k in BLOCKS[di]]
        elif di in FORMATS:
            items = [FORMATS[di]]
        else:
            return encode_frame(own, READ_ERROR, bytes([ERR_NO_DATA]))
        values = meter.dlt645_values()
        if any(values.get(k) is None for k, *_ in items):
            return encode_frame(own, READ_ERROR, bytes([ERR_NO_DATA]))
        out = bytearray(data[:4])
        for key, size, decimals, signed in items:
            raw, clamped = encode_value(values[key], size, decimals, signed,
                                        wrap=key in ROLLS_OVER)
            self._warn_clamp(meter, key, values[key], clamped, format_limit(size, decimals, signed))
            out += raw
        return encode_frame(own, READ_REPLY, bytes(out))

    def _warn_clamp(self, meter: Source, key: str, value: float, clamped: bool,
                    limit: float) -> None:
        tag = (meter.id, key)
        if not clamped:
            self._clamped.discard(tag)
            return
        if tag in self._clamped:
            return
        self._clamped.add(tag)
        log.warning(
            "HIL meter %s: %s = %.4f is outside what DL/T 645 can carry (magnitude <= %g); it reads %s%g "
            "until it is back in range. A real meter this large is CT-connected and reports "
            "secondary values: give it ct_ratio (and pt_ratio) in the config, or size the "
            "simulated site so the meter stays within the format",
            meter.id, key, value, limit, "-" if value < 0 else "", limit)


class Dlt645Server(MeterBus):
    """One listening socket answering for the meters at one host:port (a TCP gateway)."""

    def __init__(self, host: str, port: int, meters: Iterable[Source] = ()) -> None:
        self.host = host
        self.port = port
        self.where = f"{host}:{port}"
        self._server: asyncio.Server | None = None
        super().__init__(meters)

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (listening when this returns); OSError naming the meters if the port is taken."""
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(self._client, self.host, self.port)
        except OSError as exc:
            raise OSError(
                f"HIL cannot listen on {self.host}:{self.port} for {self}: {exc.strerror}; "
                "is the port taken? change `port` in the config"
            ) from None
        log.info("HIL serving %s", self)

    async def stop(self) -> None:
        """Stop listening and drop every connection (the gateway goes away)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await self._end_clients()
        await server.wait_closed()
        log.info("HIL stopped serving %s", self)


class Dlt645SerialBus(MeterBus):
    """The meters on one serial port (a real RS-485 adapter, or the HIL's end of a virtual
    cable): the port is open while serving; stopping closes it and the bus goes silent."""

    def __init__(self, serial: SerialParams, meters: Iterable[Source] = ()) -> None:
        self.serial = serial
        self.where = serial.port
        self.cable: VirtualCable | None = None  # when the configured port is simulated too
        super().__init__(meters)

    @property
    def serving(self) -> bool:
        return bool(self._clients)

    async def start(self) -> None:
        if self._clients:
            return
        import serial_asyncio

        s = self.serial
        if self.cable is None and needs_cable(s.port):
            self.cable = VirtualCable(s.port)
        port = self.cable.hil_port if self.cable is not None else s.port
        try:
            reader, writer = await serial_asyncio.open_serial_connection(
                url=port, baudrate=s.baudrate, parity=s.parity, bytesize=s.bytesize,
                stopbits=s.stopbits)
        except OSError as exc:
            pty = " (a simulated bus on a pseudo-terminal needs parity N)" if s.parity == "E" else ""
            raise OSError(f"HIL cannot open serial port {s.port} for {self}: {exc}; does it "
                          f"exist, and is it free?{pty} change `serial` in the config") from None
        task = asyncio.create_task(self._client(reader, writer), name=f"hil-dlt645-{s.port}")
        self._clients[task] = writer
        log.info("HIL serving %s (%d %d%s%d)", self, s.baudrate, s.bytesize, s.parity, s.stopbits)

    async def stop(self) -> None:
        if self._clients:
            await self._end_clients()
            log.info("HIL stopped serving %s", self)

    async def close(self) -> None:
        """Stop serving and unplug the virtual cable, if any."""
        await self.stop()
        if self.cable is not None:
            self.cable.close()
            self.cable = None


def meter_bus_key(cfg) -> tuple:  # type: ignore[no-untyped-def]
    """Which bus a configured DL/T 645 meter is on: its serial port or its gateway."""
    if cfg.protocol == "dlt645-serial" and cfg.serial is not None:
        return ("serial", cfg.serial.port)
    return (cfg.host, cfg.port)


def meter_bus(cfg) -> MeterBus:  # type: ignore[no-untyped-def]
    """A new (empty) bus of the kind a configured DL/T 645 meter is on."""
    if cfg.protocol == "dlt645-serial" and cfg.serial is not None:
        return Dlt645SerialBus(cfg.serial)
    return Dlt645Server(cfg.host, cfg.port)

"""The Modbus transport every Modbus driver here runs over: one client shared by every unit
behind a TCP host:port or an RS-485 bus, one lock, reconnect backoff, and the errors that tell
a unit that answered with an exception from one that did not answer at all.

Field lessons applied (docs/domain.md §5): many devices accept a single TCP client, so every
unit behind an endpoint shares one client and one lock; after a connection-level failure
the connection is dropped and re-opened with backoff, while a single unit that does not
answer only backs off itself (`drivers.modbus.unit.ModbusUnit`) so its neighbours keep polling.

`ModbusEndpoint` is the transport-neutral part (shared client, lock, backoff, read/write);
`Endpoint` is its TCP form and `drivers.modbus.serial.SerialEndpoint` its RTU form. A TCP
endpoint runs over `drivers.modbus.pipeline`'s transaction layer: `max_in_flight` > 1 lets
that many requests share the connection at once, for gateways that accept several
transactions; the default of one keeps every request waiting for the one before it (and,
after a request abandoned on the wire, for its reply or its timeout). One request costs a
fifth less CPU there than through pymodbus's own client, whose framing and PDUs it reuses.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymodbus.client import ModbusBaseClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from drivers.base import DeviceError, is_urgent
from drivers.modbus.pipeline import NotSent, PipelinedTcpClient

MAX_READ = 120  # registers per request (Modbus allows 125)
MAX_IN_FLIGHT = 16  # transactions on one TCP connection at most (devices allow 1 to ~16)


ILLEGAL_ADDRESS = 2
GATEWAY_NO_REPLY = (10, 11)  # gateway path unavailable / target device failed to respond


class ModbusExceptionReply(DeviceError):
    """The device answered, with a Modbus exception. `code` tells callers such as the scanner
    an unknown register (2) from a gateway whose slave is silent (10, 11)."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class ConnectFailed(DeviceError):
    """The endpoint could not be opened (TCP refused or timed out, serial port missing or
    busy, or still backing off): nothing behind it was reached, as opposed to a unit that
    is reachable but silent."""


class ModbusEndpoint:
    """One Modbus client shared by every unit id behind it (a TCP host:port or an RS-485
    bus), with one lock so requests to different units never overlap (a TCP endpoint with
    `max_in_flight` > 1: a semaphore of that many), and reconnect backoff.

    Subclasses say how to build the client (`_new_client`) and may pace requests
    (`_pace`, e.g. the RTU inter-frame gap); the SunSpec drivers see only read/write."""

    transport = "modbus"  # "tcp" / "rtu": names the protocol variant in describe()
    _drop_on_no_reply = True  # re-open after a unit stays silent (RTU: flushes a late reply)
    _connect_failed_hint = "could not connect"

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._client: ModbusBaseClient | PipelinedTcpClient | None = None
        self._lock: asyncio.Lock | asyncio.Semaphore = asyncio.Lock()
        self._connecting = asyncio.Lock()  # one connect at a time when requests overlap
        self._retry_at = 0.0
        self._backoff = 0.0
        self._unanswered: set[int] = set()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def name(self) -> str:
        raise NotImplementedError

    def _new_client(self) -> ModbusBaseClient | PipelinedTcpClient:
        raise NotImplementedError

    async def _pace(self) -> None:
        """Called (under the lock) before every request."""

    def _done(self) -> None:
        """Called (under the lock) after every request, answered or not."""

    async def _ensure(self) -> ModbusBaseClient | PipelinedTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        async with self._connecting:
            return await self._open()

    async def _open(self) -> ModbusBaseClient | PipelinedTcpClient:
        if self._client is not None and self._client.connected:
            return self._client  # opened by a request that overlapped this one
        now = time.monotonic()
        if now < self._retry_at and not is_urgent():
            raise ConnectFailed(f"{self.name}: reconnect backoff ({self._retry_at - now:.1f} s left)")
        self._drop()
        client = self._new_client()
        try:
            connected = await client.connect()
        except BaseException:  # cancelled by the cycle's deadline: don't leak a half-open client
            client.close()
            self._arm_backoff()
            raise
        if not connected:
            client.close()
            self._arm_backoff()
            raise ConnectFailed(f"{self.name}: {self._connect_failed_hint}")
        self._backoff = 0.0
        self._client = client
        return client

    def _arm_backoff(self) -> None:
        self._backoff = min(max(self._backoff * 2, 0.5), 10.0)
        self._retry_at = time.monotonic() + self._backoff

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def unanswered(self, unit: int) -> bool:
        """True when the last request to `unit` got no reply (timed out, or was abandoned by
        its caller's deadline while in flight); cleared by the unit's next reply."""
        return unit in self._unanswered

    def _failed(self, unit: int, what: str, exc: BaseException, client: object) -> DeviceError:
        """Classify a failed request. A missing reply is the unit's fault: over TCP the
        connection stays up for the other units (replies carry the transaction id, so a
        late reply is discarded); a serial port is re-opened (`_drop_on_no_reply`) to
        flush it. A connection-level error drops the shared client - the one `client` the
        request went out on: overlapping requests may already have opened the next."""
        no_reply = isinstance(exc, (TimeoutError, ModbusIOException))
        if no_reply:
            self._unanswered.add(unit)
        client_lost = self._client is None or not self._client.connected
        if client is self._client and (client_lost or not no_reply or self._drop_on_no_reply):
            self._drop()
        return DeviceError(f"{self.name} unit {unit}: {what}: {exc}")

    def _abandoned(self, unit: int, sent: bool) -> None:
        """The caller's deadline cancelled a request: if it was on the wire, it is unanswered."""
        if sent:
            self._unanswered.add(unit)
            if self._drop_on_no_reply:
                self._drop()  # a reply may still arrive for the abandoned request

    async def read(self, unit: int, address: int, count: int,
                   input_registers: bool = False) -> list[int]:
        """Holding registers (function 3); input registers (4) for register maps that say so."""
        async with self._lock:
            client = await self._ensure()
            fc = client.read_input_registers if input_registers else client.read_holding_registers
            regs: list[int] = []
            sent = False
            try:
                while count > 0:
                    n = min(count, MAX_READ)
                    await self._pace()
                    sent = True
                    try:
                        rr = await fc(address, count=n, device_id=unit)
                    finally:
                        self._done()
                    sent = False
                    self._unanswered.discard(unit)
                    if rr.isError():
                        raise ModbusExceptionReply(f"{self.name} unit {unit}: read {address}+{n}: {rr}",
                                                   getattr(rr, "exception_code", None))
                    regs += rr.registers
                    address += n
                    count -= n
            except (TimeoutError, ModbusException, OSError) as exc:
                raise self._failed(unit, f"read {address}", exc, client) from exc
            except asyncio.CancelledError as exc:
                self._abandoned(unit, sent and not isinstance(exc, NotSent))
                raise
            return regs

    async def _one(self, unit: int, what: str, call) -> Any:
        """One request on the wire under the lock, paced; a refusal raises with `what`."""
        async with self._lock:
            client = await self._ensure()
            sent = False
            try:
                await self._pace()
                sent = True
                try:
                    rr = await call(client)
                finally:
                    self._done()
                self._unanswered.discard(unit)
            except (TimeoutError, ModbusException, OSError) as exc:
                raise self._failed(unit, what, exc, client) from exc
            except asyncio.CancelledError as exc:
                self._abandoned(unit, sent and not isinstance(exc, NotSent))
                raise
        if rr.isError():
            raise ModbusExceptionReply(f"{self.name} unit {unit}: {what} rejected: {rr}",
                                       getattr(rr, "exception_code", None))
        return rr

    async def write(self, unit: int, address: int, values: list[int]) -> None:
        await self._one(unit, f"write {address}",
                        lambda c: c.write_registers(address, values, device_id=unit))

    async def read_bits(self, unit: int, address: int, count: int,
                        discrete: bool = False) -> list[bool]:
        """Coils (function 1), or discrete inputs (2): single bits, for breakers and relays."""
        rr = await self._one(unit, f"read bits {address}+{count}", lambda c: (
            c.read_discrete_inputs if discrete else c.read_coils)(address, count=count,
                                                                  device_id=unit))
        return list(rr.bits[:count])

    async def write_coils(self, unit: int, address: int, values: list[bool]) -> None:
        """Coils (function 5 for one, 15 for several)."""
        await self._one(unit, f"write coil {address}", lambda c: (
            c.write_coil(address, values[0], device_id=unit) if len(values) == 1
            else c.write_coils(address, values, device_id=unit)))

    async def close(self) -> None:
        async with self._lock:
            self._drop()


class Endpoint(ModbusEndpoint):
    """One Modbus TCP connection shared by every unit id behind host:port, with up to
    `max_in_flight` requests on it at once (1, the default: one after another)."""

    transport = "tcp"
    _drop_on_no_reply = False  # replies carry the transaction id: a late one is discarded
    _connect_failed_hint = "connection refused or timed out"

    def __init__(self, host: str, port: int, timeout_s: float, max_in_flight: int = 1) -> None:
        super().__init__(timeout_s)
        if not 1 <= max_in_flight <= MAX_IN_FLIGHT:
            raise ValueError(f"{host}:{port}: max_in_flight {max_in_flight} is outside "
                             f"1..{MAX_IN_FLIGHT}")
        self.host, self.port = host, port
        self.max_in_flight = max_in_flight
        if max_in_flight > 1:
            self._lock = asyncio.Semaphore(max_in_flight)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def _new_client(self) -> PipelinedTcpClient:
        return PipelinedTcpClient(self.host, self.port, self.timeout_s, self.max_in_flight)

"""SunSpec over Modbus TCP: one shared connection per endpoint, discovery of the model
chain, and the role drivers (PV inverter, battery, meter) built on it.

Field lessons applied (DOMAIN.md §5): many devices accept a single TCP client, so every
unit behind an endpoint shares one client and one lock; after a connection-level failure
the connection is dropped and re-opened with backoff, while a single unit that does not
answer only backs off itself (`SunSpecUnit`) so its neighbours keep polling; writes are
verified by read-back; a device that comes back is rediscovered, because a restart may have
moved its models.

`ModbusEndpoint` is the transport-neutral part (shared client, lock, backoff, read/write);
`Endpoint` is its TCP form and `drivers.modbus_serial.SerialEndpoint` its RTU form, and the
role drivers here run over either.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pymodbus.client import AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from drivers import sunspec
from drivers.base import DeviceError, Reading

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_READ = 120  # registers per request (Modbus allows 125)


ILLEGAL_ADDRESS = 2


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
    bus), with one lock so requests to different units never overlap, and reconnect backoff.

    Subclasses say how to build the client (`_new_client`) and may pace requests
    (`_pace`, e.g. the RTU inter-frame gap); the SunSpec drivers see only read/write."""

    transport = "modbus"  # "tcp" / "rtu": names the protocol variant in describe()
    _drop_on_no_reply = True  # re-open after a unit stays silent (RTU: flushes a late reply)
    _connect_failed_hint = "could not connect"

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._client: ModbusBaseClient | None = None
        self._lock = asyncio.Lock()
        self._retry_at = 0.0
        self._backoff = 0.0
        self._unanswered: set[int] = set()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def name(self) -> str:
        raise NotImplementedError

    def _new_client(self) -> ModbusBaseClient:
        raise NotImplementedError

    async def _pace(self) -> None:
        """Called (under the lock) before every request."""

    def _done(self) -> None:
        """Called (under the lock) after every request, answered or not."""

    async def _ensure(self) -> ModbusBaseClient:
        if self._client is not None and self._client.connected:
            return self._client
        now = time.monotonic()
        if now < self._retry_at:
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

    def _failed(self, unit: int, what: str, exc: BaseException) -> DeviceError:
        """Classify a failed request. A missing reply is the unit's fault: over TCP the
        connection stays up for the other units (pymodbus matches replies by transaction id,
        so a late reply is discarded); a serial port is re-opened (`_drop_on_no_reply`) to
        flush it. A connection-level error drops the shared client."""
        no_reply = isinstance(exc, (TimeoutError, ModbusIOException))
        if no_reply:
            self._unanswered.add(unit)
        client_lost = self._client is None or not self._client.connected
        if client_lost or not no_reply or self._drop_on_no_reply:
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
                    n = min(count, _MAX_READ)
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
                raise self._failed(unit, f"read {address}", exc) from exc
            except asyncio.CancelledError:
                self._abandoned(unit, sent)
                raise
            return regs

    async def write(self, unit: int, address: int, values: list[int]) -> None:
        async with self._lock:
            client = await self._ensure()
            sent = False
            try:
                await self._pace()
                sent = True
                try:
                    rr = await client.write_registers(address, values, device_id=unit)
                finally:
                    self._done()
                self._unanswered.discard(unit)
            except (TimeoutError, ModbusException, OSError) as exc:
                raise self._failed(unit, f"write {address}", exc) from exc
            except asyncio.CancelledError:
                self._abandoned(unit, sent)
                raise
            if rr.isError():
                raise ModbusExceptionReply(f"{self.name} unit {unit}: write {address} rejected: {rr}",
                                           getattr(rr, "exception_code", None))

    async def close(self) -> None:
        async with self._lock:
            self._drop()


class Endpoint(ModbusEndpoint):
    """One Modbus TCP connection shared by every unit id behind host:port."""

    transport = "tcp"
    _drop_on_no_reply = False  # replies carry the transaction id: a late one is discarded
    _connect_failed_hint = "connection refused or timed out"

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        super().__init__(timeout_s)
        self.host, self.port = host, port

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def _new_client(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
        )


_GATEWAY_NO_REPLY = (10, 11)  # gateway path unavailable / target device failed to respond
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 10.0


class SunSpecUnit:
    """A SunSpec device at one unit id: discovers its chain, reads and writes models.

    A unit that does not answer (timeout, a request abandoned by the caller's deadline while
    on the wire, or a gateway's "no response" exception) backs off: its requests fail at once
    for 0.5 s, doubling up to 10 s, until one succeeds. The endpoint lock is shared, so a
    silent unit probed on every poll would hold it for `timeout_s` each time and starve the
    healthy units behind the same gateway."""

    def __init__(self, endpoint: ModbusEndpoint, unit: int) -> None:
        self.endpoint, self.unit = endpoint, unit
        self.models: dict[int, int] = {}  # model id -> address of its ID register
        self.common: dict[str, object] = {}
        self._sf: dict[tuple[int, str], int] = {}
        self._backoff_s = 0.0
        self._retry_at = 0.0

    @property
    def backing_off(self) -> bool:
        return time.monotonic() < self._retry_at

    def _check_backoff(self) -> None:
        left = self._retry_at - time.monotonic()
        if left > 0:
            raise DeviceError(f"{self.endpoint.name} unit {self.unit} backing off for {left:.1f} s "
                              "after it did not answer")

    def _silent(self) -> None:
        self._backoff_s = min(max(self._backoff_s * 2, BACKOFF_MIN_S), BACKOFF_MAX_S)
        self._retry_at = time.monotonic() + self._backoff_s

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run one endpoint request under this unit's backoff."""
        self._check_backoff()
        try:
            result = await request()
        except ModbusExceptionReply as exc:
            if exc.code in _GATEWAY_NO_REPLY:
                self._silent()
            else:
                self._backoff_s = 0.0  # the unit answered, if only with an exception
            raise
        except (DeviceError, asyncio.CancelledError):
            if self.endpoint.unanswered(self.unit):
                self._silent()
            raise
        self._backoff_s = 0.0
        return result

    async def _read_regs(self, address: int, count: int) -> list[int]:
        return await self._call(lambda: self.endpoint.read(self.unit, address, count))

    async def _write_regs(self, address: int, regs: list[int]) -> None:
        await self._call(lambda: self.endpoint.write(self.unit, address, regs))

    async def discover(self) -> dict[int, int]:
        base = None
        for candidate in sunspec.BASES:
            try:
                marker = await self._read_regs(candidate, 2)
            except DeviceError:
                if not self.endpoint.connected or self.backing_off:
                    raise  # nothing answered: not a "no marker here"
                continue
            if tuple(marker) == sunspec.SUNS:
                base = candidate
                break
        if base is None:
            raise DeviceError(f"{self.endpoint.name} unit {self.unit}: no SunSpec marker at 40000/0/50000")
        models: dict[int, int] = {}
        addr = base + 2
        for _ in range(64):
            mid, length = await self._read_regs(addr, 2)
            if mid == sunspec.END_ID:
                break
            models[mid] = addr
            addr += 2 + length
        else:
            raise DeviceError(f"{self.endpoint.name} unit {self.unit}: model chain does not end")
        self.models = models
        self._sf.clear()
        if 1 in models:
            self.common = await self.read(1)
        return models

    async def read(self, model_id: int) -> dict:
        mdef = sunspec.model(model_id)
        if model_id not in self.models:
            raise DeviceError(f"unit {self.unit}: model {model_id} not present")
        try:
            regs = await self._read_regs(self.models[model_id], mdef.length + 2)
        except ModbusExceptionReply as exc:
            if exc.code == ILLEGAL_ADDRESS:
                # A known model's address no longer exists: the device restarted with a
                # shorter chain. Rediscover rather than stay stale forever.
                self.models = {}
            raise
        if regs[0] != model_id:
            self.models = {}  # the chain moved under us (device restarted): rediscover
            raise DeviceError(f"unit {self.unit}: expected model {model_id}, found {regs[0]}")
        values = sunspec.decode(mdef, regs)
        for p in mdef.points.values():
            if p.type == "sunssf" and values[p.name] is not None:
                self._sf[(model_id, p.name)] = int(values[p.name])
        return values

    async def write(self, model_id: int, values: dict[str, float | int]) -> None:
        """Write the given points of one model in a single contiguous request."""
        if model_id not in self.models:
            raise DeviceError(f"unit {self.unit}: model {model_id} unknown; not (re)discovered yet")
        mdef = sunspec.model(model_id)
        points = sorted((mdef.point(n) for n in values), key=lambda p: p.offset)
        if any(isinstance(p.sf, str) and (model_id, p.sf) not in self._sf for p in points):
            await self.read(model_id)  # never scale a setpoint by a factor we have not read
        regs: list[int] = []
        for i, p in enumerate(points):
            if i and p.offset != points[i - 1].offset + points[i - 1].size:
                raise ValueError(f"points {[q.name for q in points]} are not contiguous")
            if isinstance(p.sf, str):
                if (model_id, p.sf) not in self._sf:
                    raise DeviceError(f"unit {self.unit}: model {model_id} reports no {p.sf}; "
                                      f"cannot scale {p.name}")
                sf = self._sf[(model_id, p.sf)]
            else:
                sf = p.sf or 0
            regs += sunspec.encode_point(p, values[p.name], sf)
        address = self.models[model_id] + points[0].offset
        await self._write_regs(address, regs)
        # Verify by read-back (issue 3): a device may accept a write and store something else
        # (clamp, round, ignore a point it does not implement).
        back = await self._read_regs(address, len(regs))
        if back != regs:
            raise DeviceError(
                f"{self.endpoint.name} unit {self.unit}: model {model_id} write of "
                f"{[p.name for p in points]} at {address} not taken: wrote {regs}, read back {back}")


def _kw(value: object) -> float:
    if value is None:
        raise DeviceError("device reports a required value as not implemented")
    return float(value) / 1000.0


class _SunSpecDevice:
    required: tuple[int, ...] = ()

    def __init__(self, device_id: str, endpoint: ModbusEndpoint, unit: int) -> None:
        self.id = device_id
        self.sunspec = SunSpecUnit(endpoint, unit)

    async def connect(self) -> None:
        models = await self.sunspec.discover()
        missing = [m for m in self.required if m not in models]
        if missing:
            raise DeviceError(f"{self.id}: SunSpec models {missing} missing (found {sorted(models)})")
        log.info("%s: SunSpec models %s (%s %s)", self.id, sorted(models),
                 self.sunspec.common.get("Mn"), self.sunspec.common.get("Md"))

    async def poll(self) -> Reading:
        if not self.sunspec.models:
            await self.connect()
        return Reading(self.id, await self._values())

    async def _values(self) -> dict[str, float]:
        raise NotImplementedError

    async def close(self) -> None:
        await self.sunspec.endpoint.close()

    def describe(self) -> dict:
        common = self.sunspec.common
        return {
            "protocol": f"sunspec-{self.sunspec.endpoint.transport}",
            "endpoint": f"{self.sunspec.endpoint.name}/{self.sunspec.unit}",
            "manufacturer": common.get("Mn"),
            "model": common.get("Md"),
            "serial": common.get("SN"),
            "models": sorted(self.sunspec.models),
        }


class SunSpecMeter(_SunSpecDevice):
    """Any SunSpec AC meter: 201 single phase, 202 split phase, 203 wye, 204 delta (the
    integer models; they share W and the TotWhImp/TotWhExp counters)."""

    METER_MODELS = (203, 204, 201, 202)
    _model: int = 203

    async def connect(self) -> None:
        await super().connect()
        found = [m for m in self.METER_MODELS if m in self.sunspec.models]
        if not found:
            raise DeviceError(f"{self.id}: no SunSpec meter model 201-204 "
                              f"(found {sorted(self.sunspec.models)})")
        self._model = found[0]

    async def _values(self) -> dict[str, float]:
        m = await self.sunspec.read(self._model)
        return {
            "power_kw": _kw(m["W"]),
            "import_kwh": _kw(m["TotWhImp"]),
            "export_kwh": _kw(m["TotWhExp"]),
        }


class SunSpecPv(_SunSpecDevice):
    required = (103, 120, 123)
    _rated: float = 0.0

    async def connect(self) -> None:
        await super().connect()
        self._rated = _kw((await self.sunspec.read(120))["WRtg"])

    async def _values(self) -> dict[str, float]:
        inv = await self.sunspec.read(103)
        ctl = await self.sunspec.read(123)
        rated = self._rated
        limited = ctl["WMaxLim_Ena"] == 1 and ctl["WMaxLimPct"] is not None
        return {
            "power_kw": max(0.0, _kw(inv["W"])),
            "energy_kwh": _kw(inv["WH"]),
            "rated_kw": rated,
            "limit_kw": rated * ctl["WMaxLimPct"] / 100.0 if limited else rated,
        }

    async def write_limit(self, kw: float, revert_s: int) -> None:
        if self._rated <= 0:
            raise DeviceError(f"{self.id}: rated power unknown; not connected yet")
        pct = min(100.0, max(0.0, 100.0 * kw / self._rated))
        await self.sunspec.write(123, {
            "WMaxLimPct": pct,
            "WMaxLimPct_WinTms": 0,
            "WMaxLimPct_RvrtTms": revert_s,
            "WMaxLimPct_RmpTms": 0,
            "WMaxLim_Ena": 1,
        })



class SunSpecBattery(_SunSpecDevice):
    """Storage through model 124 (rates in % of WChaMax, revert timer) with 802 for SoC."""

    required = (103, 124)
    _wchamax_kw: float = 0.0

    async def connect(self) -> None:
        await super().connect()
        self._wchamax_kw = _kw((await self.sunspec.read(124))["WChaMax"])

    async def _values(self) -> dict[str, float]:
        inv = await self.sunspec.read(103)
        stor = await self.sunspec.read(124)
        soc = stor["ChaState"]
        if 802 in self.sunspec.models:
            bat = await self.sunspec.read(802)
            soc = bat["SoC"] if bat["SoC"] is not None else soc
        if soc is None or not math.isfinite(soc):
            raise DeviceError(f"{self.id}: no state of charge reported")
        self._wchamax_kw = _kw(stor["WChaMax"])
        return {"power_kw": _kw(inv["W"]), "soc_pct": float(soc), "max_charge_kw": self._wchamax_kw}

    async def write_power(self, kw: float, revert_s: int) -> None:
        """Both 124 limits stay active (StorCtl_Mod=3): the rates then pin the power, and
        0 kW means "hold at zero" rather than mode 0, which releases the PCS to its own logic.
        Rates are % of the device's own WChaMax, so the device nameplate also caps the kW."""
        if self._wchamax_kw <= 0:
            self._wchamax_kw = _kw((await self.sunspec.read(124))["WChaMax"])
        if self._wchamax_kw <= 0:
            raise DeviceError(f"{self.id}: WChaMax is 0; cannot express a power setpoint")
        pct = min(100.0, 100.0 * abs(kw) / self._wchamax_kw)
        await self.sunspec.write(124, {
            "OutWRte": pct if kw > 0 else 0.0,
            "InWRte": pct if kw < 0 else 0.0,
            "InOutWRte_WinTms": 0,
            "InOutWRte_RvrtTms": revert_s,
        })
        await self.sunspec.write(124, {"StorCtl_Mod": 3})

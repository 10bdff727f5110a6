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

The role drivers take what the device offers, decided again at every (re)discovery:
measurement from 701, 101-103 or 111-113; PV limit through 704 or 123; battery power through
704 or 124, SoC from 802, 713 or 124; nameplate from 702 or 120. Where a device has 715
or 802 CtrlHb, its controller heartbeat is advanced on every poll and every control write.
`describe()` says which models serve which purpose.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
        self._sf: dict[int, dict[str, int | None]] = {}  # model id -> scale factors read
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

    async def read(self, model_id: int, through: str | None = None) -> dict:
        """Decoded values of one model. With `through`, only the registers from ID up to that
        point are read (one short request instead of one or two long ones, which counts on
        RS-485) once the scale factors those points need are known; the ID register is always
        read, so a chain that moved under us is still noticed."""
        mdef = sunspec.model(model_id)
        if model_id not in self.models:
            raise DeviceError(f"unit {self.unit}: model {model_id} not present")
        count = mdef.length + 2
        sfs = self._sf.get(model_id, {})
        if through is not None:
            end = mdef.through(through)
            needed = {p.sf for p in mdef.points.values()
                      if isinstance(p.sf, str) and p.offset + p.size <= end}
            if all(s in sfs or mdef.through(s) <= end for s in needed):
                count = end
        try:
            regs = await self._read_regs(self.models[model_id], count)
        except ModbusExceptionReply as exc:
            if exc.code == ILLEGAL_ADDRESS:
                # A known model's address no longer exists: the device restarted with a
                # shorter chain. Rediscover rather than stay stale forever.
                self.models = {}
            raise
        if regs[0] != model_id:
            self.models = {}  # the chain moved under us (device restarted): rediscover
            raise DeviceError(f"unit {self.unit}: expected model {model_id}, found {regs[0]}")
        values = sunspec.decode(mdef, regs, sfs)
        for name, value in values.items():
            if mdef.points[name].type == "sunssf":  # None: known to be "not implemented"
                self._sf.setdefault(model_id, {})[name] = None if value is None else int(value)
        return values

    async def write(self, model_id: int, values: dict[str, float | int],
                    verify: bool = True) -> None:
        """Write the given points of one model, each contiguous run of them in one request
        (in register order), each verified by read-back unless `verify` is False: then the
        caller checks the value in a read it makes anyway (a heartbeat)."""
        if model_id not in self.models:
            raise DeviceError(f"unit {self.unit}: model {model_id} unknown; not (re)discovered yet")
        mdef = sunspec.model(model_id)
        points = sorted((mdef.point(n) for n in values), key=lambda p: p.offset)
        sfs = self._sf.get(model_id, {})
        if any(isinstance(p.sf, str) and sfs.get(p.sf) is None for p in points):
            await self.read(model_id)  # never scale a setpoint by a factor we have not read
            sfs = self._sf.get(model_id, {})
        runs: list[list[sunspec.Point]] = []
        for p in points:
            if runs and p.offset == runs[-1][-1].offset + runs[-1][-1].size:
                runs[-1].append(p)
            else:
                runs.append([p])
        for run in runs:
            regs: list[int] = []
            for p in run:
                if isinstance(p.sf, str) and sfs.get(p.sf) is None:
                    raise DeviceError(f"unit {self.unit}: model {model_id} reports no {p.sf}; "
                                      f"cannot scale {p.name}")
                sf = int(sfs[p.sf] or 0) if isinstance(p.sf, str) else p.sf or 0
                regs += sunspec.encode_point(p, values[p.name], sf)
            address = self.models[model_id] + run[0].offset
            await self._write_regs(address, regs)
            if not verify:
                continue
            # Verify by read-back (issue 3): a device may accept a write and store something
            # else (clamp, round, ignore a point it does not implement).
            back = await self._read_regs(address, len(regs))
            if back != regs:
                raise DeviceError(
                    f"{self.endpoint.name} unit {self.unit}: model {model_id} write of "
                    f"{[p.name for p in run]} at {address} not taken: wrote {regs}, "
                    f"read back {back}")


def _kw(value: object) -> float:
    if value is None:
        raise DeviceError("device reports a required value as not implemented")
    return float(value) / 1000.0


def _first(models: dict[int, int], candidates: tuple[int, ...]) -> int | None:
    return next((m for m in candidates if m in models), None)


def _first_value(*values: object) -> float | None:
    return next((float(v) for v in values if v is not None), None)


# Polls between two reads of the slow models (identity, nameplates, settings, the static part
# of a model whose live part is read as a prefix): at 1 s cycles, once a minute.
SLOW_EVERY = 60

# Measurement models, preferred first: the DER model (IEEE 1547-2018 generation, pairs with
# 704), then integer and float inverter models, three-, split-, single-phase.
MEASURE_MODELS = (701, 103, 113, 102, 112, 101, 111)
_MEASURE_TEXT = "a measurement model (701, 101-103 or 111-113)"


@dataclass(slots=True)
class _Beat:
    """A controller heartbeat the device watches (715 ControllerHb, 802 CtrlHb): incremented
    on every poll and every control write, so the device knows its controller is alive.
    Written without a read-back request: the next poll reads its model anyway."""

    model: int
    point: str
    modulus: int  # the all-ones value means "not implemented": the counter wraps before it
    value: int = 0  # last written (at connect: as read)
    verified: bool = False  # read back as written at least once since connect

    @property
    def name(self) -> str:
        return f"{self.model}.{self.point}"


def _implemented(held: dict | None, values: dict[str, float | int],
                 optional: tuple[str, ...]) -> dict[str, float | int]:
    """`values` without the `optional` points the device reported as not implemented in
    `held` (its last read of the model): writing one would be refused, or mean nothing."""
    if held is None:
        return values
    return {k: v for k, v in values.items() if k not in optional or held.get(k) is not None}


class _SunSpecDevice:
    """What every SunSpec role driver does: discover, plan which models serve the role
    (`_plan`), poll them by class, and keep the device's controller heartbeats beating.

    Poll classes: `_fast` models (measurements, control state, storage state, heartbeats)
    are read every poll, some only as a prefix up to their last live point; `_slow` models
    (model 1, nameplates 120/702, settings 121, the whole of 802 with its static ratings
    and scale factors) at (re)discovery and then every `slow_every` polls, and carried
    forward in between. Values derived only from slow models (`_slow_keys`) carry their own
    read time in `Reading.stamps`. Energy counters that live in the same model as power
    (103 WH, 701 TotWhInj/TotWhAbs, 203 TotWhImp/TotWhExp) stay in the fast read: one
    request either way."""

    slow_every = SLOW_EVERY

    def __init__(self, device_id: str, endpoint: ModbusEndpoint, unit: int) -> None:
        self.id = device_id
        self.sunspec = SunSpecUnit(endpoint, unit)
        self._fast: dict[int, str | None] = {}  # model id -> read through this point (None: all)
        self._slow: tuple[int, ...] = ()
        self._slow_keys: frozenset[str] = frozenset()
        self._uses: dict[str, int | list[int]] = {}  # for describe(): what serves the role
        self._slow_values: dict[int, dict] = {}
        self._slow_at = 0.0
        self._since_slow = 0
        self._beats: list[_Beat] = []
        self._latest: dict[int, dict] = {}  # model id -> values as of the last poll

    def _plan(self, models: dict[int, int]) -> None:
        """Choose the models that serve the role; DeviceError naming what is missing."""
        raise NotImplementedError

    def _on_slow(self, values: dict[int, dict]) -> None:
        """Slow models were just read (nameplates: ratings the writes scale by)."""

    async def connect(self) -> None:
        models = await self.sunspec.discover()
        try:
            await self._prepare(models)
        except BaseException:
            self.sunspec.models = {}  # half planned: the next poll starts over
            raise
        log.info("%s: SunSpec models %s (%s %s), using %s, heartbeats %s", self.id, sorted(models),
                 self.sunspec.common.get("Mn"), self.sunspec.common.get("Md"), self._uses,
                 [b.name for b in self._beats] or "none")

    async def _prepare(self, models: dict[int, int]) -> None:
        self._latest = {}
        self._plan(models)
        await self._read_slow(skip=(1,))  # discover() has just read model 1
        self._beats = []
        for mid, point in ((715, "ControllerHb"), (802, "CtrlHb")):
            if mid not in models:
                continue
            current = (await self.sunspec.read(mid, through=point)).get(point)
            if current is None:
                continue  # the device does not watch this heartbeat
            size = sunspec.model(mid).point(point).size
            self._beats.append(_Beat(mid, point, (1 << 16 * size) - 1, int(current)))
            self._fast.setdefault(mid, point)  # read every poll: verifies the beat

    async def _read_slow(self, skip: tuple[int, ...] = ()) -> None:
        values = {mid: await self.sunspec.read(mid) for mid in self._slow if mid not in skip}
        serial = self.sunspec.common.get("SN")
        if 1 in values:
            if serial is not None and values[1].get("SN") != serial:
                self.sunspec.models = {}
                raise DeviceError(f"{self.id}: serial number changed from {serial} to "
                                  f"{values[1].get('SN')}: another device answers; rediscovering")
            self.sunspec.common = values[1]
        values[1] = self.sunspec.common
        self._slow_values, self._slow_at, self._since_slow = values, time.monotonic(), 0
        self._on_slow(values)

    async def _beat(self) -> None:
        """Advance every heartbeat. One the device refuses to take (answered with ILLEGAL
        ADDRESS or VALUE while its model was just read where we expect it) is not watched
        by this device: it is dropped, with a warning, rather than failing every poll."""
        for b in list(self._beats):
            value = (b.value + 1) % b.modulus
            try:
                await self.sunspec.write(b.model, {b.point: value}, verify=False)
            except ModbusExceptionReply as exc:
                if exc.code not in (ILLEGAL_ADDRESS, 3):
                    raise
                log.warning("%s: device refuses heartbeat %s (%s); not sending it", self.id,
                            b.name, exc)
                self._beats.remove(b)
                continue
            b.value = value

    def _check_beats(self, latest: dict[int, dict]) -> None:
        """The read-back of the last heartbeat written, from this poll's read of its model."""
        for b in list(self._beats):
            got = latest[b.model].get(b.point)
            if got in (b.value, (b.value + 1) % b.modulus):  # +1: a write cut off by a deadline
                b.value, b.verified = int(got), True  # may still have landed
            elif b.verified:
                self.sunspec.models = {}
                raise DeviceError(f"{self.id}: heartbeat {b.name} went from {b.value} to {got} "
                                  "by itself: device restarted? rediscovering")
            else:
                log.warning("%s: device does not keep heartbeat %s (wrote %d, read back %s); "
                            "not sending it", self.id, b.name, b.value, got)
                self._beats.remove(b)

    async def poll(self) -> Reading:
        """Read (a moved chain shows in the model IDs before anything is written), then beat."""
        if not self.sunspec.models:
            await self.connect()
        elif self._since_slow >= self.slow_every:
            await self._read_slow()
        latest = dict(self._slow_values)
        for mid, through in self._fast.items():
            latest[mid] = {**self._slow_values.get(mid, {}), **await self.sunspec.read(mid, through)}
        self._check_beats(latest)
        self._latest = latest
        self._since_slow += 1
        values = await self._values(latest)
        reading = Reading(self.id, values,
                          stamps={k: self._slow_at for k in self._slow_keys if k in values})
        await self._beat()
        return reading

    async def _values(self, m: dict[int, dict]) -> dict[str, float]:
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
            "uses": dict(self._uses),
            "heartbeats": [b.name for b in self._beats],
            "poll": {"fast": sorted(self._fast), "slow": sorted(self._slow),
                     "slow_every": self.slow_every},
        }


class SunSpecMeter(_SunSpecDevice):
    """Any SunSpec AC meter: 201 single phase, 202 split phase, 203 wye, 204 delta (the
    integer models; they share W and the TotWhImp/TotWhExp counters)."""

    METER_MODELS = (203, 204, 201, 202)
    _model: int = 203

    def _plan(self, models: dict[int, int]) -> None:
        found = _first(models, self.METER_MODELS)
        if found is None:
            raise DeviceError(f"{self.id}: no SunSpec meter model 201-204 (found {sorted(models)})")
        self._model = found
        self._fast = {found: None}
        self._slow = (1,)
        self._uses = {"measurement": found}

    async def _values(self, m: dict[int, dict]) -> dict[str, float]:
        v = m[self._model]
        return {
            "power_kw": _kw(v["W"]),
            "import_kwh": _kw(v["TotWhImp"]),
            "export_kwh": _kw(v["TotWhExp"]),
        }


class SunSpecPv(_SunSpecDevice):
    """PV inverter. Measurement from 701, 101-103 or 111-113; nameplate from 702 (WMaxRtg)
    or 120 (WRtg); output limit through 704 or 123, the 7xx models first where a device has
    both (their reversion is explicit).

    704: WMaxLimPctEna, WMaxLimPct (% of 702 WMax), and on expiry of WMaxLimPctRvrtTms the
    device takes WMaxLimPctRvrt / WMaxLimPctEnaRvrt: the configured safe level
    (`revert_pct`), so a controller that dies leaves the inverter where the site's safe
    state wants it (on a zero-export site, curtailed), not at full output.
    123: WMaxLimPct (% of 121 WMax where implemented, else of WRtg), WMaxLim_Ena dropped by
    the device after WMaxLimPct_RvrtTms (123 has no reversion value: the limit lifts)."""

    def __init__(self, device_id: str, endpoint: ModbusEndpoint, unit: int,
                 revert_pct: float = 100.0) -> None:
        super().__init__(device_id, endpoint, unit)
        self.revert_pct = min(max(revert_pct, 0.0), 100.0)

    _meas: int | None = None
    _ctl: int | None = None
    _rated: float = 0.0  # kW, nameplate
    _base: float = 0.0  # kW that WMaxLimPct is a percentage of

    def _plan(self, models: dict[int, int]) -> None:
        meas, ctl = _first(models, MEASURE_MODELS), _first(models, (704, 123))
        plate = _first(models, (702, 120) if ctl == 704 else (120, 702))
        missing = [what for what, m in ((_MEASURE_TEXT, meas), ("a limit control (704 or 123)", ctl),
                                        ("a nameplate (702 or 120)", plate)) if m is None]
        if missing:
            raise DeviceError(f"{self.id}: SunSpec PV inverter needs {' and '.join(missing)} "
                              f"(found {sorted(models)})")
        assert meas is not None and ctl is not None and plate is not None
        self._meas, self._ctl = meas, ctl
        self._fast = {meas: "TotWhAbs" if meas == 701 else None,
                      ctl: "WMaxLimPctRvrtTms" if ctl == 704 else None}
        settings = (121,) if ctl == 123 and 121 in models and plate == 120 else ()
        self._slow = (1, plate, *settings)
        self._slow_keys = frozenset({"rated_kw"})
        self._uses = {"measurement": meas, "nameplate": plate, "limit": ctl}

    def _on_slow(self, values: dict[int, dict]) -> None:
        if 702 in values:
            self._rated = _kw(values[702]["WMaxRtg"])
            wmax = values[702].get("WMax")
            self._base = self._rated if wmax is None else wmax / 1000
        else:
            self._rated = _kw(values[120]["WRtg"])
            wmax = values.get(121, {}).get("WMax")
            self._base = self._rated if wmax is None else wmax / 1000

    async def _values(self, m: dict[int, dict]) -> dict[str, float]:
        meas, ctl = m[self._meas], m[self._ctl]
        if self._ctl == 704:
            limited = ctl["WMaxLimPctEna"] == 1 and ctl["WMaxLimPct"] is not None
        else:
            limited = ctl["WMaxLim_Ena"] == 1 and ctl["WMaxLimPct"] is not None
        out = {
            "power_kw": max(0.0, _kw(meas["W"])),
            "rated_kw": self._rated,
            "limit_kw": self._base * ctl["WMaxLimPct"] / 100.0 if limited else self._rated,
        }
        energy = meas.get("TotWhInj" if self._meas == 701 else "WH")
        if energy is not None:
            out["energy_kwh"] = energy / 1000.0
        return out

    async def write_limit(self, kw: float, revert_s: int) -> None:
        if self._base <= 0 or self._ctl is None:
            raise DeviceError(f"{self.id}: rated power unknown; not connected yet")
        pct = min(100.0, max(0.0, 100.0 * kw / self._base))
        if self._ctl == 704:
            await self.sunspec.write(704, _implemented(self._latest.get(704), {
                "WMaxLimPctEna": 1, "WMaxLimPct": pct, "WMaxLimPctRvrt": self.revert_pct,
                "WMaxLimPctEnaRvrt": int(self.revert_pct < 100.0), "WMaxLimPctRvrtTms": revert_s,
            }, ("WMaxLimPctRvrt", "WMaxLimPctEnaRvrt", "WMaxLimPctRvrtTms")))
        else:
            await self.sunspec.write(123, {
                "WMaxLimPct": pct,
                "WMaxLimPct_WinTms": 0,
                "WMaxLimPct_RvrtTms": revert_s,
                "WMaxLimPct_RmpTms": 0,
                "WMaxLim_Ena": 1,
            })
        await self._beat()


_SOC_POINTS = {802: "SoC", 713: "SoC", 124: "ChaState"}


class SunSpecBattery(_SunSpecDevice):
    """Storage. Measurement from 701, 103 or 113 (W: + discharge); power through 704 or 124,
    704 first; state of charge from 802 (the BMS), 713 or 124 ChaState, the first one that
    implements it.

    704: WSetEna, WSetMod = WATTS, WSet in W (+ discharge, − charge); on expiry of
    WSetRvrtTms the device takes WSetRvrt = 0 W with WSetEnaRvrt = 1: it holds at zero.
    124: both limits stay active (StorCtl_Mod=3): the rates then pin the power, and 0 kW
    means "hold at zero" rather than mode 0, which releases the PCS to its own logic. Rates
    are % of the device's own WChaMax, so the device nameplate also caps the kW."""

    _meas: int | None = None
    _ctl: int | None = None
    _soc: tuple[int, ...] = ()
    _wchamax_kw: float = 0.0
    _limits_kw: tuple[float | None, float | None] = (None, None)  # 704: max charge, discharge

    def _plan(self, models: dict[int, int]) -> None:
        meas, ctl = _first(models, MEASURE_MODELS), _first(models, (704, 124))
        soc = tuple(m for m in (802, 713, 124) if m in models)
        missing = [what for what, m in ((_MEASURE_TEXT, meas), ("a power control (704 or 124)", ctl),
                                        ("a state of charge (802, 713 or 124)", soc)) if not m]
        if missing:
            raise DeviceError(f"{self.id}: SunSpec battery needs {' and '.join(missing)} "
                              f"(found {sorted(models)})")
        assert meas is not None and ctl is not None
        self._meas, self._ctl, self._soc = meas, ctl, soc
        self._fast = {meas: "TotWhAbs" if meas == 701 else None,
                      ctl: "WSetRvrtTms" if ctl == 704 else None}
        self._fast.setdefault(soc[0], "CtrlHb" if soc[0] == 802 else None)
        self._slow = (1, *(m for m in (702, 802) if m in models))
        self._slow_keys = frozenset({"max_charge_kw"}) if ctl == 704 and 702 in models else frozenset()
        self._uses = {"measurement": meas, "power": ctl, "soc": list(soc)}
        if 702 in models:
            self._uses["nameplate"] = 702

    def _on_slow(self, values: dict[int, dict]) -> None:
        cap, bms = values.get(702, {}), values.get(802, {})
        self._limits_kw = tuple(  # type: ignore[assignment]
            None if (w := _first_value(cap.get(k), cap.get(f"{k}Rtg"), bms.get(k))) is None else w / 1000
            for k in ("WChaRteMax", "WDisChaRteMax"))

    async def _values(self, m: dict[int, dict]) -> dict[str, float]:
        soc = None
        for src in self._soc:
            vals = m.get(src) or await self.sunspec.read(src, "CtrlHb" if src == 802 else None)
            soc = vals.get(_SOC_POINTS[src])
            if soc is not None and math.isfinite(soc):
                break
        if soc is None or not math.isfinite(soc):
            raise DeviceError(f"{self.id}: no state of charge reported (models {list(self._soc)})")
        out = {"power_kw": _kw(m[self._meas]["W"]), "soc_pct": float(soc)}
        if self._ctl == 124:
            self._wchamax_kw = _kw(m[124]["WChaMax"])
            out["max_charge_kw"] = self._wchamax_kw
        elif self._limits_kw[0] is not None:
            out["max_charge_kw"] = self._limits_kw[0]
        return out

    async def write_power(self, kw: float, revert_s: int) -> None:
        if self._ctl == 704:
            await self._write_704(kw, revert_s)
        elif self._ctl == 124:
            await self._write_124(kw, revert_s)
        else:
            raise DeviceError(f"{self.id}: not connected yet")
        await self._beat()

    async def _write_704(self, kw: float, revert_s: int) -> None:
        charge, discharge = self._limits_kw
        if charge is not None:
            kw = max(kw, -charge)
        if discharge is not None:
            kw = min(kw, discharge)
        held = self._latest.get(704)
        revert = _implemented(held, {"WSetEnaRvrt": 1, "WSetRvrtTms": revert_s},
                              ("WSetEnaRvrt", "WSetRvrtTms"))
        if revert and any((held or {}).get(k) != v for k, v in revert.items()):
            # The reversion first, so the new setpoint never runs under an old timer.
            await self.sunspec.write(704, revert)
            self._latest.setdefault(704, {}).update(revert)
        await self.sunspec.write(704, _implemented(held, {
            "WSetEna": 1, "WSetMod": 1, "WSet": kw * 1000.0, "WSetRvrt": 0.0,
        }, ("WSetMod", "WSetRvrt")))

    async def _write_124(self, kw: float, revert_s: int) -> None:
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

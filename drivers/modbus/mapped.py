"""The role drivers of register-map devices (drivers.modbus.regmap): read by poll class in
as few requests as the map allows (drivers.modbus.plan), commands written with their
`enable` and `revert` points and verified by read-back or by the next poll, every request
under the unit's silence backoff (drivers.modbus.unit)."""

from __future__ import annotations

import logging
import math
import time
from typing import ClassVar

from drivers.base import DeviceError, Reading
from drivers.modbus.endpoint import ILLEGAL_ADDRESS, ModbusEndpoint, ModbusExceptionReply
from drivers.modbus.plan import RTU_MAX_GAP, Block, plan_reads, write_groups
from drivers.modbus.regmap import BIT_FUNCTIONS, CONTROL_KEYS, ROLE_KEYS, RegisterMap
from drivers.modbus.unit import ModbusUnit
from drivers.quietlog import Episode

log = logging.getLogger(__name__)


class MapDevice(ModbusUnit):
    """A Modbus device read and written through its register map. Fast points are read every
    poll, slow points on the first poll and every `slow_every` polls; every poll returns the
    latest of both, the slow ones with their own read time (`Reading.stamps`). Reads bridge
    the map's `max_gap` unmapped registers, until the device refuses such a read. Writes
    are verified where the points are readable: by the next poll where it reads them
    (drivers.modbus.pending), else by a read-back. A unit that does not answer backs off
    (drivers.modbus.unit), so it cannot hold the shared endpoint for a timeout on every poll
    while its neighbours wait."""

    role: ClassVar[str | None] = None

    def __init__(self, device_id: str, endpoint: ModbusEndpoint, unit: int, regmap: RegisterMap,
                 protocol: str = "modbus-tcp") -> None:
        super().__init__(endpoint, unit)
        self.id, self.map, self.protocol = device_id, regmap, protocol
        rtu = getattr(endpoint, "transport", "") == "rtu"
        gap = min(regmap.max_gap, RTU_MAX_GAP) if rtu else regmap.max_gap
        self._plan(gap)
        self._polls = 0
        self.alongside: dict[str, float] = {}  # points written with every command (a mode)
        self._slow_values: dict[str, float] = {}
        self._slow_at = 0.0

    def _plan(self, max_gap: int) -> None:
        points, n = self.map.points, self.map.max_read
        self._fast = plan_reads([p for p in points if p.poll == "fast"], n, max_gap)
        self._slow = plan_reads([p for p in points if p.poll == "slow"], n, max_gap)
        self._bridging = max_gap > 0

    @property
    def _who(self) -> str:
        return f"{self.id}: "

    async def _read_block(self, b: Block) -> dict[str, float]:
        mark = self.checks.mark()
        if b.function in BIT_FUNCTIONS:
            bits = await self._read_bits(b.address, b.count, discrete=b.function == "discrete")
            if len(bits) < b.count:
                raise DeviceError(f"{self.id}: read bits {b.address}+{b.count} returned {len(bits)}")
            self.checks.check(b.function, b.address, [int(x) for x in bits[:b.count]], mark)
            return {p.key: 1.0 if bits[p.address - b.address] else 0.0 for p in b.points}
        regs = await self._read_regs(b.address, b.count, input_registers=b.function == "input")
        if len(regs) < b.count:
            raise DeviceError(f"{self.id}: read {b.address}+{b.count} returned {len(regs)} registers")
        self.checks.check(b.function, b.address, regs, mark)
        return {p.key: self.map.decode(p, regs[p.address - b.address:]) for p in b.points}

    async def _read(self, blocks: list[Block]) -> dict[str, float]:
        values: dict[str, float] = {}
        for b in blocks:
            try:
                values.update(await self._read_block(b))
            except ModbusExceptionReply as exc:
                if exc.code != ILLEGAL_ADDRESS or not b.bridged:
                    raise
                self._stop_bridging(b, exc)
                values.update(await self._read(plan_reads(list(b.points), self.map.max_read)))
        return values

    def _stop_bridging(self, b: Block, exc: ModbusExceptionReply) -> None:
        """The device refuses reads across unmapped registers: read its runs apart."""
        if self._bridging:
            log.warning("%s: refuses a read across unmapped registers (%s %d+%d: %s); reading "
                        "only mapped runs from now on (one request more per gap; set max_gap: 0 "
                        "in map %s if its devices all do this)", self.id, b.function, b.address,
                        b.count, exc, self.map.name)
            self._plan(0)

    async def connect(self) -> None:
        """Read every point once: the device answers and the map fits it."""
        self.checks.clear()
        self._slow_values = await self._read(self._slow)
        self._slow_at = time.monotonic()
        await self._read(self._fast)
        self._polls = 1

    async def poll(self) -> Reading:
        if not self._slow_values and self._slow or self._polls % self.map.slow_every == 0:
            self._slow_values = await self._read(self._slow)
            self._slow_at = time.monotonic()
        mark = self.checks.mark()
        fast = await self._read(self._fast)
        await self.verify_left(mark)
        at = time.monotonic()
        self._polls += 1
        values = self._values({**self._slow_values, **fast})
        return Reading(self.id, values, monotonic=at,
                       stamps={k: self._slow_at for k in self._slow_values})

    def _values(self, values: dict[str, float]) -> dict[str, float]:
        """Role values from the decoded points (subclasses add derived keys)."""
        for key in ROLE_KEYS.get(self.role or "", ()):
            if key in CONTROL_KEYS:
                continue
            v = values.get(key)
            if v is None or not math.isfinite(v):
                raise DeviceError(f"{self.id}: {key} is not a number ({v}); map {self.map.name}")
        return values

    async def write(self, values: dict[str, float]) -> None:
        """Write control points (engineering units), contiguous ones in one request, then
        read back the readable ones (a mismatch raises DeviceError), unless every poll reads
        them: then the next poll verifies them (a mismatch: `refused_write`)."""
        items = []
        for key, v in values.items():
            p = self.map.point(key)
            if p is None or not p.writable:
                raise DeviceError(f"{self.id}: map {self.map.name} has no writable point {key!r}")
            try:
                items.append((p, self.map.encode(p, v)))
            except ValueError as exc:
                raise DeviceError(f"{self.id}: cannot write {exc}") from None
        for g in write_groups(items):
            address = g[0][0].address
            regs = [r for _, rr in g for r in rr]
            fn = g[0][0].function
            coils = fn == "coil"
            if coils:
                await self._write_coils(address, [bool(r) for r in regs])
            else:
                await self._write_regs(address, regs)
            if not all(p.readable for p, _ in g):
                continue
            keys = ", ".join(p.key for p, _ in g)
            if self._poll_verifies(any(b.covers(fn, address, len(regs)) for b in self._fast)):
                self.checks.expect(fn, address, regs,
                                   f"{self.id}: {keys} at {address} (map {self.map.name})")
            else:
                back = ([int(b) for b in await self._read_bits(address, len(regs))] if coils
                        else await self._read_regs(address, len(regs)))
                if list(back[: len(regs)]) != regs:
                    raise DeviceError(
                        f"{self.id}: read-back of {keys} at {address} gave {list(back)}, "
                        f"wrote {regs} (map {self.map.name}); the device did not take the command")

    async def command(self, key: str, value: float, revert_s: int,
                      also: dict[str, float] | None = None) -> None:
        """Write one control point (and `also`), with the map's `enable` value and `revert`
        timer alongside where it has them, and `alongside`."""
        cmd = {key: value, **self.alongside, **(also or {})}
        if (en := self.map.point("enable")) is not None:
            cmd["enable"] = float(en.value or 0)
        if self.map.point("revert") is not None:
            cmd["revert"] = float(revert_s)
        await self.write(cmd)

    async def close(self) -> None:
        await self.endpoint.close()

    def describe(self) -> dict:
        return {
            "protocol": self.protocol,
            "endpoint": f"{self.endpoint.name}/{self.unit}",
            "map": self.map.name,
            "vendor": self.map.vendor,
            "description": self.map.description,
        }


class MapMeter(MapDevice):
    """values: power_kw (+import on a grid meter), import_kwh, export_kwh (+ extras)."""

    role = "meter"


class MapBattery(MapDevice):
    """values: power_kw (+discharge/-charge), soc_pct (+ extras). Control: `setpoint` in kW,
    with `revert` and `enable` (and `auto_transfer` 1, when told to) written alongside.

    With a `bms` (a read-only unit of its own behind the same endpoint) its values come along
    as `bms.<key>`, each stamped with its read time. The BMS is monitoring: when it does not
    answer, the battery still polls, and its last BMS values age in `Reading.stamps`."""

    role = "battery"

    def __init__(self, device_id: str, endpoint: ModbusEndpoint, unit: int, regmap: RegisterMap,
                 protocol: str = "modbus-tcp", bms: MapDevice | None = None,
                 auto_transfer: bool = False) -> None:
        super().__init__(device_id, endpoint, unit, regmap, protocol)
        self.bms = bms
        if auto_transfer:  # set again by every command, should the PCS restart without it
            self.alongside["auto_transfer"] = 1.0
        self._bms: Reading | None = None
        who = f"{device_id}: BMS unit {bms.unit}".replace("%", "%%") if bms else ""
        self._bms_down = Episode(
            log, f"{who}: %(reason)s; its last values are carried with their age; check the "
            "BMS unit id and its link to the battery",
            f"{who}: still silent after %(since)s (%(count)d polls); last error: %(reason)s",
            f"{who}: answers again after %(since)s")

    async def connect(self) -> None:
        await super().connect()
        if self.bms is not None:
            await self._poll_bms()

    async def _poll_bms(self) -> None:
        assert self.bms is not None
        try:
            self._bms = await self.bms.poll()
            self._bms_down.ok()
        except DeviceError as exc:
            self._bms_down.failed(str(exc))

    async def poll(self) -> Reading:
        if self.bms is not None:
            await self._poll_bms()
        reading = await super().poll()
        if self._bms is None:
            return reading
        b = self._bms
        values = {**reading.values, **{f"bms.{k}": v for k, v in b.values.items()}}
        stamps = {**reading.stamps, **{f"bms.{k}": b.stamps.get(k, b.monotonic) for k in b.values}}
        return Reading(self.id, values, monotonic=reading.monotonic, stamps=stamps)

    def describe(self) -> dict:
        out = super().describe()
        if self.bms is not None:
            out["bms"] = f"unit {self.bms.unit} ({self.bms.map.name})"
        return out

    async def write_power(self, kw: float, revert_s: int) -> None:
        """A power setpoint; a PCS that can form the grid is told to follow it as well."""
        following = {"grid_mode": 0.0} if self.map.point("grid_mode") is not None else {}
        await self.command("setpoint", kw, revert_s, following)

    async def write_forming(self, revert_s: int) -> None:
        """Form the grid: the PCS becomes the island's voltage source and takes whatever power
        the island's loads and generation leave (its setpoint no longer applies)."""
        if self.map.point("grid_mode") is None:
            raise DeviceError(f"{self.id}: map {self.map.name} has no grid_mode point; this PCS "
                              "cannot be told to form the grid")
        await self.command("grid_mode", 1.0, revert_s)


class MapPv(MapDevice):
    """values: power_kw, rated_kw, limit_kw (rated when no limit is active). Control: `limit`
    in % of rated or kW, as its unit says."""

    role = "pv"
    _rated_kw = 0.0

    def _values(self, values: dict[str, float]) -> dict[str, float]:
        values = super()._values(values)
        rated = self._rated_kw = values["rated_kw"]
        limit_pt = self.map.point("limit")
        en = self.map.point("enable")
        limit = values.get("limit")
        active = limit is not None and (en is None or values.get("enable") == en.value)
        if not active:
            values["limit_kw"] = rated
        elif limit_pt is not None and limit_pt.unit == "%":
            values["limit_kw"] = rated * limit / 100.0
        else:
            values["limit_kw"] = limit
        values["power_kw"] = max(0.0, values["power_kw"])
        return values

    async def write_limit(self, kw: float, revert_s: int) -> None:
        if self._rated_kw <= 0:
            slow = await self._read(self._slow) if self._slow else {}
            fast = await self._read(self._fast)
            self._rated_kw = {**slow, **fast}.get("rated_kw", 0.0)
        if self._rated_kw <= 0:
            raise DeviceError(f"{self.id}: rated power unknown (rated_kw reads 0)")
        kw = min(max(kw, 0.0), self._rated_kw)
        limit_pt = self.map.point("limit")
        assert limit_pt is not None  # validated: role pv needs it
        await self.command("limit", 100.0 * kw / self._rated_kw if limit_pt.unit == "%" else kw,
                           revert_s)


class MapFlexLoad(MapDevice):
    """values: power_kw (>= 0), on (1.0 / 0.0: the contactor's `relay_feedback` where the
    map has it, else the relay command's read-back). Control: `relay` 1 / 0, with `revert`
    and `enable` written alongside when the map has them."""

    role = "load"

    def _values(self, values: dict[str, float]) -> dict[str, float]:
        values = super()._values(values)
        state = values.get("relay_feedback", values.get("relay"))
        if state is None or not math.isfinite(state):
            raise DeviceError(f"{self.id}: on/off state is not a number ({state}); map {self.map.name}")
        values["on"] = 1.0 if state >= 0.5 else 0.0
        values["power_kw"] = max(0.0, values["power_kw"])
        return values

    async def write_on(self, on: bool, revert_s: int) -> None:
        await self.command("relay", 1.0 if on else 0.0, revert_s)


class MapDcConverter(MapDevice):
    """values: bus_v (V), power_kw (+ into the DC bus), v_ref (V) (+ extras). Control:
    `v_ref` in V, with `revert` and `enable` written alongside when the map has them."""

    role = "dcdc"

    async def write_v_ref(self, v: float, revert_s: int) -> None:
        await self.command("v_ref", v, revert_s)


class MapBreaker(MapDevice):
    """values: closed (1.0 / 0.0, the position feedback), grid_v/grid_hz (grid side),
    bus_v/bus_hz (site side), phase_deg (grid minus bus). Control: `switch` 1 close / 0 open.
    A breaker has no revert timer: it stays where it was put."""

    role = "breaker"

    async def write_switch(self, close: bool) -> None:
        await self.write({"switch": 1.0 if close else 0.0})


class MapHvac(MapDevice):
    """values: power_kw (>= 0), rated_kw, zone_temp_c, outdoor_temp_c (+ extras), as read:
    whether a temperature is plausible is the role's call (edge/roles/hvac.py implausible),
    which makes the device STALE, so the controller hands it to its own thermostat, without
    counting a broken sensor as a lost link. Control, whichever the map has: a capacity
    command `limit` in % of rated with `control_mode` 1 (0: the unit's own thermostat),
    SG-Ready's four states in `sg_ready`, or a setpoint offset `offset_k` in K on its own
    thermostat (`write_offset`; 0: its own setpoint)."""

    role = "hvac"
    _rated_kw = 0.0

    def _values(self, values: dict[str, float]) -> dict[str, float]:
        values = super()._values(values)
        self._rated_kw = values["rated_kw"]
        values["power_kw"] = max(0.0, values["power_kw"])
        return values

    @property
    def takes_offset(self) -> bool:
        """Driven by a setpoint offset (K), not a power."""
        return self.map.point("offset_k") is not None

    async def write_offset(self, k: float, revert_s: int) -> None:
        await self.command("offset_k", k, revert_s)

    async def write_hvac(self, kw: float | None, revert_s: int) -> None:
        """`kw` None: back to its own thermostat."""
        if self.map.point("sg_ready") is not None:
            await self.command("sg_ready", sg_ready_state(kw, self._rated_kw), revert_s)
            return
        if kw is None:
            await self.command("control_mode", 0.0, revert_s)
            return
        if self._rated_kw <= 0:
            raise DeviceError(f"{self.id}: rated_kw unknown yet; cannot turn kW into %")
        await self.command("limit", min(max(100.0 * kw / self._rated_kw, 0.0), 100.0),
                           revert_s, also={"control_mode": 1.0})


def sg_ready_state(kw: float | None, rated_kw: float) -> float:
    """SG-Ready: 1 blocked, 2 normal (its own thermostat), 3 recommended on (a lower
    setpoint), 4 forced on. Four states can only approximate a power."""
    if kw is None or rated_kw <= 0:
        return 2.0
    share = kw / rated_kw
    return 1.0 if share < 0.05 else 4.0 if share >= 0.9 else 3.0 if share >= 0.5 else 2.0


class MapThermalStorage(MapDevice):
    """values: power_kw (+ charging, − discharging), tank_temp_c. Control: `setpoint` kW."""

    role = "thermal_storage"

    async def write_power(self, kw: float, revert_s: int) -> None:
        await self.command("setpoint", kw, revert_s)


ROLES: dict[str, type[MapDevice]] = {"meter": MapMeter, "battery": MapBattery, "pv": MapPv,
                                     "load": MapFlexLoad, "dcdc": MapDcConverter,
                                     "breaker": MapBreaker, "hvac": MapHvac,
                                     "thermal_storage": MapThermalStorage}

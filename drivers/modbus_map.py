"""Register maps as data: non-SunSpec Modbus devices (PCS, BMS, meters, PV inverters)
described by YAML files in `drivers/maps/`, validated at load, and the role drivers that poll
and control a device through its map.

A map names each register by the key it feeds (`power_kw`, `soc_pct`, `import_kwh`, ... or a
free name for extra telemetry) and says how to decode it: function (holding/input), type,
byte and word order, scale to the engineering unit, and a sign that maps the vendor's sign
convention onto ours (DOMAIN.md §2: grid +import, battery +discharge). Controls are points
too, under reserved keys:

- `setpoint` (battery, kW after scale and sign; + discharge),
- `limit` (PV active power limit, unit `%` of rated or `kW`),
- `relay` (flexible load: 1 = the load may run, 0 = shed; an optional read-only
  `relay_feedback` is the contactor's auxiliary contact),
- `v_ref` (DC converter droop voltage reference, V; a converter that takes no remote
  reference maps it read-only, and writing it raises),
- `enable` (optional; written with its `value` together with every command),
- `revert` (optional; s, the device's own fallback timer, written with every command).

The HIL (hil/devices.py) encodes its physics through the same map and codec.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drivers.base import Device, DeviceError, Reading
from drivers.modbus_serial import SerialEndpoint
from drivers.sunspec_tcp import Endpoint, ModbusEndpoint, ModbusExceptionReply

log = logging.getLogger(__name__)
T = TypeVar("T")
MAPS_DIR = Path(__file__).resolve().parent / "maps"
_ROOT = MAPS_DIR.parents[1]

Order = Literal["big", "little"]
PointType = Literal["uint16", "int16", "uint32", "int32", "float32"]
Role = Literal["meter", "battery", "pv", "load", "dcdc"]

# The values control reads per role (drivers/base.py), and the controls each role writes.
ROLE_KEYS: dict[str, tuple[str, ...]] = {
    "meter": ("power_kw", "import_kwh", "export_kwh"),
    "battery": ("power_kw", "soc_pct", "setpoint"),
    "pv": ("power_kw", "rated_kw", "limit"),
    "load": ("power_kw", "relay"),
    "dcdc": ("bus_v", "power_kw", "v_ref"),
}
CONTROL_KEYS = ("setpoint", "limit", "enable", "revert", "relay")
# Units of the keys control or the platform interpret; a map must deliver them in these.
KEY_UNITS: dict[str, tuple[str, ...]] = {
    "power_kw": ("kW",), "import_kwh": ("kWh",), "export_kwh": ("kWh",), "soc_pct": ("%",),
    "soh_pct": ("%",), "rated_kw": ("kW",), "max_charge_kw": ("kW",),
    "max_discharge_kw": ("kW",), "capacity_kwh": ("kWh",), "setpoint": ("kW",),
    "limit": ("%", "kW"), "revert": ("s",), "relay": ("",), "relay_feedback": ("",),
    "bus_v": ("V",), "v_ref": ("V",),
}
_RANGES = {"uint16": (0, 0xFFFF), "int16": (-0x8000, 0x7FFF), "uint32": (0, 0xFFFFFFFF),
           "int32": (-0x80000000, 0x7FFFFFFF)}
_STRUCT = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "float32": ">f"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MapPoint(_Model):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    address: int = Field(ge=0, le=65535)
    function: Literal["holding", "input"] = "holding"
    type: PointType = "uint16"
    word_order: Order | None = Field(None, description="32-bit points; default: the map's")
    byte_order: Order | None = Field(None, description="default: the map's")
    scale: float = Field(1.0, description="raw count x scale = value in `unit`")
    unit: str = ""
    access: Literal["r", "rw", "w"] = "r"
    poll: Literal["fast", "slow"] = "fast"
    sign: Literal[1, -1] = Field(1, description="-1: the vendor counts the other way round")
    value: float | None = Field(None, description="enable: the value that enables control")
    description: str = ""

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0 or not math.isfinite(v):
            raise ValueError("must be a finite, non-zero multiplier (e.g. 0.1 for 0.1 kW/count)")
        return v

    @property
    def size(self) -> int:
        return 1 if self.type.endswith("16") else 2

    @property
    def end(self) -> int:
        return self.address + self.size

    @property
    def readable(self) -> bool:
        return self.access != "w"

    @property
    def writable(self) -> bool:
        return self.access != "r"


class RegisterMap(_Model):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    vendor: str
    description: str = ""
    roles: list[Role] = Field(default_factory=list, description="device roles the map serves")
    byte_order: Order = "big"
    word_order: Order = "big"
    slow_every: int = Field(30, ge=1, le=100_000, description="poll slow points every N polls")
    max_read: int = Field(120, ge=1, le=125, description="registers per read request")
    points: list[MapPoint] = Field(min_length=1)

    def point(self, key: str) -> MapPoint | None:
        return next((p for p in self.points if p.key == key), None)

    # -- codec ---------------------------------------------------------------------------
    def _orders(self, p: MapPoint) -> tuple[str, str]:
        return p.byte_order or self.byte_order, p.word_order or self.word_order

    def decode(self, p: MapPoint, regs: list[int]) -> float:
        """Registers (as on the wire) -> value in the point's unit, in our sign convention."""
        byte_order, word_order = self._orders(p)
        words = list(regs[: p.size])
        if byte_order == "little":
            words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
        if word_order == "little":
            words.reverse()
        raw = struct.unpack(_STRUCT[p.type], struct.pack(f">{p.size}H", *words))[0]
        return raw * p.scale * p.sign

    def encode(self, p: MapPoint, value: float, clamp: bool = False) -> list[int]:
        """Value in the point's unit (our sign convention) -> registers; ValueError when the
        value does not fit the register type (`clamp`: saturate instead, as a device does)."""
        raw = value * p.sign / p.scale
        if p.type == "float32":
            data = struct.pack(">f", raw)
        else:
            lo, hi = _RANGES[p.type]
            n = round(raw) if math.isfinite(raw) else 0
            if clamp:
                n = min(max(n, lo), hi)
            if not lo <= n <= hi:
                raise ValueError(f"{p.key}: {value:g} {p.unit} is {n} counts, outside "
                                 f"{p.type} [{lo}, {hi}]")
            data = struct.pack(_STRUCT[p.type], n)
        words = list(struct.unpack(f">{p.size}H", data))
        byte_order, word_order = self._orders(p)
        if word_order == "little":
            words.reverse()
        if byte_order == "little":
            words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
        return words


class MapError(ValueError):
    """A register map is invalid or does not fit the device; one `where: what` per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        super().__init__("; ".join(f"{source}: {p}" for p in problems))


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(_ROOT))
    except ValueError:
        return str(path)


def _loc(loc: tuple, data: object) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    if len(loc) >= 2 and loc[0] == "points" and isinstance(loc[1], int):
        try:
            key = data["points"][loc[1]].get("key")  # type: ignore[index]
        except (KeyError, IndexError, TypeError, AttributeError):
            key = None
        if key:
            out += f" (point {key})"
    return out or "(top level)"


def _message(err: dict) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "is not a known field (check the spelling)"
    if err["type"] == "missing":
        return "is required"
    if "input" in err and err["type"] not in ("missing",):
        return f"{msg} (got {err['input']!r})"
    return msg


# Quantities that take both signs (DOMAIN §2): an unsigned register would turn charging or
# export into a huge positive number.
SIGNED_KEYS = frozenset({"power_kw", "setpoint"})
SIGNED_ROLES = frozenset({"battery", "meter", "dcdc"})  # PV output is never negative


def _cross_checks(m: RegisterMap) -> list[str]:
    """What one point cannot see: duplicates, overlaps, roles, controls."""
    problems: list[str] = []
    index = {id(p): i for i, p in enumerate(m.points)}

    def at(p: MapPoint, field: str) -> str:
        return f"points[{index[id(p)]}].{field} (point {p.key})"

    seen: dict[str, int] = {}
    for i, p in enumerate(m.points):
        if p.key in seen:
            problems.append(f"{at(p, 'key')}: already used by points[{seen[p.key]}]")
        seen.setdefault(p.key, i)
    for fn in ("holding", "input"):
        pts = sorted((p for p in m.points if p.function == fn), key=lambda p: p.address)
        for a, b in zip(pts, pts[1:]):
            if b.address < a.end:
                problems.append(
                    f"{at(b, 'address')}: {fn} register {b.address} overlaps "
                    f"points[{index[id(a)]}] ({a.key}, {a.type}) at {a.address}..{a.end - 1}")
    for p in m.points:
        units = KEY_UNITS.get(p.key)
        if units and p.unit not in units:
            hint = " (use scale to convert, e.g. 0.001 for W -> kW)" if "kW" in units else ""
            problems.append(f"{at(p, 'unit')}: {p.key} must be in {' or '.join(units)}, "
                            f"got {p.unit!r}{hint}")
        if p.key in CONTROL_KEYS:
            if not p.writable:
                problems.append(f"{at(p, 'access')}: control point {p.key} must be rw or w")
            if p.function != "holding":
                problems.append(f"{at(p, 'function')}: control point {p.key} must be a holding "
                                "register (input registers cannot be written)")
        elif p.writable and p.function == "input":
            problems.append(f"{at(p, 'access')}: input registers are read-only; use access: r")
        if p.key in SIGNED_KEYS and p.type.startswith("uint") and set(m.roles) & SIGNED_ROLES:
            problems.append(f"{at(p, 'type')}: {p.key} changes sign (charge/discharge, "
                            f"import/export); use int16, int32 or float32, not {p.type}")
        if p.key == "enable" and p.value is None:
            problems.append(f"{at(p, 'value')}: enable needs the value that enables control (e.g. 1)")
        if p.key != "enable" and p.value is not None:
            problems.append(f"{at(p, 'value')}: only the enable point takes a value")
    for role in m.roles:
        for key in ROLE_KEYS[role]:
            if m.point(key) is not None:
                continue
            others = [p.key for p in m.points if p.key not in ROLE_KEYS[role]]
            close = difflib.get_close_matches(key, others, n=1, cutoff=0.75)
            if close:
                p = next(p for p in m.points if p.key == close[0])
                problems.append(f"{at(p, 'key')}: {close[0]!r} is not a key role {role} knows; "
                                f"did you mean {key!r}? (role {role} needs "
                                f"{', '.join(ROLE_KEYS[role])})")
            else:
                problems.append(f"points: role {role} needs a point with key {key!r} "
                                f"(required: {', '.join(ROLE_KEYS[role])})")
    return problems


def parse_map(data: object, source: str = "<map>") -> RegisterMap:
    if not isinstance(data, dict):
        raise MapError(source, ["(top level): must be a mapping with name, vendor, points"])
    try:
        m = RegisterMap.model_validate(data)
    except ValidationError as exc:
        raise MapError(source, [f"{_loc(e['loc'], data)}: {_message(e)}"
                                for e in exc.errors()]) from None
    problems = _cross_checks(m)
    if problems:
        raise MapError(source, problems)
    return m


def load_map_file(path: str | Path) -> RegisterMap:
    p = Path(path)
    source = _display(p)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MapError(source, [f"cannot read file: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise MapError(source, [f"{at}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    m = parse_map(data, source)
    if m.name != p.stem:
        raise MapError(source, [f"name: {m.name!r} must match the file name {p.stem!r}"])
    return m


@functools.cache
def load_map(name: str, maps_dir: Path = MAPS_DIR) -> RegisterMap:
    """The map `drivers/maps/<name>.yaml`, validated (cached: maps are immutable)."""
    path = maps_dir / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(f.stem for f in maps_dir.glob("*.yaml"))) or "none"
        raise MapError(_display(path), [f"no such map (available: {known})"])
    return load_map_file(path)


def map_for(dev, maps_dir: Path = MAPS_DIR) -> RegisterMap:
    """The map of a configured device, checked to serve the device's role."""
    if dev.map is None:
        raise MapError(f"device {dev.id}", ["map: a register map name is required"])
    m = load_map(dev.map, maps_dir)
    if dev.role not in m.roles:
        serves = ", ".join(m.roles) or "no control role (monitoring only)"
        raise MapError(f"device {dev.id}", [
            f"map: {dev.map} serves {serves}, not a {dev.role}; choose a map for role "
            f"{dev.role} (it needs keys {', '.join(ROLE_KEYS[dev.role])})"])
    return m


def check_config(config) -> list[str]:
    """One `devices[i].map: ...` line per problem of the config's modbus devices' maps
    (for `pedf-edge check`)."""
    problems = []
    for i, dev in enumerate(config.devices):
        if not dev.protocol.startswith("modbus-"):
            continue
        try:
            map_for(dev)
        except MapError as exc:
            problems += [f"devices[{i}].map: {exc.source}: {p}" for p in exc.problems]
        if (bms := getattr(dev, "bms", None)) is not None:
            try:
                load_map(bms.map)
            except MapError as exc:
                problems += [f"devices[{i}].bms.map: {exc.source}: {p}" for p in exc.problems]
    return problems


# -- polling -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Block:
    """One read request: contiguous readable points of one function."""

    function: str
    address: int
    count: int
    points: tuple[MapPoint, ...]


def plan_reads(points: list[MapPoint], max_read: int = 120) -> list[Block]:
    """Contiguous points (no gaps: unmapped registers may answer ILLEGAL_ADDRESS) merged into
    as few requests as `max_read` allows."""
    blocks: list[Block] = []
    for fn in ("holding", "input"):
        run: list[MapPoint] = []
        for p in sorted((p for p in points if p.function == fn and p.readable),
                        key=lambda p: p.address):
            if run and (p.address != run[-1].end or p.end - run[0].address > max_read):
                blocks.append(Block(fn, run[0].address, run[-1].end - run[0].address, tuple(run)))
                run = []
            run.append(p)
        if run:
            blocks.append(Block(fn, run[0].address, run[-1].end - run[0].address, tuple(run)))
    return blocks


_WRITE_ORDER = {"revert": 0, "setpoint": 1, "limit": 1, "enable": 2}
_GATEWAY_NO_REPLY = (10, 11)  # gateway path unavailable / target device failed to respond
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 10.0


class MapDevice:
    """A Modbus device read and written through its register map. Fast points are read every
    poll, slow points on the first poll and every `slow_every` polls; every poll returns the
    latest of both, the slow ones with their own read time (`Reading.stamps`). Writes are
    read back where the points are readable.

    A unit that does not answer (timeout, a request abandoned on the wire by the caller's
    deadline, a gateway's "no response") backs off: its requests fail at once for 0.5 s,
    doubling up to 10 s, until one succeeds, so it cannot hold the shared endpoint for a
    timeout on every poll while its neighbours wait."""

    role: ClassVar[str | None] = None

    def __init__(self, device_id: str, endpoint: ModbusEndpoint, unit: int, regmap: RegisterMap,
                 protocol: str = "modbus-tcp") -> None:
        self.id, self.endpoint, self.unit, self.map = device_id, endpoint, unit, regmap
        self.protocol = protocol
        self._fast = plan_reads([p for p in regmap.points if p.poll == "fast"], regmap.max_read)
        self._slow = plan_reads([p for p in regmap.points if p.poll == "slow"], regmap.max_read)
        self._polls = 0
        self._slow_values: dict[str, float] = {}
        self._slow_at = 0.0
        self._backoff_s = 0.0
        self._retry_at = 0.0

    async def _call(self, request: Callable[..., Awaitable[T]], *args: object, **kw: object) -> T:
        """Run one endpoint request under this unit's backoff."""
        left = self._retry_at - time.monotonic()
        if left > 0:
            raise DeviceError(f"{self.id}: {self.endpoint.name} unit {self.unit} backing off for "
                              f"{left:.1f} s after it did not answer")
        try:
            result = await request(self.unit, *args, **kw)
        except ModbusExceptionReply as exc:
            if exc.code in _GATEWAY_NO_REPLY:
                self._silent()
            else:
                self._backoff_s = 0.0  # it answered, if only with an exception
            raise
        except (DeviceError, asyncio.CancelledError):
            if self.endpoint.unanswered(self.unit):
                self._silent()
            raise
        self._backoff_s = 0.0
        return result

    def _silent(self) -> None:
        self._backoff_s = min(max(self._backoff_s * 2, BACKOFF_MIN_S), BACKOFF_MAX_S)
        self._retry_at = time.monotonic() + self._backoff_s

    async def _read_block(self, b: Block) -> dict[str, float]:
        regs = await self._call(self.endpoint.read, b.address, b.count,
                                input_registers=b.function == "input")
        if len(regs) < b.count:
            raise DeviceError(f"{self.id}: read {b.address}+{b.count} returned {len(regs)} registers")
        return {p.key: self.map.decode(p, regs[p.address - b.address:]) for p in b.points}

    async def _read(self, blocks: list[Block]) -> dict[str, float]:
        values: dict[str, float] = {}
        for b in blocks:
            values.update(await self._read_block(b))
        return values

    async def connect(self) -> None:
        """Read every point once: the device answers and the map fits it."""
        self._slow_values = await self._read(self._slow)
        self._slow_at = time.monotonic()
        await self._read(self._fast)
        self._polls = 1

    async def poll(self) -> Reading:
        if not self._slow_values and self._slow or self._polls % self.map.slow_every == 0:
            self._slow_values = await self._read(self._slow)
            self._slow_at = time.monotonic()
        fast = await self._read(self._fast)
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
        read back the readable ones; a mismatch raises DeviceError."""
        items = []
        for key, v in values.items():
            p = self.map.point(key)
            if p is None or not p.writable:
                raise DeviceError(f"{self.id}: map {self.map.name} has no writable point {key!r}")
            try:
                items.append((p, self.map.encode(p, v)))
            except ValueError as exc:
                raise DeviceError(f"{self.id}: cannot write {exc}") from None
        items.sort(key=lambda it: it[0].address)
        groups: list[list[tuple[MapPoint, list[int]]]] = []
        for p, regs in items:
            if groups and groups[-1][-1][0].end == p.address:
                groups[-1].append((p, regs))
            else:
                groups.append([(p, regs)])
        # The command last: a device that runs on `enable` should see its setpoint first.
        groups.sort(key=lambda g: max(_WRITE_ORDER.get(p.key, 1) for p, _ in g))
        for g in groups:
            address = g[0][0].address
            regs = [r for _, rr in g for r in rr]
            await self._call(self.endpoint.write, address, regs)
            if all(p.readable for p, _ in g):
                back = await self._call(self.endpoint.read, address, len(regs))
                if list(back[: len(regs)]) != regs:
                    keys = ", ".join(p.key for p, _ in g)
                    raise DeviceError(
                        f"{self.id}: read-back of {keys} at {address} gave {list(back)}, "
                        f"wrote {regs} (map {self.map.name}); the device did not take the command")

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
    with `revert` and `enable` written alongside when the map has them.

    With a `bms` (a read-only unit of its own behind the same endpoint) its values come along
    as `bms.<key>`, each stamped with its read time. The BMS is monitoring: when it does not
    answer, the battery still polls, and its last BMS values age in `Reading.stamps`."""

    role = "battery"

    def __init__(self, device_id: str, endpoint: ModbusEndpoint, unit: int, regmap: RegisterMap,
                 protocol: str = "modbus-tcp", bms: MapDevice | None = None) -> None:
        super().__init__(device_id, endpoint, unit, regmap, protocol)
        self.bms = bms
        self._bms: Reading | None = None
        self._bms_error = ""

    async def connect(self) -> None:
        await super().connect()
        if self.bms is not None:
            await self._poll_bms()

    async def _poll_bms(self) -> None:
        assert self.bms is not None
        try:
            self._bms = await self.bms.poll()
            self._bms_error = ""
        except DeviceError as exc:
            if str(exc) != self._bms_error:
                log.warning("%s: BMS unit %d: %s; its last values are carried with their age",
                            self.id, self.bms.unit, exc)
            self._bms_error = str(exc)

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
        cmd: dict[str, float] = {"setpoint": kw}
        if (en := self.map.point("enable")) is not None:
            cmd["enable"] = float(en.value or 0)
        if self.map.point("revert") is not None:
            cmd["revert"] = float(revert_s)
        await self.write(cmd)


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
        cmd = {"limit": 100.0 * kw / self._rated_kw if limit_pt.unit == "%" else kw}
        if (en := self.map.point("enable")) is not None:
            cmd["enable"] = float(en.value or 0)
        if self.map.point("revert") is not None:
            cmd["revert"] = float(revert_s)
        await self.write(cmd)


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
        cmd = {"relay": 1.0 if on else 0.0}
        if (en := self.map.point("enable")) is not None:
            cmd["enable"] = float(en.value or 0)
        if self.map.point("revert") is not None:
            cmd["revert"] = float(revert_s)
        await self.write(cmd)


class MapDcConverter(MapDevice):
    """values: bus_v (V), power_kw (+ into the DC bus), v_ref (V) (+ extras). Control:
    `v_ref` in V, with `revert` and `enable` written alongside when the map has them."""

    role = "dcdc"

    async def write_v_ref(self, v: float, revert_s: int) -> None:
        cmd = {"v_ref": v}
        if (en := self.map.point("enable")) is not None:
            cmd["enable"] = float(en.value or 0)
        if self.map.point("revert") is not None:
            cmd["revert"] = float(revert_s)
        await self.write(cmd)


_ROLES: dict[str, type[MapDevice]] = {"meter": MapMeter, "battery": MapBattery, "pv": MapPv,
                                      "load": MapFlexLoad, "dcdc": MapDcConverter}


def modbus_builder(dev, endpoints: dict) -> Device:
    """drivers/registry.py builder for modbus-tcp and modbus-rtu: one shared Endpoint per
    host:port, one SerialEndpoint per serial port (shared with sunspec-rtu units there)."""
    regmap = map_for(dev)
    key = dev.endpoint
    if key not in endpoints:
        if dev.protocol == "modbus-rtu":
            endpoints[key] = SerialEndpoint(dev.serial, dev.timeout_s)
        else:
            endpoints[key] = Endpoint(dev.host, dev.port, dev.timeout_s)
    bms = getattr(dev, "bms", None)
    if bms is not None:
        bms_dev = MapDevice(f"{dev.id}.bms", endpoints[key], bms.unit_id, load_map(bms.map),
                            dev.protocol)
        return MapBattery(dev.id, endpoints[key], dev.unit_id, regmap, dev.protocol, bms=bms_dev)
    return _ROLES[dev.role](dev.id, endpoints[key], dev.unit_id, regmap, dev.protocol)

"""Register maps as data: non-SunSpec Modbus devices (PCS, BMS, meters, PV inverters)
described by YAML files in `drivers/maps/`, validated at load, and the codec between a
point's registers and its value. The drivers that poll and control a device through its map
are in drivers.modbus.mapped.

A map names each register by the key it feeds (`power_kw`, `soc_pct`, `import_kwh`, ... or a
free name for extra telemetry) and says how to decode it: function (holding/input), type,
byte and word order, scale to the engineering unit, and a sign that maps the vendor's sign
convention onto ours (docs/domain.md §2: grid +import, battery +discharge). Controls are points
too, under reserved keys:

- `setpoint` (battery, kW after scale and sign; + discharge),
- `limit` (PV active power limit, unit `%` of rated or `kW`),
- `relay` (flexible load: 1 = the load may run, 0 = shed; an optional read-only
  `relay_feedback` is the contactor's auxiliary contact),
- `v_ref` (DC converter droop voltage reference, V; a converter that takes no remote
  reference maps it read-only, and writing it raises),
- `enable` (optional; written with its `value` together with every command),
- `revert` (optional; s, the device's own fallback timer, written with every command),
- `switch` (breaker: 1 = close, 0 = open; usually a coil, its position a discrete input),
- `grid_mode` (battery PCS: 1 = form the grid (voltage source), 0 = follow it; an optional
  read-only `forming` reports the mode the PCS is in, whoever switched it),
- `auto_transfer` (battery PCS, optional: 1 = on a loss of mains it trips the PCC switch
  itself and forms at once; written with every command when the battery's config asks).

Points live in holding or input registers, or are single bits: coils (read/write, function
1/5/15) and discrete inputs (read-only, function 2), `type: bool`.

A device that answers every address in its range (unmapped ones too) may say so with
`max_gap`: reads then span that many unmapped registers between points, e.g. the
measurements and the control points of a PCS in one request.

The HIL (hil/devices.py) encodes its physics through the same map and codec.
"""

from __future__ import annotations

import difflib
import functools
import math
import struct
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drivers.fileerrors import FileError, error_message, error_path, read_yaml
from drivers.spec import Role

MAPS_DIR = Path(__file__).resolve().parents[1] / "maps"
_ROOT = MAPS_DIR.parents[1]

Order = Literal["big", "little"]
PointType = Literal["uint16", "int16", "uint32", "int32", "float32", "bool"]
Function = Literal["holding", "input", "coil", "discrete"]
BIT_FUNCTIONS = ("coil", "discrete")

# The values control reads per role (drivers/base.py), and the controls each role writes.
ROLE_KEYS: dict[str, tuple[str, ...]] = {
    "meter": ("power_kw", "import_kwh", "export_kwh"),
    "battery": ("power_kw", "soc_pct", "setpoint"),
    "pv": ("power_kw", "rated_kw", "limit"),
    "load": ("power_kw", "relay"),
    "dcdc": ("bus_v", "power_kw", "v_ref"),
    # The PCC breaker and its synchronism-check measurements on either side of it.
    "breaker": ("closed", "switch", "grid_v", "grid_hz", "bus_v", "bus_hz", "phase_deg"),
    "hvac": ("power_kw", "rated_kw", "zone_temp_c", "outdoor_temp_c"),
    "thermal_storage": ("power_kw", "tank_temp_c", "setpoint"),
}
# An HVAC unit is driven one of these ways, whichever its map has (checked below).
HVAC_CONTROLS = (("limit", "control_mode"), ("sg_ready",), ("offset_k", "thermostat_c"))
CONTROL_KEYS = ("setpoint", "limit", "enable", "revert", "relay", "switch", "grid_mode",
                "auto_transfer", "control_mode", "sg_ready", "offset_k")
# Units of the keys control or the platform interpret; a map must deliver them in these.
KEY_UNITS: dict[str, tuple[str, ...]] = {
    "power_kw": ("kW",), "import_kwh": ("kWh",), "export_kwh": ("kWh",), "soc_pct": ("%",),
    "soh_pct": ("%",), "rated_kw": ("kW",), "max_charge_kw": ("kW",),
    "max_discharge_kw": ("kW",), "capacity_kwh": ("kWh",), "setpoint": ("kW",),
    "limit": ("%", "kW"), "revert": ("s",), "relay": ("",), "relay_feedback": ("",),
    "bus_v": ("V",), "v_ref": ("V",), "closed": ("",), "switch": ("",), "grid_mode": ("",),
    "auto_transfer": ("",), "forming": ("",),
    "grid_v": ("V",), "grid_hz": ("Hz",), "bus_hz": ("Hz",), "phase_deg": ("deg",),
    "zone_temp_c": ("°C",), "outdoor_temp_c": ("°C",),
    "tank_temp_c": ("°C",), "control_mode": ("",), "sg_ready": ("",), "offset_k": ("K",),
    "thermostat_c": ("°C",),
}
_RANGES = {"uint16": (0, 0xFFFF), "int16": (-0x8000, 0x7FFF), "uint32": (0, 0xFFFFFFFF),
           "int32": (-0x80000000, 0x7FFFFFFF)}
_STRUCT = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "float32": ">f"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MapPoint(_Model):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    address: int = Field(ge=0, le=65535)
    function: Function = "holding"
    type: PointType | None = Field(None, description="default: uint16, bool for coils and "
                                   "discrete inputs")
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

    @model_validator(mode="after")
    def _bit_type(self) -> MapPoint:
        bits = self.function in BIT_FUNCTIONS
        if self.type is None:
            object.__setattr__(self, "type", "bool" if bits else "uint16")
        elif bits != (self.type == "bool"):
            raise ValueError(f"type: {self.function} points are single bits: use type bool"
                             if bits else f"type: bool is for coils and discrete inputs, not "
                             f"{self.function} registers")
        return self

    @property
    def size(self) -> int:
        return 2 if self.type in ("uint32", "int32", "float32") else 1

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
    max_gap: int = Field(0, ge=0, le=124, description=(
        "unmapped registers one read may span between two points of a poll class (fewer "
        "requests); only for devices that answer every address in that range. 0: only "
        "gap-free runs are read together"))
    points: list[MapPoint] = Field(min_length=1)

    def point(self, key: str) -> MapPoint | None:
        return next((p for p in self.points if p.key == key), None)

    # -- codec ---------------------------------------------------------------------------
    def _orders(self, p: MapPoint) -> tuple[str, str]:
        return p.byte_order or self.byte_order, p.word_order or self.word_order

    def decode(self, p: MapPoint, regs: list[int]) -> float:
        """Registers (as on the wire) -> value in the point's unit, in our sign convention."""
        if p.type == "bool":
            return 1.0 if regs[0] else 0.0
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
        if p.type == "bool":
            return [1 if value >= 0.5 else 0]
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


class MapError(FileError, ValueError):
    """A register map is invalid or does not fit the device; one `where: what` per problem."""

    def __str__(self) -> str:
        return "; ".join(f"{self.source}: {p}" for p in self.problems)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(_ROOT))
    except ValueError:
        return str(path)


_HINTS = {"extra_forbidden": "is not a known field (check the spelling)", "missing": "is required"}


def _loc(loc: tuple, data: object) -> str:
    """The path of a pydantic error, with the key of the point it is in."""
    out = error_path(loc)
    if len(loc) >= 2 and loc[0] == "points" and isinstance(loc[1], int):
        try:
            key = data["points"][loc[1]].get("key")  # type: ignore[index]
        except (KeyError, IndexError, TypeError, AttributeError):
            key = None
        if key:
            out += f" (point {key})"
    return out


# Quantities that take both signs (docs/domain.md §2): an unsigned register would turn charging or
# export into a huge positive number.
SIGNED_KEYS = frozenset({"power_kw", "setpoint"})
SIGNED_ROLES = frozenset({"battery", "meter", "dcdc", "thermal_storage"})  # PV output is never negative
ALWAYS_SIGNED = frozenset({"offset_k"})  # in any role


def _cross_checks(m: RegisterMap) -> list[str]:
    """What one point cannot see: duplicates, overlaps, roles, controls."""
    problems: list[str] = []
    index = {id(p): i for i, p in enumerate(m.points)}
    if m.max_gap >= m.max_read:
        problems.append(f"max_gap: {m.max_gap} unmapped registers cannot fit in a read of "
                        f"max_read {m.max_read}; use a max_gap below max_read (or 0)")

    def at(p: MapPoint, field: str) -> str:
        return f"points[{index[id(p)]}].{field} (point {p.key})"

    seen: dict[str, int] = {}
    for i, p in enumerate(m.points):
        if p.key in seen:
            problems.append(f"{at(p, 'key')}: already used by points[{seen[p.key]}]")
        seen.setdefault(p.key, i)
    for fn in ("holding", "input", *BIT_FUNCTIONS):
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
            if p.function not in ("holding", "coil"):
                problems.append(f"{at(p, 'function')}: control point {p.key} must be a holding "
                                f"register or a coil ({p.function} points cannot be written)")
        elif p.writable and p.function in ("input", "discrete"):
            kind = "input registers" if p.function == "input" else "discrete inputs"
            problems.append(f"{at(p, 'access')}: {kind} are read-only; use access: r")
        if p.type.startswith("uint") and (p.key in ALWAYS_SIGNED or (
                p.key in SIGNED_KEYS and set(m.roles) & SIGNED_ROLES)):
            why = "warmer/colder" if p.key in ALWAYS_SIGNED else "charge/discharge, import/export"
            problems.append(f"{at(p, 'type')}: {p.key} changes sign ({why}); use int16, int32 "
                            f"or float32, not {p.type}")
        if p.key == "enable" and p.value is None:
            problems.append(f"{at(p, 'value')}: enable needs the value that enables control (e.g. 1)")
        if p.key != "enable" and p.value is not None:
            problems.append(f"{at(p, 'value')}: only the enable point takes a value")
    if "hvac" in m.roles and not any(all(m.point(k) for k in ks) for ks in HVAC_CONTROLS):
        problems.append("points: role hvac needs its control: limit (%) with control_mode "
                        "(0 own thermostat, 1 external), sg_ready (SG-Ready state 1..4), or "
                        "offset_k (K) with thermostat_c")
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
        raise MapError(source, [f"{_loc(e['loc'], data)}: {error_message(e, _HINTS, got=True)}"
                                for e in exc.errors()]) from None
    problems = _cross_checks(m)
    if problems:
        raise MapError(source, problems)
    return m


def load_map_file(path: str | Path) -> RegisterMap:
    p = Path(path)
    source = _display(p)
    m = parse_map(read_yaml(p, MapError, source), source)
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
    """The map of a device (a DeviceSpec or anything with id, role and map), checked to
    serve its role."""
    if dev.map is None:
        raise MapError(f"device {dev.id}", ["map: a register map name is required"])
    m = load_map(dev.map, maps_dir)
    if dev.role not in m.roles:
        serves = ", ".join(m.roles) or "no control role (monitoring only)"
        raise MapError(f"device {dev.id}", [
            f"map: {dev.map} serves {serves}, not a {dev.role}; choose a map for role "
            f"{dev.role} (it needs keys {', '.join(ROLE_KEYS[dev.role])})"])
    return m

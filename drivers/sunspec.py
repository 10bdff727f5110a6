"""SunSpec model definitions and register codec.

The point tables come from the JSON model definitions that pysunspec2 ships, so nothing
is retyped here. Only a model's fixed top-level group is laid out (repeating groups are
not needed by the roles we control yet). The same codec encodes for the HIL simulator
and decodes for the driver, which keeps both sides honest against one definition.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from functools import cache
from importlib import resources

SUNS = (0x5375, 0x6E53)  # "SunS"
BASES = (40000, 0, 50000)
END_ID = 0xFFFF

_NOT_IMPL = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "count": 0,
    "int32": 0x80000000,
    "uint32": 0xFFFFFFFF,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "acc16": 0,
    "acc32": 0,
}
_SIGNED = {"int16", "sunssf", "int32", "int64"}


class SunSpecError(Exception):
    """The device does not speak SunSpec as expected (no marker, broken chain, bad model)."""


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    offset: int  # registers from the model's ID register
    type: str
    size: int
    sf: str | int | None
    access: str
    units: str | None = None  # as the model JSON spells them ("W", "Wh", "%WHRtg"): for people
    label: str | None = None
    symbols: tuple[tuple[int, str], ...] = ()  # enum values -> names, for people

    def symbol(self, value: object) -> str | None:
        return next((name for v, name in self.symbols if v == value), None)


@dataclass(frozen=True, slots=True)
class ModelDef:
    id: int
    length: int  # the L register: registers after ID and L
    points: dict[str, Point]
    name: str = ""  # the JSON group name, e.g. "inverter_three_phase"
    label: str = ""  # e.g. "Inverter (Three Phase)"

    def point(self, name: str) -> Point:
        try:
            return self.points[name]
        except KeyError:
            raise SunSpecError(f"model {self.id} has no point {name!r}") from None


@cache
def model(model_id: int) -> ModelDef:
    """The definition of one SunSpec model, from pysunspec2's JSON."""
    try:
        text = resources.files("sunspec2").joinpath(f"models/json/model_{model_id}.json").read_text()
    except FileNotFoundError:
        raise SunSpecError(f"no SunSpec model definition for model {model_id}") from None
    group = json.loads(text)["group"]
    points: dict[str, Point] = {}
    offset = 0
    for p in group["points"]:
        size = int(p.get("size", 1))
        units = (p.get("units") or "").strip() or None
        symbols = tuple((int(s["value"]), s["name"]) for s in p.get("symbols", ()))
        points[p["name"]] = Point(p["name"], offset, p["type"], size, p.get("sf"),
                                  p.get("access", "R"), units, p.get("label"), symbols)
        offset += size
    return ModelDef(model_id, offset - 2, points, group.get("name", ""), group.get("label", ""))


def _raw_from_regs(point: Point, regs: list[int]) -> int | float | str | None:
    t = point.type
    if t == "string":
        raw = b"".join(r.to_bytes(2, "big") for r in regs)
        text = raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()
        return text or None
    if t == "pad":
        return None
    if t == "float32":
        value = struct.unpack(">f", struct.pack(">HH", *regs))[0]
        return None if math.isnan(value) else value
    word = 0
    for r in regs:
        word = (word << 16) | r
    if _NOT_IMPL.get(t) == word and t not in ("acc16", "acc32", "count"):
        return None
    if t in _SIGNED and word >= 1 << (16 * point.size - 1):
        word -= 1 << (16 * point.size)
    return word


def decode(mdef: ModelDef, regs: list[int]) -> dict[str, float | int | str | None]:
    """Scaled values of a model, given its registers starting at ID. Missing -> None."""
    raw = {name: _raw_from_regs(p, regs[p.offset : p.offset + p.size]) for name, p in mdef.points.items()}
    out: dict[str, float | int | str | None] = {}
    for name, p in mdef.points.items():
        value = raw[name]
        if p.sf is None or value is None or p.type == "sunssf":
            out[name] = value
            continue
        sf = p.sf if isinstance(p.sf, int) else raw.get(p.sf)
        out[name] = None if sf is None else value * 10.0 ** int(sf)
    return out


def encode_point(point: Point, value: float | int | str | None, sf: int = 0) -> list[int]:
    """Registers for one point; `value` in engineering units, `sf` the scale factor in force."""
    t = point.type
    if value is None:
        if t == "string":
            return [0] * point.size
        if t == "float32":
            return list(struct.unpack(">HH", struct.pack(">f", math.nan)))
        word = _NOT_IMPL.get(t, 0)
    elif t == "string":
        raw = str(value).encode("ascii")[: 2 * point.size].ljust(2 * point.size, b"\x00")
        return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    elif t == "float32":
        return list(struct.unpack(">HH", struct.pack(">f", float(value))))
    else:
        word = int(round(float(value) / 10.0**sf)) if point.sf is not None and t != "sunssf" else int(value)
        bits = 16 * point.size
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if t in _SIGNED else (0, (1 << bits) - 1)
        word = min(max(word, lo), hi) & ((1 << bits) - 1)
    return [(word >> (16 * (point.size - 1 - i))) & 0xFFFF for i in range(point.size)]


def layout(model_ids: list[int], base: int = 40000) -> dict[int, int]:
    """Start address (of the ID register) of each model in a chain that begins at `base`."""
    starts: dict[int, int] = {}
    addr = base + 2
    for mid in model_ids:
        if mid in starts:
            raise SunSpecError(f"model {mid} appears twice; repeated models are not supported yet")
        starts[mid] = addr
        addr += 2 + model(mid).length
    return starts


def chain_registers(model_ids: list[int]) -> list[int]:
    """Blank register image of a whole chain: SunS marker, each model's ID/L, end marker."""
    regs = list(SUNS)
    for mid in model_ids:
        mdef = model(mid)
        body = [0] * mdef.length
        for p in mdef.points.values():
            if p.name not in ("ID", "L"):
                body[p.offset - 2 : p.offset - 2 + p.size] = encode_point(p, None)
        regs += [mid, mdef.length, *body]
    return regs + [END_ID, 0]

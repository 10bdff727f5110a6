"""SunSpec model definitions and register codec.

The point tables come from the JSON model definitions that pysunspec2 ships, so nothing
is retyped here. A model's fixed part is its top-level points followed by its groups that
occur once (model 704's PFWInj ... are flattened as "PFWInj.PF"); repeating groups (705's
curves, counted by a point such as NCrv, or filling the model's length) come after it and
are decoded on demand (`decode_groups`). The same codec encodes for the HIL simulator and
decodes for the driver, which keeps both sides honest against one definition.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
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
    "int64": 0x8000000000000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
    "acc64": 0,
}
_ACC = ("acc16", "acc32", "acc64", "count")  # 0 is also a real value: never "missing"
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
class GroupDef:
    """A repeating group. `count` names the point holding the number of instances, or is 0
    when instances fill the rest of the model's length. An instance is a sequence of points
    (groups that occur once flattened as "Group.Point") and nested repeating groups, so its
    size is known only once read; its points' offsets are not used."""

    name: str
    count: str | int
    elements: tuple[Point | GroupDef, ...]


@dataclass(frozen=True, slots=True)
class ModelDef:
    id: int
    length: int  # of the fixed part: the L register when the model has no repeating groups
    points: dict[str, Point]
    name: str = ""  # the JSON group name, e.g. "inverter_three_phase"
    label: str = ""  # e.g. "Inverter (Three Phase)"
    tail: tuple[Point | GroupDef, ...] = ()  # from the first repeating group on

    def point(self, name: str) -> Point:
        try:
            return self.points[name]
        except KeyError:
            raise SunSpecError(f"model {self.id} has no point {name!r}") from None

    def through(self, name: str) -> int:
        """Registers from ID up to and including point `name` (a prefix read)."""
        p = self.point(name)
        return p.offset + p.size


def _elements(group: dict, prefix: str) -> list[Point | GroupDef]:
    """The group's points and groups in register order; groups that occur once flattened."""
    out: list[Point | GroupDef] = []
    for p in group["points"]:
        units = (p.get("units") or "").strip() or None
        symbols = tuple((int(s["value"]), s["name"]) for s in p.get("symbols", ()))
        out.append(Point(prefix + p["name"], 0, p["type"], int(p.get("size", 1)), p.get("sf"),
                         p.get("access", "R"), units, p.get("label"), symbols))
    for g in group.get("groups", ()):
        count = g.get("count")
        if count is None or count == 1:
            out += _elements(g, f"{prefix}{g['name']}.")
        else:
            out.append(GroupDef(g["name"], count if isinstance(count, str) else int(count),
                                tuple(_elements(g, ""))))
    return out


@cache
def model(model_id: int) -> ModelDef:
    """The definition of one SunSpec model, from pysunspec2's JSON."""
    try:
        text = resources.files("sunspec2").joinpath(f"models/json/model_{model_id}.json").read_text()
    except FileNotFoundError:
        raise SunSpecError(f"no SunSpec model definition for model {model_id}") from None
    group = json.loads(text)["group"]
    elements = _elements(group, "")
    points: dict[str, Point] = {}
    offset, tail = 0, ()
    for i, el in enumerate(elements):
        if isinstance(el, GroupDef):
            tail = tuple(elements[i:])
            break
        points[el.name] = replace(el, offset=offset)
        offset += el.size
    declared = next((p.get("value") for p in group["points"] if p["name"] == "L"), None)
    if declared is not None and not tail and int(declared) != offset - 2:
        raise SunSpecError(f"model {model_id}: laid out {offset - 2} registers, its definition "
                           f"says L = {declared}")
    return ModelDef(model_id, offset - 2, points, group.get("name", ""), group.get("label", ""),
                    tail)


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
    if _NOT_IMPL.get(t) == word and t not in _ACC:
        return None
    if t in _SIGNED and word >= 1 << (16 * point.size - 1):
        word -= 1 << (16 * point.size)
    return word


def _scaled(points: dict[str, Point], raw: dict, sfs: Mapping[str, int | None]) -> dict:
    out: dict[str, float | int | str | None] = {}
    for name, p in points.items():
        value = raw[name]
        if p.sf is None or value is None or p.type == "sunssf":
            out[name] = value
            continue
        sf = p.sf if isinstance(p.sf, int) else raw[p.sf] if p.sf in raw else sfs.get(p.sf)
        out[name] = None if sf is None else value * 10.0 ** int(sf)
    return out


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to decode the first n registers of a model, worked out once: every poll decodes
    the same blocks, and walking the point table per value was a third of a poll's CPU.
    `words`: integer points as (name, offset, size, "not implemented" word or -1, the value
    from which it is negative or 0); `other`: points left to `_raw_from_regs` (strings,
    floats, pads); `scaled`: (name, scale factor: an int, or the name of its sunssf point);
    `sunssf`: the names of the scale factor points."""

    words: tuple[tuple[str, int, int, int, int], ...]
    other: tuple[Point, ...]
    scaled: tuple[tuple[str, int | str], ...]
    sunssf: tuple[str, ...]
    order: tuple[str, ...]


_POWERS = {sf: 10.0 ** sf for sf in range(-10, 11)}  # the scale factors SunSpec allows
_PLANS: dict[tuple[int, int], tuple[ModelDef, _Plan]] = {}


def _plan(mdef: ModelDef, n: int) -> _Plan:
    key = (id(mdef), n)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is mdef:
        return hit[1]
    present = [p for p in mdef.points.values() if p.offset + p.size <= n]
    words, other = [], []
    for p in present:
        if p.type in ("string", "pad", "float32"):
            other.append(p)
            continue
        missing = _NOT_IMPL.get(p.type, -1) if p.type not in _ACC else -1
        negative = 1 << (16 * p.size - 1) if p.type in _SIGNED else 0
        words.append((p.name, p.offset, p.size, missing, negative))
    plan = _Plan(tuple(words), tuple(other),
                 tuple((p.name, p.sf) for p in present
                       if p.sf is not None and p.type != "sunssf"),
                 tuple(p.name for p in present if p.type == "sunssf"),
                 tuple(p.name for p in present))
    _PLANS[key] = (mdef, plan)  # the ModelDef held: its id is never reused for another
    return plan


def sunssf_points(mdef: ModelDef, n: int) -> tuple[str, ...]:
    """The scale factor points among the first n registers of the model."""
    return _plan(mdef, n).sunssf


def decode(mdef: ModelDef, regs: list[int],
           sfs: Mapping[str, int | None] | None = None) -> dict[str, float | int | str | None]:
    """Scaled values of a model's fixed part, given its registers starting at ID.

    Missing ("not implemented") -> None. `regs` may be a prefix of the model: points past
    its end are left out, and a scale factor past it is taken from `sfs` (scale factors read
    before; None when unknown, so the value is None rather than wrongly scaled)."""
    plan = _plan(mdef, len(regs))
    raw: dict[str, float | int | str | None] = {}
    for name, at, size, missing, negative in plan.words:
        if size == 1:
            word = regs[at]
        elif size == 2:
            word = (regs[at] << 16) | regs[at + 1]
        else:
            word = 0
            for r in regs[at : at + size]:
                word = (word << 16) | r
        if word == missing:
            raw[name] = None
        elif negative and word >= negative:
            raw[name] = word - (negative << 1)
        else:
            raw[name] = word
    for p in plan.other:
        raw[p.name] = _raw_from_regs(p, regs[p.offset : p.offset + p.size])
    out = {name: raw[name] for name in plan.order} if plan.other else dict(raw)
    sfs = sfs or {}
    for name, sf in plan.scaled:
        value = out[name]
        if value is None:
            continue
        if isinstance(sf, str):
            sf = raw[sf] if sf in raw else sfs.get(sf)  # type: ignore[assignment]
            if sf is None:
                out[name] = None
                continue
        scale = _POWERS.get(sf)
        out[name] = value * (10.0 ** int(sf) if scale is None else scale)  # type: ignore[operator]
    return out


Value = float | int | str | None


def decode_groups(mdef: ModelDef, regs: list[int]) -> list[tuple[str, Point, Value]]:
    """The repeating groups of a model, flattened in register order: ("Crv[0].Pt[1].V",
    point, scaled value). `regs` holds the whole model as the device sized it (ID, L and L
    registers). Reading stops at an instance that does not fit or at a count that is "not
    implemented": what follows it cannot be located."""
    fixed = {k: _raw_from_regs(p, regs[p.offset : p.offset + p.size])
             for k, p in mdef.points.items() if p.offset + p.size <= len(regs)}
    out: list[tuple[str, Point, Value]] = []
    _walk(mdef.tail, regs, 2 + mdef.length, len(regs), "", fixed, out)
    return out


def _walk(elements: tuple[Point | GroupDef, ...], regs: list[int], at: int, end: int,
          prefix: str, outer: dict, out: list) -> int | None:
    """Decode one sequence of elements from `at`; the register after it, None if cut short."""
    mine: dict[str, Point] = {}
    raw: dict = {}
    first = len(out)
    for el in elements:
        if isinstance(el, Point):
            if at + el.size > end:
                return None
            mine[el.name] = el
            raw[el.name] = _raw_from_regs(el, regs[at : at + el.size])
            at += el.size
            continue
        scope = {**outer, **raw}
        count = scope.get(el.count) if isinstance(el.count, str) else None
        if isinstance(el.count, str) and not isinstance(count, int):
            return None
        i = 0
        while (count is None and at < end) or (count is not None and i < count):
            nxt = _walk(el.elements, regs, at, end, f"{prefix}{el.name}[{i}].", scope, out)
            if nxt is None or nxt == at:
                return None
            at, i = nxt, i + 1
    sfs = {k: v for k, v in outer.items() if isinstance(v, int)}
    scaled = _scaled(mine, raw, sfs)
    out[first:first] = [(prefix + k, p, scaled[k]) for k, p in mine.items()]
    return at


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

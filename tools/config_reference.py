"""The configuration reference, generated from the models so it cannot drift from what `check`
accepts: `python -m tools.config_reference > docs/config-reference.md` (a test compares).

Every top-level section, then the fields every device has, then each role's own fields from
the role registry; nested models (serial line, tariff periods, simulator physics ...) get
their own table, linked from the field that holds them."""

from __future__ import annotations

import enum
import sys
import types
from collections.abc import Iterator
from pathlib import PurePath
from typing import Annotated, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edge.config.base import DeviceBase
from edge.roles import ROLES

_BOUNDS = ((at.Gt, "gt", ">"), (at.Ge, "ge", "≥"), (at.Lt, "lt", "<"), (at.Le, "le", "≤"))
_LENGTHS = ((at.MinLen, "min_length", "length ≥ {}"), (at.MaxLen, "max_length", "length ≤ {}"))


def _anchor(title: str) -> str:
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _type(tp: object, titles: dict[type, str]) -> str:
    """A field's type as a reader writes it in YAML; nested models link to their table."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _type(args[0], titles)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" if isinstance(a, str) else str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " \\| ".join("none" if a is type(None) else _type(a, titles) for a in args)
    if origin is list:
        return f"list of {_type(args[0], titles)}"
    if origin is dict:
        return f"map {_type(args[0], titles)} → {_type(args[1], titles)}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"[{titles[tp]}](#{_anchor(titles[tp])})"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "path"
    return getattr(tp, "__name__", str(tp))


def _constraints(info: FieldInfo) -> str:
    out = []
    for item in info.metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(item, kind):
                out.append(f"{sign} {getattr(item, attr)}")
        for kind, attr, text in _LENGTHS:
            if isinstance(item, kind):
                out.append(text.format(getattr(item, attr)))
        if pattern := getattr(item, "pattern", None):
            out.append(f"`{pattern}`")
    return ", ".join(out)


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "**required**"
    value = info.default_factory() if info.default is PydanticUndefined else info.default
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "(see its table)"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, list | dict | str) and not value:
        return "empty"
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return f"`{text}`"


def _nested(tp: object) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for arg in get_args(tp):
        yield from _nested(arg)


def _table(model: type[BaseModel], titles: dict[type, str], skip: set[str] = frozenset()) -> list[str]:
    rows = ["| key | type | default | limits | meaning |", "|---|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        meaning = (info.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | {_type(info.annotation, titles)} | {_default(info)} | "
                    f"{_constraints(info)} | {meaning} |")
    return rows


Section = tuple[str, type[BaseModel], set[str], str]  # title, model, fields shown elsewhere, intro


def _with_nested(section: Section, seen: set[type]) -> list[Section]:
    """A table, then the tables of the models its fields hold (first holder names them)."""
    title, model, skip, _ = section
    out = [section]
    for name, info in model.model_fields.items():
        for sub in _nested(info.annotation):
            if name not in skip and sub not in seen:
                seen.add(sub)
                path = f"{title.split(' role: ')[0]}.{name}"
                out += _with_nested((path, sub, set(), sub.__doc__ or ""), seen)
    return out


def _sections() -> list[Section]:
    """Every table in reading order: the sections as the root model lists them, the devices'
    common fields, each role's own fields, each followed by the models it holds."""
    from edge.config.site import Config
    from hil.config import HilConfig, SimParams

    common = set(DeviceBase.model_fields) - {"role"}
    tops: list[Section] = []
    for name, info in Config.model_fields.items():
        if name == "hil":  # the simulator's, declared in hil/config.py
            tops.append((name, HilConfig, set(), f"Optional section, read by the simulator "
                         f"and the offline tools only. {HilConfig.__doc__ or ''}"))
            continue
        if name != "devices":
            model = next(_nested(info.annotation))
            note = "Required section." if info.is_required() else "Optional section."
            tops.append((name, model, set(), f"{note} {model.__doc__ or ''}"))
            continue
        tops.append(("devices[]", DeviceBase, {"role"},
                     "Fields every device has, whatever its `role`; the role's own below."))
        tops.append(("devices[].sim", SimParams, set(), "The simulated device's physics "
                     f"(hil/config.py), read by the simulator only. {SimParams.__doc__ or ''}"))
        for role in ROLES.values():
            fields = role.model.model_fields
            inherited = {n for n in common if repr(fields[n]) == repr(DeviceBase.model_fields[n])}
            tops.append((f"devices[] role: {role.name}", role.model, inherited,
                         f"`role: {role.name}`, with the [fields every device has](#devices). "
                         f"{role.model.__doc__ or ''}"))
    seen = {model for _, model, _, _ in tops}
    return [s for top in tops for s in _with_nested(top, seen)]


def render() -> str:
    sections = _sections()
    titles: dict[type, str] = {}
    for title, model, _, _ in sections:
        titles.setdefault(model, title)
    lines = ["# Configuration reference", "",
             "Generated from the configuration models by "
             "`python -m tools.config_reference > docs/config-reference.md`; do not edit by hand. "
             "A site is one YAML file (`configs/demo.yaml` is a complete example). Unknown keys "
             "are errors: a misspelt setting never silently disables a limit. `sim:` and `hil:` "
             "are read only by the simulator and the offline tools.", ""]
    for title, model, skip, intro in sections:
        lines += [f"## {title}", ""] + ([" ".join(intro.split()), ""] if intro.strip() else [])
        lines += [*_table(model, titles, skip), ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

"""Configuration errors for people: every problem as `path: what is wrong` with the fix,
and the one YAML reader every loader uses (the line and column of a syntax error)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from edge.config.site import Config
from edge.roles import ROLES


class ConfigError(Exception):
    """Invalid site configuration; `problems` holds one `path: message` line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


_HINTS = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "missing": "is required",
    "extra_forbidden": "is not a known setting (check the spelling; see README 'Config reference')",
    "union_tag_invalid": "role must be one of: " + ", ".join(ROLES),
    "union_tag_not_found": "each device needs a role: " + ", ".join(ROLES),
    "literal_error": "must be one of {expected}",
    "too_short": "must have at least {min_length} item(s)",
}


def error_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ROLES and out.endswith("]"):
            continue  # discriminator tag pydantic inserts; not part of the YAML path
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def error_message(err: dict) -> str:
    template = _HINTS.get(err["type"])
    ctx = err.get("ctx") or {}
    if template:
        try:
            return template.format(**ctx)
        except (KeyError, IndexError):
            pass
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def parse(data: object, source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [f"{error_path(e['loc'])}: {error_message(e)}" for e in exc.errors()]
        raise ConfigError(source, problems) from None


def read_yaml(p: Path, error: type[Exception] = ConfigError) -> object:
    """A YAML file's data; an unreadable file or bad YAML raises `error(source, [line])`
    with the line and column, the way every loader here reports problems."""
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(str(p), [f"cannot read file: {exc.strerror}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise error(str(p), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None


def load(path: str | Path) -> Config:
    p = Path(path)
    data = read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(str(p), ["(top level): must be a mapping with site, devices, tariff"])
    return parse(data, str(p))

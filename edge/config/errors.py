"""Configuration errors for people: every problem as `path: what is wrong` with the fix (the
hints here; the wording and the YAML reader are drivers.fileerrors')."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from drivers.fileerrors import FileError, read_yaml, validation_problems
from edge.config.site import Config
from edge.roles import ROLES


class ConfigError(FileError):
    """Invalid site configuration; `problems` holds one `path: message` line each."""


HINTS = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "missing": "is required",
    "extra_forbidden": "is not a known setting (check the spelling; see docs/config-reference.md)",
    "union_tag_invalid": "role must be one of: " + ", ".join(ROLES),
    "union_tag_not_found": "each device needs a role: " + ", ".join(ROLES),
    "literal_error": "must be one of {expected}",
    "too_short": "must have at least {min_length} item(s)",
}


def config_problems(exc: ValidationError) -> list[str]:
    """The problems of a site configuration pydantic refused, in its words."""
    return validation_problems(exc, HINTS, tags=ROLES)


def parse(data: object, source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, config_problems(exc)) from None


def load(path: str | Path) -> Config:
    p = Path(path)
    data = read_yaml(p, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(str(p), ["(top level): must be a mapping with site, devices, tariff"])
    return parse(data, str(p))

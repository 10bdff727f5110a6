"""A command's payload: one strict JSON object, validated against its schema; `Rejected`
carries the reason a command is refused, sent in its ack."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from drivers.fileerrors import error_message, error_path


class Rejected(Exception):
    """A command the site will not honour; the message is the reason sent in the ack."""


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number in JSON")


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"{text[:20]} is out of range")
    return x


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k[:40]!r} appears twice")
        out[k] = v
    return out


def parse_json(payload: bytes) -> dict[str, Any]:
    """One JSON object; ValueError with the reason otherwise."""
    try:
        doc = json.loads(payload, parse_constant=_no_constant, parse_float=_finite,
                         object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    return doc


def validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        parts.append(f"{error_path(err['loc'], dotted=True, top='payload')}: "
                     f"{error_message(err)}")
    more = len(exc.errors()) - 3
    return "invalid: " + "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")

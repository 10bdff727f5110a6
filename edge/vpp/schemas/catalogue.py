"""The catalogue of MQTT messages: name, model, direction and topic of each, their JSON
Schemas (what `pedf-edge schema` prints) and the check that a report declares every field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel

from edge.vpp.schemas.commands import Cancel, Dispatch, DrEvent, EvSession, ModeCommand
from edge.vpp.schemas.reports import (
    Ack,
    CarbonReport,
    Devices,
    DrReport,
    Flex,
    PlanReport,
    Telemetry,
)

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

@dataclass(frozen=True, slots=True)
class Message:
    name: str
    model: type[BaseModel]
    direction: Literal["in", "out"]
    topic: str  # after <prefix>/<site>/


MESSAGES: dict[str, Message] = {m.name: m for m in (
    Message("telemetry", Telemetry, "out", "telemetry"),
    Message("devices", Devices, "out", "devices"),
    Message("flex", Flex, "out", "flex"),
    Message("ack", Ack, "out", "ack"),
    Message("dr_report", DrReport, "out", "dr/<event_id>"),
    Message("carbon", CarbonReport, "out", "carbon"),
    Message("plan", PlanReport, "out", "plan"),
    Message("dispatch", Dispatch, "in", "cmd/dispatch"),
    Message("dr_event", DrEvent, "in", "cmd/dr_event"),
    Message("mode", ModeCommand, "in", "cmd/mode"),
    Message("cancel", Cancel, "in", "cmd/cancel"),
    Message("ev_session", EvSession, "in", "cmd/ev_session"),
)}


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one message; KeyError names the known ones."""
    try:
        msg = MESSAGES[name]
    except KeyError:
        raise KeyError(f"no message {name!r}; known: {', '.join(MESSAGES)}") from None
    schema = msg.model.model_json_schema()
    arrow = "platform -> site" if msg.direction == "in" else "site -> platform"
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"pedf/v1/{msg.name}.schema.json",
        **schema,
        "title": msg.name,
        "description": f"{arrow}, topic <prefix>/<site_id>/{msg.topic}, QoS 1. "
                       + " ".join((msg.model.__doc__ or "").split()),
    }


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def undeclared(model: type[BaseModel], doc: Any, path: str = "") -> list[str]:
    """Keys of a report that its model does not declare, nested ones included: a field the
    daemon sends must be documented in the contract before a platform relies on it."""
    if not isinstance(doc, dict):
        return []
    out = []
    for key, value in doc.items():
        info = model.model_fields.get(key)
        if info is None:
            out.append(path + key)
            continue
        for sub in _models_in(info.annotation):
            for item in value if isinstance(value, list) else [value]:
                out += undeclared(sub, item, f"{path}{key}.")
    return out


def dumps(name: str | None = None) -> str:
    """One schema, or every schema keyed by message name, as indented JSON."""
    doc = json_schema(name) if name else {n: json_schema(n) for n in MESSAGES}
    return json.dumps(doc, indent=2, ensure_ascii=False)

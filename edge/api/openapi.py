"""The OpenAPI 3.1 document of the operator API (/api/v1/openapi.json): the schemas come from
the pydantic models (schemas.py, and the MQTT command models for the request bodies), the
paths are listed here."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from edge.api import schemas as s
from edge.vpp.schemas.commands import Cancel, Dispatch, EvSession, ModeCommand

PREFIX = "/api/v1"
COMMAND_MODELS: dict[str, type[BaseModel]] = {
    "dispatch": Dispatch, "mode": ModeCommand, "cancel": Cancel, "ev_session": EvSession}
_READS: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("state", s.State, "The last control cycle: site powers, SoC, mode, bounds, setpoints, "
     "instructions in force, alarms, devices not GOOD, EV chargers, demands"),
    ("devices", s.DevicesView, "Every device: role, quality, age, values and what it told "
     "about itself"),
    ("plan", s.PlanView, "The plan in force, per step: battery, SoC, grid, PV, prices, EV"),
    ("dr", s.DrView, "DR events with their M&V so far, and the final reports kept"),
    ("flex", s.FlexView, "What the flex message would say now"),
    ("today", s.TodayView, "The local day so far: import, export, PV, consumption, the bill "
     "at the configured tariff, CO2, self-consumption and green share"),
    ("tariff", s.TariffView, "The configured tariff, and its periods as absolute spans from "
     "a day before now to a day after"),
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


_NOT_YET = _json("Problem", "no control cycle has run yet")


@cache
def document() -> dict[str, Any]:
    models = [(m, "serialization") for m in (
        s.State, s.DevicesView, s.PlanView, s.HistoryView, s.DrView, s.FlexView,
        s.TodayView, s.TariffView,
        s.CommandResult, s.Problem)]
    models += [(m, "validation") for m in COMMAND_MODELS.values()]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    paths: dict[str, Any] = {}
    for name, model, summary in _READS:
        responses = {"200": _json(model.__name__, "OK")}
        if name in ("state", "flex"):
            responses["503"] = _NOT_YET
        paths[f"{PREFIX}/{name}"] = {"get": {"operationId": f"get_{name}", "summary": summary,
                                             "responses": responses}}
    stamp = {"type": "string", "format": "date-time"}
    paths[f"{PREFIX}/history"] = {"get": {
        "operationId": "get_history",
        "summary": "15-min energy intervals from the one holding `from` until `to` "
                   "(exclusive); at most 31 days from `from` (the answer's `to` says where it "
                   "ends)",
        "parameters": [
            {"name": "from", "in": "query", "required": True, "schema": stamp},
            {"name": "to", "in": "query", "required": True, "schema": stamp}],
        "responses": {"200": _json("HistoryView", "OK"),
                      "422": _json("Problem", "from or to missing, or not an ISO 8601 time "
                                   "with its offset")}}}
    paths[f"{PREFIX}/stream"] = {"get": {
        "operationId": "stream",
        "summary": "Server-Sent Events: one `state` event per cycle (data: the /state JSON)",
        "responses": {"200": {"description": "an endless event stream",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      "503": _json("Problem", "too many streams open")}}}
    for name, model in COMMAND_MODELS.items():
        paths[f"{PREFIX}/commands/{name}"] = {"post": {
            "operationId": f"command_{name}",
            "summary": f"The `{name}` command, judged, stored and acknowledged as the MQTT "
                       f"cmd/{name} is; the ack also goes out on MQTT",
            "security": [{"bearer": []}],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref(model.__name__)}}},
            "responses": {
                "200": _json("CommandResult", "accepted (or done at once)"),
                "401": {"description": "no or wrong bearer token"},
                "409": _json("CommandResult", "rejected by the site; the ack says why"),
                "413": {"description": "body longer than api.max_body_bytes, or than "
                        "vpp.max_payload_bytes (then with the ack)",
                        "content": {"application/json": {"schema": {"anyOf": [
                            _ref("Problem"), _ref("CommandResult")]}}}},
                "422": _json("CommandResult", "not JSON or off the schema; the ack names the "
                             "field"),
                "503": _json("Problem", "commands are off (vpp.commands) or the queue is full"),
            }}}
    paths[f"{PREFIX}/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document",
        "responses": {"200": {"description": "OpenAPI 3.1",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    paths["/"] = {"get": {
        "operationId": "dashboard", "summary": "The operator's live dashboard (HTML; its "
        "script and styles under /static/)",
        "responses": {"200": {"description": "the page",
                              "content": {"text/html": {"schema": {"type": "string"}}}}}}}
    paths["/metrics"] = {"get": {
        "operationId": "metrics", "summary": "Prometheus text exposition",
        "responses": {"200": {"description": "metrics",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "PEDF Edge operator API", "version": "1",
                 "description": "The site controller's state, plan, history, DR and flex, a "
                 "live stream, commands and metrics. Sign conventions: grid + import / − "
                 "export, battery + discharge / − charge; kW, kWh, %, UTC times."},
        "paths": paths,
        "components": {"schemas": top["$defs"],
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }

"""The MQTT contract with the park platform (v1), as pydantic models: one per message, in and
out. The JSON Schemas that `pedf-edge schema` prints are generated from these models, so
the documentation and the validation cannot drift apart.

Commands (platform -> site, `<prefix>/<site>/cmd/<name>`) are strict: unknown fields, wrong
types, strings for numbers, NaN/inf and times without a UTC offset are all rejected. Reports
(site -> platform) allow fields added later within v1 (consumers ignore what they do not
know); the tests check that the daemon sends no field the model does not declare.

Sign conventions: grid + import / − export, battery + discharge / − charge; kW, kWh, %, UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Ids end up in topics (dr/<event_id>) and logs: no '/', '+', '#', '$', spaces or controls.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
CmdId = Annotated[str, Field(pattern=ID_PATTERN, description="unique per command; 1-64 of A-Z a-z 0-9 _ . : - "
                             "(first alphanumeric)")]
EventId = Annotated[str, Field(pattern=ID_PATTERN, description="DR event id, same alphabet as cmd_id")]
# A sanity range only: each site's own limits are checked when a command arrives.
Kw = Annotated[float, Field(ge=-100_000, le=100_000)]
Stamp = Annotated[AwareDatetime, Field(description="ISO 8601 with a UTC offset, e.g. "
                                       "2026-06-22T04:00:00Z")]
CommandName = Literal["dispatch", "dr_event", "mode", "cancel"]
Mode = Literal["auto", "hold", "local"]


# -- commands (in) ----------------------------------------------------------------------------

class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    cmd_id: CmdId
    sent: Stamp | None = Field(None, description="when the platform sent it (informational)")


class _Window(_Command):
    start: Stamp | None = Field(None, description="window start; omitted = on receipt")
    end: Stamp | None = Field(None, description="window end (exclusive); or give duration_s")
    duration_s: float | None = Field(None, gt=0, le=10_000_000,
                                     description="window length from start; or give end")

    @model_validator(mode="after")
    def _one_end(self) -> _Window:
        if (self.end is None) == (self.duration_s is None):
            raise ValueError("give exactly one of end or duration_s")
        if self.end is not None and self.start is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Dispatch(_Window):
    """Park dispatch for a window: a grid target, or a change from the grid power at
    receipt, and/or grid bounds. Honoured with source `park` (below grid-operator DR)."""

    grid_target_kw: Kw | None = Field(None, description="hold the PCC at this power")
    grid_delta_kw: Kw | None = Field(None, description="target = PCC power at receipt + delta "
                                     "(− = import less / export more)")
    grid_max_kw: Kw | None = Field(None, description="PCC power at most this (+ import)")
    grid_min_kw: Kw | None = Field(None, description="PCC power at least this")

    @model_validator(mode="after")
    def _what(self) -> Dispatch:
        if self.grid_target_kw is not None and self.grid_delta_kw is not None:
            raise ValueError("give grid_target_kw or grid_delta_kw, not both")
        if all(v is None for v in (self.grid_target_kw, self.grid_delta_kw, self.grid_max_kw,
                                   self.grid_min_kw)):
            raise ValueError("give grid_target_kw, grid_delta_kw, grid_max_kw or grid_min_kw")
        lo = -float("inf") if self.grid_min_kw is None else self.grid_min_kw
        hi = float("inf") if self.grid_max_kw is None else self.grid_max_kw
        if lo > hi:
            raise ValueError("grid_min_kw must not exceed grid_max_kw")
        if self.grid_target_kw is not None and not lo <= self.grid_target_kw <= hi:
            raise ValueError("grid_target_kw must lie within grid_min_kw..grid_max_kw")
        return self


class DrEvent(_Window):
    """A demand-response event relayed by the platform from the grid operator. Honoured with
    source `grid_operator`, above park dispatch and the local plan."""

    event_id: EventId
    direction: Literal["reduce", "increase"] = Field(
        description="reduce: peak shaving (import less); increase: valley filling (import more)")
    kw: float | None = Field(None, gt=0, le=100_000,
                             description="amount to reduce/increase from the baseline")
    target_kw: Kw | None = Field(None, description="or: the PCC power to hold")
    baseline_kw: Kw | None = Field(None, description="the platform's baseline; else the site's")
    notice: Literal["day_ahead", "hour", "minute", "second"] = Field(
        description="notice class (日前 / 小时级 / 分钟级 / 秒级)")

    @model_validator(mode="after")
    def _amount(self) -> DrEvent:
        if (self.kw is None) == (self.target_kw is None):
            raise ValueError("give exactly one of kw or target_kw")
        return self


class ModeCommand(_Command):
    """auto: normal operation. hold: hold the PCC at its power at receipt; park dispatches
    are refused until auto. local: the platform lets go; park dispatches are ended and
    refused until auto. Grid-operator DR is honoured in every mode."""

    mode: Mode


class Cancel(_Command):
    """End an accepted dispatch (by its cmd_id) or DR event (by its event_id) now."""

    target_cmd_id: CmdId | None = None
    event_id: EventId | None = None

    @model_validator(mode="after")
    def _one(self) -> Cancel:
        if (self.target_cmd_id is None) == (self.event_id is None):
            raise ValueError("give exactly one of target_cmd_id or event_id")
        return self


COMMANDS: dict[str, type[_Command]] = {
    "dispatch": Dispatch, "dr_event": DrEvent, "mode": ModeCommand, "cancel": Cancel,
}


# -- reports (out) ----------------------------------------------------------------------------

class _Report(BaseModel):
    model_config = ConfigDict(extra="allow")

    msg_id: int = Field(ge=1, description="one sequence per site over all outboxed topics; "
                        "a gap is a loss, a repeat a duplicate to drop")
    ts: Stamp


class Counters(BaseModel):
    model_config = ConfigDict(extra="allow")

    import_kwh: float | None = None
    export_kwh: float | None = None
    pv_kwh: float | None = None
    load_kwh: float | None = None
    charge_kwh: float | None = None
    discharge_kwh: float | None = None


class Telemetry(_Report):
    """Site powers every mqtt.telemetry_s. null = a device needed for the figure is not GOOD."""

    grid_kw: float | None
    pv_kw: float | None
    bess_kw: float | None
    soc_pct: float | None = Field(ge=0, le=100)
    load_kw: float | None
    flex_load_kw: float | None = Field(None, description="switchable loads: what they draw")
    flex_loads_on: int | None = Field(None, ge=0, description="switchable loads running")
    import_kwh: float | None = Field(description="PCC meter's cumulative import counter")
    export_kwh: float | None = Field(description="PCC meter's cumulative export counter")
    counters: Counters | None = Field(None, description="cumulative kWh integrated by the site "
                                      "from every cycle (survive restarts)")
    co2_kg: float | None = Field(None, ge=0, description="cumulative emissions of grid import")
    green_share: float | None = Field(None, ge=0, le=1,
                                      description="today's share of consumption not from grey import")
    dc_bus_v: float | None = Field(None, description="DC bus voltage, when the site has one")
    mode: str = Field(description="active control functions joined by +, or safe, hold, idle, "
                      "starting")
    stale: list[str] = Field(description="devices whose values are not GOOD")
    limits_unmet: list[Literal["import_limit", "export_limit", "grid_target"]]
    alarms: list[str] = Field([], description="standing alarms, e.g. dc_bus_out_of_band:<id> "
                              "(DC bus outside nominal ± band_pct for alarm_after_cycles)")


class PollClasses(BaseModel):
    model_config = ConfigDict(extra="allow")

    fast: list[int] = Field(description="SunSpec models read every cycle")
    slow: list[int] = Field(description="SunSpec models read every slow_every cycles")
    slow_every: int | None = None


class DeviceReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    role: str
    state: Literal["good", "stale", "invalid"]
    last_good: Stamp | None
    failed_polls: int = Field(ge=0)
    errors: int = Field(ge=0)
    last_error: str | None
    protocol: str | None = None
    endpoint: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    models: list[int] | None = None
    uses: dict[str, int | list[int]] | None = Field(
        None, description="SunSpec model(s) serving each purpose, e.g. power: 124")
    heartbeats: list[str] | None = Field(None, description="controller heartbeats kept beating")
    poll: PollClasses | None = None
    map: str | None = Field(None, description="register-map devices: drivers/maps/<map>.yaml")
    vendor: str | None = None
    description: str | None = None
    address: str | None = Field(None, description="DL/T 645 meter address")
    ct_ratio: float | None = Field(None, description="DL/T 645: CT ratio its secondary values "
                                   "are multiplied by (given when not 1)")
    pt_ratio: float | None = Field(None, description="DL/T 645: PT ratio (given with ct_ratio)")


class Devices(_Report):
    """Device health every mqtt.devices_s and at start."""

    devices: list[DeviceReport]


class FlexInterval(BaseModel):
    model_config = ConfigDict(extra="allow")

    start: Stamp
    baseline_kw: float | None = Field(description="expected PCC power without any request")
    up_kw: float = Field(ge=0, description="PCC power can go this far below the baseline "
                         "(import less / export more), held for the whole interval")
    down_kw: float = Field(ge=0, description="PCC power can go this far above the baseline "
                           "(import more)")
    up_kwh: float = Field(ge=0, description="energy deliverable upward from this interval on")
    down_kwh: float = Field(ge=0, description="energy absorbable downward from this interval on")


class Flex(_Report):
    """What the site can do, every vpp.flex_s: 15-min intervals over vpp.flex_horizon_h."""

    interval_s: int = Field(gt=0)
    baseline_source: Literal["plan", "current"] = Field(
        description="plan: the planner's schedule; current: PCC power now, held")
    soc_pct: float | None = Field(ge=0, le=100)
    intervals: list[FlexInterval]


class Ack(_Report):
    """Per command: accepted or rejected at once, done when its window ends (or it is
    cancelled or superseded). A re-sent cmd_id with the same content is acknowledged again
    with its current status."""

    cmd_id: str | None = Field(description="null when the payload carried no usable cmd_id")
    command: str | None = Field(description="the command named by the topic, when known")
    status: Literal["accepted", "rejected", "done"]
    reason: str | None = Field(None, description="why rejected; how it ended when done")
    start: Stamp | None = Field(None, description="accepted window, as the site will honour it")
    end: Stamp | None = None
    grid_target_kw: float | None = None
    grid_max_kw: float | None = None
    grid_min_kw: float | None = None
    mode: Mode | None = None


class DrInterval(BaseModel):
    model_config = ConfigDict(extra="allow")

    start: Stamp
    baseline_kw: float | None
    actual_kw: float | None
    delivered_kw: float | None = Field(description="baseline − actual for reduce, actual − "
                                       "baseline for increase")
    declared_kw: float | None = Field(None, description="the amount asked for this interval")
    response_ratio: float | None = Field(description="delivered / declared")


class DrReport(_Report):
    """`dr/<event_id>`: the event's baseline and response per 15 min, and the result. Sent
    every dr.report_s, at each phase change, and once final."""

    event_id: str
    cmd_id: str | None = None
    source: Literal["grid_operator", "park"] | None = None
    direction: Literal["reduce", "increase"]
    status: Literal["pending", "active", "completed", "cancelled"]
    phase: Literal["scheduled", "ramp", "hold", "restore", "done"] | None = None
    start: Stamp | None = None
    end: Stamp | None = None
    declared_kw: float | None
    baseline_method: str | None = None
    baseline_on: Literal["import", "grid"] | None = Field(
        None, description="what the baseline and the response are measured on")
    baseline_degraded: bool | None = Field(None, description="fewer eligible days than asked")
    baseline_note: str | None = None
    baseline_days: list[str] | None = Field(None, description="days the baseline averages")
    intervals: list[DrInterval]
    delivered_kw: float | None = Field(description="mean over the event so far")
    delivered_kwh: float | None = None
    declared_kwh: float | None = None
    response_ratio: float | None
    projected_ratio: float | None = Field(None, description="where the ratio is heading at the "
                                          "event's end, at the present rate")
    alarm: bool | None = Field(None, description="projected ratio below alarm_ratio")
    alarm_ratio: float | None = None
    band: Literal["penalised", "paid", "capped"] | None = Field(
        None, description="settlement band of the response ratio")
    payable_ratio: float | None = Field(None, description="what settlement would pay on")
    missing_intervals: int | None = Field(None, ge=0, description="past intervals without data")
    result: Literal["met", "partial", "failed"] | None = Field(
        None, description="set when final: met ≥ 100 %, partial ≥ dr.penalty_below, failed below")
    final: bool


class CarbonFactor(BaseModel):
    model_config = ConfigDict(extra="allow")

    kg_per_kwh: float = Field(ge=0, description="grid emission factor as configured "
                              "(carbon.factor_kg_per_kwh)")
    year: int = Field(description="year the factor was published for")
    version: Literal["average", "excl_market_nonfossil", "fossil"] = Field(
        description="which of the three published versions")
    region: str = Field(description="national or the regional grid")
    green_import_share: float = Field(ge=0, le=1, description="share of grid import bought "
                                      "as green power, counted zero-emission")
    import_factor_kg_per_kwh: float = Field(
        ge=0, description="what grid import is multiplied by: the factor, or (1 − green share) "
        "× the residual factor when green power is bought")


class CarbonPeriod(BaseModel):
    model_config = ConfigDict(extra="allow")

    start: Stamp
    end: Stamp = Field(description="end of the period (exclusive); a day or month so far sums "
                       "the intervals up to the one just closed")
    import_kwh: float = Field(ge=0, description="metered grid import")
    load_kwh: float = Field(ge=0, description="site consumption")
    co2_kg: float = Field(ge=0, description="import × import_factor_kg_per_kwh; PV used on "
                          "site counts zero, exported PV is never claimed")
    green_share: float | None = Field(ge=0, le=1, description="share of consumption not from "
                                      "grey import; null when nothing was consumed")


class CarbonReport(_Report):
    """Emissions from the site's own metered 15-min intervals, after every quarter hour
    closes: that interval, its local day and its local month so far, and the factor used."""

    factor: CarbonFactor
    interval: CarbonPeriod
    day: CarbonPeriod
    month: CarbonPeriod


# -- catalogue ----------------------------------------------------------------------------

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
    Message("dispatch", Dispatch, "in", "cmd/dispatch"),
    Message("dr_event", DrEvent, "in", "cmd/dr_event"),
    Message("mode", ModeCommand, "in", "cmd/mode"),
    Message("cancel", Cancel, "in", "cmd/cancel"),
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

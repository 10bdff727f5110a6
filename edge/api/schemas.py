"""What the operator API answers, as pydantic models: the OpenAPI document (openapi.py) is
generated from them, and the tests check every answer against it. The MQTT contract's
models (edge/vpp/schemas/) are reused where the API says the same thing: the state carries
the telemetry message's fields, a device its `devices` entry, DR its `dr/<event_id>`
reports, flex the `flex` message, a command's answer its ack, a command's body its schema.

The views are built as plain dicts (views.py), not through these models: one cycle's
state costs no validation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from edge.vpp.schemas.fields import Stamp
from edge.vpp.schemas.reports import Ack, DeviceReport, DrReport, Flex, Telemetry, ZoneModelReport


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


def without(model: type[BaseModel], name: str, doc: str, *drop: str,
            **more: Any) -> type[BaseModel]:
    """`model`'s fields less `drop` (what only the MQTT message has, such as msg_id), plus
    `more` (name=(type, Field)), as a model of its own."""
    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in model.model_fields.items()
                              if n not in drop}
    out = create_model(name, __config__=ConfigDict(extra="allow"), **fields, **more)
    out.__doc__ = doc
    return out


class Bounds(_View):
    """The PCC window the last decision kept the site in; null: no such bound."""

    import_limit_kw: float | None = Field(description="PCC power at most this (+ import)")
    export_limit_kw: float | None = Field(description="PCC power at least minus this; "
                                          "negative: a floor on import")
    grid_target_kw: float | None = Field(description="the PCC power aimed at, if any")
    soft_import_cap_kw: float | None = Field(description="the plan's peak cap (not shed for)")
    clipped: bool = Field(description="an instruction's bound fell outside the site limits")


class InstructionView(_View):
    """A DR, park dispatch or plan instruction the last decision applied."""

    id: str
    source: Literal["grid_operator", "park", "plan"] | None = Field(
        description="null: it has left the book since the decision")
    start: Stamp | None
    end: Stamp | None
    grid_max_kw: float | None
    grid_min_kw: float | None
    grid_target_kw: float | None


class DemandView(_View):
    """Energy a device must receive by a deadline (an EV session)."""

    device_id: str
    energy_kwh: float = Field(description="still needed")
    deadline: Stamp
    max_kw: float


State = without(
    Telemetry, "State", "The last control cycle: the telemetry message's figures (taken "
    "at the cycle, not at the telemetry period) and what the decision did.",
    "msg_id", "counters", "co2_kg", "green_share",
    cycle=(int, Field(ge=0, description="cycles run since the daemon started")),
    expected_grid_kw=(float | None, Field(description="PCC power the decision expects "
                                          "after its writes")),
    bounds=(Bounds, Field()),
    setpoints=(dict[str, dict[str, float | None]], Field(
        description="role -> device id -> the setpoint decided (kW, %, 0/1, V)")),
    instructions=(list[InstructionView], Field(description="instructions in force")),
    not_good=(dict[str, Literal["stale", "invalid"]], Field(
        description="devices that are not GOOD, with their quality")),
    demands=(list[DemandView], Field(description="standing energy demands")),
    failed_functions=(list[str], Field(description="control functions that failed")),
    crashed=(bool, Field(description="the decision failed: this is the safe state")),
)


DeviceView = without(
    DeviceReport, "DeviceView", "One device: its `devices` report entry, its quality and "
    "its last values.",
    quality=(Literal["good", "stale", "invalid"], Field()),
    age_s=(float | None, Field(description="(simulated) seconds since its last good read")),
    values=(dict[str, float | None], Field(description="last known values, whatever "
                                           "their quality; null: not a number")),
    stale_keys=(list[str], Field(description="slow values read too long ago")),
)


class DevicesView(_View):
    ts: Stamp
    devices: list[DeviceView]  # type: ignore[valid-type]


class PlanStep(_View):
    start: Stamp
    end: Stamp
    grid_kw: float | None = Field(description="+ import / − export")
    bess_kw: float | None = Field(description="all batteries, + discharge / − charge")
    pv_kw: float | None = Field(description="PV used")
    soc_pct: float | None = Field(description="site SoC at the step's end")
    import_price: float | None = Field(description="tariff per kWh, time-weighted over the step")
    export_price: float
    ev_kw: float = Field(description="EV charging planned, all chargers")
    ev_kw_by_device: dict[str, float]


ZoneModelView = without(ZoneModelReport, "ZoneModelView", "The RC model the planner uses "
                        "for one HVAC zone, and where it comes from.")


class PlannerView(_View):
    solves: int
    failures: int = Field(description="rounds that fell back")
    last_at: Stamp | None
    last_trigger: str
    last_status: str
    last_reason: str
    last_solve_s: float | None
    last_build_s: float | None
    restarts: int | None = Field(description="worker restarts (null: planner in process)")
    zones: list[ZoneModelView] = Field(description="per HVAC zone, the model plans use")


class PlanView(_View):
    """The plan in force, step by step."""

    ts: Stamp
    enabled: bool = Field(description="planner.enabled")
    status: str | None = Field(description="optimal, time_limit, fallback; null: no plan")
    reason: str | None
    start: Stamp | None
    end: Stamp | None
    step_s: int | None
    soc_start_pct: float | None
    objective: float | None
    peak_kw: float | None
    currency: str
    planner: PlannerView | None
    steps: list[PlanStep]


class HistoryInterval(_View):
    start: Stamp
    end: Stamp
    import_kwh: float
    export_kwh: float
    pv_kwh: float
    load_kwh: float = Field(description="the building, without EV charging")
    ev_kwh: float
    charge_kwh: float
    discharge_kwh: float
    covered_s: float = Field(description="seconds of the interval with a GOOD grid reading")


class HistoryView(_View):
    """The site's own 15-min energy intervals, from its history store."""

    from_: Stamp = Field(alias="from")
    to: Stamp
    interval_s: int
    intervals: list[HistoryInterval]


DrReportView = without(DrReport, "DrReportView", "A DR event's baseline, response and "
                       "result as its `dr/<event_id>` report has them, computed now.",
                       "msg_id")


class DrWaiting(_View):
    """An event whose realtime baseline waits for its reference interval."""

    event_id: str
    cmd_id: str | None
    source: Literal["grid_operator", "park"]
    direction: Literal["reduce", "increase"]
    start: Stamp
    end: Stamp


class DrView(_View):
    ts: Stamp
    events: list[DrReportView]  # type: ignore[valid-type]
    waiting: list[DrWaiting]
    finals: list[DrReportView]  # type: ignore[valid-type]


FlexView = without(Flex, "FlexView", "What the flex message would say now.", "msg_id")

CommandAck = without(
    Ack, "CommandAck", "A command's ack, as it went to the outbox for MQTT.", "msg_id",
    msg_id=(int | None, Field(description="its msg_id on MQTT; null: the outbox refused it")))


class CommandResult(_View):
    """The acks a command got: its own (`ack`, the last) and any it caused (a dispatch
    ends those it supersedes)."""

    ack: CommandAck  # type: ignore[valid-type]
    acks: list[CommandAck]  # type: ignore[valid-type]
    detail: str | None = Field(None, description="why the request was refused (422, 413)")


class Problem(_View):
    detail: str


class TodayView(_View):
    """The site's local day from midnight until now, from its own 15-min history and the
    quarter hour in progress, billed at the configured tariff (no demand charge: that is
    billed on the month's peak)."""

    ts: Stamp
    day: str = Field(description="the local date, YYYY-MM-DD")
    timezone: str
    from_: Stamp = Field(alias="from", description="local midnight")
    to: Stamp
    currency: str
    import_kwh: float
    export_kwh: float
    pv_kwh: float
    consumed_kwh: float = Field(description="the building and its EVs")
    charge_kwh: float
    discharge_kwh: float
    import_cost: float = Field(description="import at its period's price")
    export_revenue: float = Field(description="export at the export price")
    bill: float = Field(description="import cost − export revenue")
    self_consumption_pct: float | None = Field(
        description="share of the PV energy used on site; null: no PV yet")
    co2_kg: float = Field(description="grid import × carbon.import_factor")
    green_share: float | None = Field(description="share of consumption not from grey "
                                      "import; null: nothing consumed yet")
    covered_s: float = Field(description="seconds of the day with a GOOD grid reading")


class TariffPeriod(_View):
    name: str
    start: str = Field(description="local HH:MM")
    end: str = Field(description="local HH:MM")
    price: float


class TariffSpan(_View):
    name: str
    price: float
    start: Stamp
    end: Stamp


class TariffView(_View):
    """The configured tariff, and its periods as absolute spans from a day before now to a
    day after."""

    ts: Stamp
    timezone: str
    currency: str
    export_price: float
    demand_charge_per_kw: float
    periods: list[TariffPeriod]
    spans: list[TariffSpan]

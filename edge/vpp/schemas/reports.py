"""Reports (site -> platform): fields added later within v1 are allowed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.vpp.schemas.fields import Mode, Stamp


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
    ev_kwh: float | None = None


class ChargerState(BaseModel):
    """One EV charger as the last poll saw it ("Offline": not reachable)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV",
                    "Finishing", "Reserved", "Unavailable", "Faulted", "Offline"]
    kw: float | None = Field(None, ge=0, description="what the car draws")
    a: float | None = Field(None, ge=0, description="highest phase current")
    offered_a: float | None = Field(None, ge=0, description="the limit in force (0: paused)")
    soc_pct: float | None = Field(None, ge=0, le=100, description="when the car tells")
    session_kwh: float | None = Field(None, ge=0, description="energy of the running session")


class Telemetry(_Report):
    """Site powers every mqtt.telemetry_s. null = a device needed for the figure is not GOOD."""

    grid_kw: float | None
    pv_kw: float | None
    bess_kw: float | None
    soc_pct: float | None = Field(ge=0, le=100)
    load_kw: float | None = Field(description="the building, without EV charging (ev_kw)")
    flex_load_kw: float | None = Field(None, description="switchable loads: what they draw")
    flex_loads_on: int | None = Field(None, ge=0, description="switchable loads running")
    ev_kw: float | None = Field(None, ge=0, description="EV chargers: what the cars draw")
    hvac_kw: float | None = Field(None, ge=0, description="HVAC units: their electric power")
    zone_temp_c: float | None = Field(None, description="HVAC units: mean zone temperature")
    tes_kw: float | None = Field(None, description="thermal storage: + charging, - discharging")
    ev_charging: int | None = Field(None, ge=0, description="EV chargers with a transaction")
    ev_chargers: dict[str, ChargerState] = Field(
        default_factory=dict, description="each EV charger by device id")
    import_kwh: float | None = Field(description="PCC meter's cumulative import counter")
    export_kwh: float | None = Field(description="PCC meter's cumulative export counter")
    counters: Counters | None = Field(None, description="cumulative kWh integrated by the site "
                                      "from every cycle (survive restarts)")
    co2_kg: float | None = Field(None, ge=0, description="cumulative emissions of grid import")
    green_share: float | None = Field(None, ge=0, le=1,
                                      description="today's share of consumption not from grey import")
    dc_bus_v: float | None = Field(None, description="DC bus voltage, when the site has one")
    grid_state: Literal["on_grid", "islanding", "island", "resync", "black_start"] | None = Field(
        None, description="a microgrid's grid state (with a PCC breaker); null: no island "
        "operation")
    breaker_closed: bool | None = Field(None, description="the PCC breaker's position, when the "
                                        "site has one")
    reason: str | None = Field(None, description="why, in one line: what steers the grid "
                               "(plan, dispatch, DR event or the control functions) and which "
                               "limit binds")
    mode: str = Field(description="what steers the grid: plan, dispatch, dr (an instruction in "
                      "force), else the active control functions joined by +; or safe, hold, "
                      "idle, starting")
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
    device_id: str | None = Field(None, description="ev_session: the charger")
    session: int | None = Field(None, ge=0, description="ev_session: the charger's session "
                                "the request is for (0: the next car to plug in)")
    departure: Stamp | None = Field(None, description="ev_session: the departure now in force")
    energy_kwh: float | None = Field(None, description="ev_session: the energy still needed, "
                                     "as of the command")


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


class PlanStep(BaseModel):
    model_config = ConfigDict(extra="allow")

    start: Stamp = Field(description="start of the step; the plan's powers are step averages")
    grid_kw: float = Field(description="planned PCC power, + import / − export (EV charging in it)")
    bess_kw: float = Field(description="all batteries, + discharge / − charge")
    soc_pct: float | None = Field(ge=0, le=100, description="site SoC at the end of the step "
                                  "(capacity-weighted); null without a battery")
    import_price: float = Field(description="per kWh in `currency`, from the tariff")
    export_price: float = Field(description="per kWh in `currency`")
    pv_kw: float = Field(ge=0, description="PV forecast: what the panels can give")
    pv_used_kw: float = Field(ge=0, description="PV the plan uses; the rest is curtailed")
    load_kw: float = Field(description="load forecast of the building, without EV charging")
    ev_kw: dict[str, float] = Field(default_factory=dict, description="planned EV charging "
                                    "per charger (device id); chargers at 0 are left out")


class ZoneModelReport(BaseModel):
    device: str
    source: Literal["configured", "fitted"] = Field(description="fitted: identified from the "
                                                    "zone's own history")
    r_k_per_kw: float
    c_kwh_per_k: float
    gains_kw: float
    rms_k: float | None = Field(description="the fit's one-step RMS error, K; null: no fit")
    days: float = Field(ge=0, description="days of usable history the fit saw")
    reason: str


class PlanReport(_Report):
    """The plan the planner adopted, sent once per adoption (every planner.replan_min and
    when a DR event, a dispatch or the EV sessions change), never per cycle: its steps over
    planner.horizon_h, with the forecasts and prices it was made from. A round that fails
    sends nothing; the site then keeps the previous plan for a while or controls by rules
    (telemetry `mode` says which)."""

    plan_id: str = Field(description="when the plan was made, UTC to the millisecond, e.g. "
                         "20260622T020012.345Z; a later plan replaces an earlier one")
    made_at: Stamp
    status: Literal["optimal", "time_limit"] = Field(
        description="time_limit: the best schedule found within planner.time_limit_s")
    trigger: str = Field(description="what started the round: schedule, retry, or the event "
                         "(commitments changed: +<id>, demands changed: ...)")
    reason: str = Field(description="what the plan cannot meet (a commitment short by kWh, "
                        "below the reserve, an EV short); empty when it meets everything")
    currency: str
    objective: float = Field(description="energy cost + demand charge + battery wear over "
                             "the horizon")
    energy_cost: float = Field(description="import cost − export revenue over the horizon")
    demand_charge: float = Field(description="demand_charge_per_kw × peak_kw")
    peak_kw: float = Field(description="billing peak the plan holds: 15-min mean net import, "
                           "the month's so far included")
    ev_short_kwh: dict[str, float] = Field(default_factory=dict, description="per EV charger, "
                                           "the kWh its car will lack at its departure")
    start: Stamp = Field(description="start of step 0 on the step grid; step 0 runs from "
                         "made_at")
    step_s: int = Field(gt=0)
    soc_start_pct: float | None = Field(ge=0, le=100, description="site SoC the plan started "
                                        "from; null without a battery")
    zone_models: list[ZoneModelReport] = Field(default_factory=list, description="per HVAC "
                                               "zone, the RC model the plan was made with")
    steps: list[PlanStep]

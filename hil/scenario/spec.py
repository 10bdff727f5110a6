"""The scenario file's schema (hil/scenarios/*.yaml): series, overrides and events, validated
as written; hil/scenario/__init__.py resolves it into a run."""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from drivers.fileerrors import FileError
from edge.config import TariffPeriod

BILLING_S = 900  # demand is metered, and the optimum solved, on 15-min means


class ScenarioError(FileError):
    """Invalid scenario; `problems` holds one `path: message` line each."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeriesSpec(_Model):
    """One series: `values` inline, or `column` of `csv` (a path relative to the scenario
    file); multiplied by `scale` (e.g. kW per kWp × the site's kWp)."""

    values: list[float] | None = None
    csv: str | None = None
    column: str | None = None
    scale: float = Field(1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _inline_list(cls, data: object) -> object:
        return {"values": data} if isinstance(data, list) else data

    @model_validator(mode="after")
    def _one_source(self) -> SeriesSpec:
        if (self.values is None) == (self.csv is None):
            raise ValueError("give either values: [...] or csv: FILE with column: NAME")
        if self.csv is not None and self.column is None:
            raise ValueError("csv needs column: the name of the column to read")
        if self.values is not None and self.column is not None:
            raise ValueError("column only applies with csv")
        return self


class SeriesConfig(_Model):
    pv_kw: SeriesSpec = Field(description="available PV, kW (before any curtailment)")
    load_kw: SeriesSpec = Field(description="building load, kW")


class TariffOverride(_Model):
    """Replaces the given parts of the site's tariff for the run."""

    currency: str | None = None
    periods: list[TariffPeriod] | None = Field(None, min_length=1)
    export_price: float | None = Field(None, ge=0)
    demand_charge_per_kw: float | None = Field(
        None, ge=0, description="on the run's 15-min peak: prorate a monthly charge to the run")


class LimitsOverride(_Model):
    """PCC limits for the run; a key given as null removes the site's limit."""

    import_limit_kw: float | None = Field(None, gt=0)
    export_limit_kw: float | None = Field(None, ge=0)


class _Event(_Model):
    at: str = Field(description="'HH:MM' (local time of the start day, at or after the start) "
                    "or an ISO time with UTC offset")
    duration_min: float = Field(gt=0)

    @field_validator("at")
    @classmethod
    def _time(cls, value: str) -> str:
        try:
            if len(value) <= 5:
                time.fromisoformat(value)
            elif datetime.fromisoformat(value).tzinfo is None:
                raise ValueError
        except ValueError:
            raise ValueError("expected 'HH:MM' or an ISO time with UTC offset, e.g. "
                             "2026-07-15T14:00:00+08:00") from None
        return value


class DeviceOffline(_Event):
    """The device stops answering on the wire (its physics keeps running)."""

    type: Literal["device_offline"]
    device: str


class DrEvent(_Event):
    """A grid-operator instruction on the PCC (import ≤ grid_max_kw, ≥ grid_min_kw, or a
    target), announced `notice_min` before it starts."""

    type: Literal["dr_event"]
    id: str | None = None
    grid_max_kw: float | None = None
    grid_min_kw: float | None = None
    grid_target_kw: float | None = None
    notice_min: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _some_bound(self) -> DrEvent:
        if self.grid_max_kw is None and self.grid_min_kw is None and self.grid_target_kw is None:
            raise ValueError("give grid_max_kw, grid_min_kw or grid_target_kw")
        if (self.grid_max_kw is not None and self.grid_min_kw is not None
                and self.grid_min_kw > self.grid_max_kw):
            raise ValueError("grid_min_kw must not exceed grid_max_kw")
        return self


class PriceSpike(_Event):
    """The import price is `import_price` for the window (a scarcity price, a critical-peak
    day). The controller is not told: only the HIL bill and the references see it."""

    type: Literal["price_spike"]
    import_price: float = Field(ge=0)


class GridOutage(_Event):
    """The grid beyond the PCC breaker goes dead for the window (a microgrid's outage);
    `breaker_fails_to_open`: the breaker ignores open commands during it."""

    type: Literal["grid_outage"]
    breaker_fails_to_open: bool = False


Event = Annotated[DeviceOffline | DrEvent | PriceSpike | GridOutage,
                  Field(discriminator="type")]


class ScenarioFile(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    start: datetime = Field(description="with UTC offset, e.g. 2026-07-15T00:00:00+08:00")
    step_s: int = Field(900, ge=60, le=3600, description="one series value per step")
    duration_h: float = Field(gt=0, le=24 * 14)
    history_days: int = Field(0, ge=0, le=60, description="days of series before `start`: "
                              "the site's history the controller's forecasts learn from")
    series: SeriesConfig
    tariff: TariffOverride | None = None
    limits: LimitsOverride | None = None
    initial_soc_pct: float | None = Field(None, ge=0, le=100, description="every battery")
    terminal_value_per_kwh: float | None = Field(
        None, ge=0, description="worth of energy left in the batteries at the end (all "
        "strategies are charged/credited the same); default the lowest import price")
    events: list[Event] = []

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give an explicit UTC offset, e.g. 2026-07-15T00:00:00+08:00")
        if value.timestamp() % BILLING_S:
            raise ValueError("must fall on a quarter hour (the billing interval)")
        return value

    @field_validator("step_s")
    @classmethod
    def _step(cls, value: int) -> int:
        if BILLING_S % value and value % BILLING_S:
            raise ValueError("must divide 900 (60, 300, 900 ...) or be a multiple of it")
        return value

    @field_validator("duration_h")
    @classmethod
    def _whole(cls, value: float, info: ValidationInfo) -> float:
        run_s = value * 3600
        if abs(run_s / BILLING_S - round(run_s / BILLING_S)) > 1e-9:
            raise ValueError("must be whole quarter hours (0.25, 0.5, ... 24)")
        step = info.data.get("step_s")
        if step and abs(run_s / step - round(run_s / step)) > 1e-9:
            raise ValueError(f"must be a whole number of steps of step_s ({step} s)")
        return value

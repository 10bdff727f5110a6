"""The simulator's settings that the site YAML carries (`sim:` per device, `hil:` at the
top). The daemon keeps them as opaque mappings (edge/config) and ignores them; the simulator
reads them through `sim_of` and `hil_of`, and `problems` lets the command line refuse a bad
one before anything starts, in the words of every other config problem."""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from edge.config import Config, DeviceConfig, config_problems
from edge.config.model import _Model
from hil.thermal import ZoneSim

# SunSpec models the HIL simulators can serve (which ones a role needs: hil/devices/variants.py).
SIM_SUNSPEC_MODELS = (1, 101, 102, 103, 111, 112, 113, 120, 121, 123, 124, 201, 202, 203, 204,
                      701, 702, 704, 713, 715, 802)


def _hhmm(value: object) -> object:
    """'HH:MM' strings only: YAML reads an unquoted 07:30 as the number 450."""
    if not isinstance(value, str):
        raise ValueError(f"write the time as a quoted 'HH:MM', e.g. '07:30' (got {value!r}; "
                         "YAML reads 07:30 without quotes as a number)")
    try:
        parsed = time.fromisoformat(value)
    except ValueError:
        raise ValueError(f"expected 'HH:MM', e.g. '07:30'; got {value!r}") from None
    if len(value) != 5 or parsed.second:
        raise ValueError(f"expected 'HH:MM', e.g. '07:30'; got {value!r}")
    return value


HhMm = Annotated[str, BeforeValidator(_hhmm)]


def minute_of_day(hhmm: str) -> int:
    t = time.fromisoformat(hhmm)
    return t.hour * 60 + t.minute


class Arrival(_Model):
    """One car that plugs into an EV charger every simulated day (a commuter): from `arrive`
    to `depart`, local time (a departure before the arrival is the next morning)."""

    arrive: HhMm = Field(description="'HH:MM' local: the car plugs in")
    depart: HhMm = Field(description="'HH:MM' local: the car leaves (transaction stops)")
    capacity_kwh: float = Field(60.0, gt=0, le=300, description="usable battery")
    soc_pct: float = Field(30.0, ge=0, le=100, description="state of charge on arrival")
    car_phases: Literal[1, 3] = Field(3, description="phases the car's on-board charger uses")
    car_max_a: float = Field(32.0, gt=0, le=500, description="per phase, what the car takes")
    reports_soc: bool = Field(False, description="the car tells its SoC (MeterValues SoC)")
    taper_from_pct: float = Field(80.0, ge=0, le=100, description="above this SoC the car "
                                  "takes less and less, down to a tenth at 100 %")
    connector: int = Field(1, ge=1, le=4, description="the connector it plugs into")
    id_tag: str = Field("SIMCAR", min_length=1, max_length=20, description="the RFID it shows")

    @model_validator(mode="after")
    def _stays(self) -> Arrival:
        if self.arrive == self.depart:
            raise ValueError("depart must differ from arrive")
        return self

    def minutes(self) -> tuple[int, int]:
        """[arrive, depart) in minutes of the day; depart < arrive wraps past midnight."""
        return minute_of_day(self.arrive), minute_of_day(self.depart)


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Two daily stays [arrive, depart) share a minute (either may wrap past midnight)."""
    def spans(x: tuple[int, int]) -> list[tuple[int, int]]:
        return [x] if x[0] < x[1] else [(x[0], 1440), (0, x[1])]
    return any(lo1 < hi2 and lo2 < hi1 for lo1, hi1 in spans(a) for lo2, hi2 in spans(b))


class SimParams(_Model):
    """Physics of the simulated device (a device's `sim:`)."""

    peak_kw: float | None = Field(None, gt=0, description="PV: clear-sky peak output")
    profile: Literal["office", "flat"] = "office"
    base_kw: float = Field(30.0, ge=0, description="load: night/base load")
    day_kw: float = Field(100.0, ge=0, description="load: working-hours load")
    initial_soc_pct: float = Field(50.0, ge=0, le=100)
    cloud_factor: float = Field(1.0, ge=0, le=1)
    models: list[int] | None = Field(
        None, description="SunSpec: the model chain served, e.g. [1, 701, 702, 704, 715] "
        "(default: the role's chain of 1xx/2xx models)")
    heartbeat_timeout_s: float = Field(
        30.0, gt=0, description="SunSpec 715/802: reversion when the controller heartbeat "
        "stops changing for this long")
    droop_pct: float = Field(5.0, gt=0, le=20, description="dcdc: bus voltage drop at rated "
                             "power, % of nominal (the converter's droop slope)")
    # EV charger (hil/devices/evcharger.py): the charge point and the cars that use it.
    ocpp_version: Literal["1.6", "2.0.1"] = Field("1.6", description="ev_charger: the OCPP "
                                                  "version it speaks to the CSMS")
    arrivals: list[Arrival] = Field(default_factory=list, description="ev_charger: the cars "
                                    "that plug in every day")
    ignores_below_min: bool = Field(False, description="ev_charger: its cars keep drawing "
                                    "min_current_a when offered less (but more than 0)")
    ramp_s: float = Field(3.0, ge=0, le=60, description="ev_charger: how long a car takes "
                          "to follow a new limit")
    rejects_tx_default: bool = Field(False, description="ev_charger: answers Rejected to a "
                                     "TxDefaultProfile (the CSMS must use TxProfile)")
    drops_at: list[HhMm] = Field(default_factory=list, description="ev_charger: local "
                                "'HH:MM' each day at which it drops its connection to the CSMS")
    offline_s: float = Field(0.0, ge=0, le=86400, description="ev_charger: simulated seconds "
                             "it stays disconnected after each drop before it reconnects")
    meter_every_s: float = Field(60.0, ge=1, le=3600, description="ev_charger: MeterValues "
                                 "interval during a transaction, simulated seconds")
    zone: ZoneSim | None = Field(None, description="hvac: the zone it conditions (weather, "
                                 "occupancy, RC model, its own thermostat)")
    max_stack_level: int = Field(8, ge=1, le=100, description="ev_charger: highest charging "
                                 "profile stack level it accepts")
    operate_s: float = Field(0.1, ge=0, le=30, description="breaker: time from a command to "
                             "the new position")
    fails_to_open: bool = Field(False, description="breaker: ignores open commands (a stuck "
                                "mechanism)")
    form_s: float = Field(0.5, ge=0, le=30, description="battery: time from grid_mode 1 to "
                          "the PCS forming the grid (it delivers nothing meanwhile)")
    detect_ms: float = Field(10.0, ge=0, le=1000, description="battery with auto_transfer: "
                             "its loss-of-mains detection, from the grid's loss to its trip "
                             "of the PCC switch")
    overload_pct: float = Field(100.0, ge=100, le=300, description="battery: what a forming "
                                "PCS delivers for overload_s, % of max_discharge_kw")
    overload_s: float = Field(0.0, ge=0, le=600, description="battery: how long a forming PCS "
                              "carries its overload before the island collapses")
    ride_through_s: float = Field(0.02, ge=0, le=10, description="load: the longest break it "
                                  "rides through (its hold-up time, ITIC / SEMI F47: ~20 ms); "
                                  "a critical load's longer break counts as unserved in full")

    @field_validator("models")
    @classmethod
    def _sunspec_chain(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return value
        if unknown := [m for m in value if m not in SIM_SUNSPEC_MODELS]:
            raise ValueError(f"the HIL does not simulate SunSpec model(s) {unknown}; it serves "
                             f"{', '.join(map(str, SIM_SUNSPEC_MODELS))}")
        if not value or value[0] != 1:
            raise ValueError("a SunSpec chain starts with model 1 (common), e.g. [1, 701, 702, 704, 715]")
        if len(set(value)) != len(value):
            raise ValueError("list each SunSpec model once")
        return value

    @model_validator(mode="after")
    def _one_car_per_connector(self) -> SimParams:
        for i, a in enumerate(self.arrivals):
            for j, b in enumerate(self.arrivals[:i]):
                if a.connector == b.connector and _overlap(a.minutes(), b.minutes()):
                    raise ValueError(
                        f"arrivals[{i}] ({a.arrive}-{a.depart}) overlaps arrivals[{j}] "
                        f"({b.arrive}-{b.depart}) on connector {a.connector}; one car per "
                        "connector at a time: move one or give it another connector")
        return self


class HilConfig(_Model):
    """Simulated clock of the HIL (the top-level `hil:`): start instant and default speed-up."""

    start: datetime = datetime.fromisoformat("2026-06-22T00:00:00+08:00")
    speed: float = Field(1.0, gt=0, le=10000)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give an explicit UTC offset, e.g. 2026-06-22T00:00:00+08:00")
        return value


def sim_of(dev: DeviceConfig) -> SimParams:
    """The device's `sim:` settings (a config `problems` found nothing wrong with)."""
    return SimParams.model_validate(dev.sim)


def hil_of(config: Config) -> HilConfig:
    """The site's `hil:` settings (a config `problems` found nothing wrong with)."""
    return HilConfig.model_validate(config.hil)


class _SimDevice(_Model):
    sim: SimParams


class _SimSections(_Model):
    """The simulator's sections at their places in the site YAML, so that each problem
    names its path there (`devices[2].sim.models`, `hil.start`)."""

    devices: list[_SimDevice]
    hil: HilConfig


def problems(config: Config) -> list[str]:
    """Every problem of the config's `sim:` and `hil:` sections, one `path: what` line each,
    worded as edge.config words the rest."""
    try:
        _SimSections.model_validate(
            {"devices": [{"sim": d.sim} for d in config.devices], "hil": config.hil})
    except ValidationError as exc:
        return config_problems(exc)
    out = []
    for i, d in enumerate(config.devices):  # cars on connectors the charger has
        n = getattr(d, "connectors", None)
        out += [f"devices[{i}].sim.arrivals[{j}].connector: {a.connector}, but the device has "
                f"{n} connector(s)" for j, a in enumerate(sim_of(d).arrivals)
                if n is not None and a.connector > n]
    return out

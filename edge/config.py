"""Site configuration: the pydantic models at the YAML boundary, and a loader whose errors
name the field and the fix.

Sign conventions (everywhere): grid +import/-export, battery +discharge/-charge, PV >= 0.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveKw = Annotated[float, Field(gt=0)]
Pct = Annotated[float, Field(ge=0, le=100)]


class SiteConfig(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str = ""
    timezone: str = "UTC"
    latitude: float = Field(31.23, ge=-90, le=90)
    longitude: float = Field(121.47, ge=-180, le=180)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Asia/Shanghai)") from exc
        return value


class SimParams(_Model):
    """Physics of the simulated device; read only by the HIL simulator."""

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


# SunSpec models the HIL simulators can serve (which ones a role needs: hil/sunspec_variants.py).
SIM_SUNSPEC_MODELS = (1, 101, 102, 103, 111, 112, 113, 120, 121, 123, 124, 201, 202, 203, 204,
                      701, 702, 704, 713, 715, 802)


class SerialParams(_Model):
    """An RS-485 bus (Modbus RTU, DL/T 645). Devices on one port share it."""

    port: str = Field(description="e.g. /dev/ttyUSB0")
    baudrate: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


Protocol = Literal["sunspec-tcp", "sunspec-rtu", "modbus-tcp", "modbus-rtu", "dlt645-tcp",
                   "dlt645-serial"]
_SERIAL_PROTOCOLS = {"sunspec-rtu", "modbus-rtu", "dlt645-serial"}
# Framing families: units of one family may share a port or a bus, two families never.
_BUS_FAMILY = {"sunspec-rtu": "Modbus RTU", "modbus-rtu": "Modbus RTU",
               "dlt645-serial": "DL/T 645", "sunspec-tcp": "Modbus TCP",
               "modbus-tcp": "Modbus TCP", "dlt645-tcp": "DL/T 645"}
# Reply timeout when a device gives none: a Modbus reply over TCP or a 9600 bit/s bus comes
# within tens of ms; a DL/T 645 reply at 2400 bit/s spends ~0.25 s on the wire alone.
_DEFAULT_TIMEOUT_S = {"dlt645-tcp": 0.5, "dlt645-serial": 0.5}
_TIMEOUT_S = 0.3


def poll_deadline_s(cycle_s: float) -> float:
    """How long the control cycle waits for one device's poll (edge/cycle.py)."""
    return max(0.8 * cycle_s, 0.2)


def default_timeout_s(protocol: str, cycle_s: float) -> float:
    """The protocol's default, cut to half the poll deadline: a silent unit on a shared bus
    then leaves the other half of the cycle to its neighbours."""
    return min(_DEFAULT_TIMEOUT_S.get(protocol, _TIMEOUT_S), poll_deadline_s(cycle_s) / 2)


class BmsParams(_Model):
    """A battery's BMS on its own unit id behind the same connection or bus (where the PCS
    does not relay it): cell voltages, temperatures and limits, read through its register
    map for monitoring (`bms.` keys in the battery's reading); control uses the PCS."""

    map: str = Field(pattern=r"^[a-z0-9_-]+$", description="drivers/maps/<map>.yaml")
    unit_id: int = Field(ge=0, le=247)


class _DeviceBase(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    protocol: Protocol = "sunspec-tcp"
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    serial: SerialParams | None = None
    unit_id: int = Field(1, ge=0, le=247)
    map: str | None = Field(None, pattern=r"^[a-z0-9_-]+$", description="drivers/maps/<map>.yaml")
    address: str | None = Field(None, pattern=r"^[0-9]{12}$", description="DL/T 645 address")
    timeout_s: float = Field(_TIMEOUT_S, gt=0, le=30, description="reply timeout; default "
                             "per protocol (0.3 s, DL/T 645 0.5 s), at most half the poll deadline")
    sim: SimParams = SimParams()

    @model_validator(mode="before")
    @classmethod
    def _dlt645_line(cls, data: object) -> object:
        """DL/T 645 meters default to 2400 bit/s 8E1 (DOMAIN §5), not Modbus's 9600 8N1."""
        if (isinstance(data, dict) and data.get("protocol") == "dlt645-serial"
                and isinstance(data.get("serial"), dict)):
            data = {**data, "serial": {"baudrate": 2400, "parity": "E", **data["serial"]}}
        return data

    @model_validator(mode="after")
    def _protocol_needs(self) -> _DeviceBase:
        if self.protocol in _SERIAL_PROTOCOLS and self.serial is None:
            raise ValueError(f"protocol {self.protocol} needs serial: {{port: /dev/ttyUSB0, ...}}")
        if self.protocol.startswith("modbus-") and self.map is None:
            raise ValueError(f"protocol {self.protocol} needs map: <name of drivers/maps/*.yaml>")
        if self.protocol.startswith("dlt645-") and self.address is None:
            raise ValueError("DL/T 645 needs the meter address: 12 digits, e.g. '000000000001'")
        return self

    @property
    def endpoint(self) -> tuple[str, int | str]:
        """Where the device lives: a TCP host:port or a serial port, shared by its units."""
        if self.serial is not None and self.protocol in _SERIAL_PROTOCOLS:
            return ("serial", self.serial.port)
        return (self.host, self.port)


class PvDevice(_DeviceBase):
    role: Literal["pv"]
    rated_kw: PositiveKw
    ramp_kw_per_s: PositiveKw = 1000.0
    revert_s: int = Field(60, ge=5, le=3600, description="device reverts limits after this")
    safe_limit_pct: Pct | None = Field(
        None, description="PV level when the PCC meter is lost; default 0 on an export-limited "
        "site (DOMAIN §3: drop PV to a safe level), else 100",
    )
    tilt_deg: float = Field(20.0, ge=0, le=90, description="array tilt, for the PV forecast")
    azimuth_deg: float = Field(180.0, ge=0, lt=360, description="array azimuth, 180 = south")


class BatteryDevice(_DeviceBase):
    role: Literal["battery"]
    capacity_kwh: PositiveKw
    max_charge_kw: PositiveKw
    max_discharge_kw: PositiveKw
    soc_min_pct: Pct = 10.0
    soc_max_pct: Pct = 95.0
    charge_efficiency: float = Field(0.95, gt=0, le=1)
    discharge_efficiency: float = Field(0.95, gt=0, le=1)
    ramp_kw_per_s: PositiveKw = 1000.0
    revert_s: int = Field(60, ge=5, le=3600)
    safe_power_kw: float = 0.0
    bms: BmsParams | None = Field(None, description="a BMS on its own unit id, read for "
                                  "monitoring (map-driven batteries)")

    def deliverable_kwh(self, soc_pct: float) -> float:
        """AC energy the battery can still give before soc_min (after discharge losses)."""
        return max(soc_pct - self.soc_min_pct, 0.0) / 100 * self.capacity_kwh * self.discharge_efficiency

    def absorbable_kwh(self, soc_pct: float) -> float:
        """AC energy the battery can still take before soc_max (before charge losses)."""
        return max(self.soc_max_pct - soc_pct, 0.0) / 100 * self.capacity_kwh / self.charge_efficiency

    @model_validator(mode="after")
    def _soc_window(self) -> BatteryDevice:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        if not -self.max_charge_kw <= self.safe_power_kw <= self.max_discharge_kw:
            raise ValueError("safe_power_kw must lie within [-max_charge_kw, max_discharge_kw]")
        return self

    @model_validator(mode="after")
    def _bms_beside(self) -> BatteryDevice:
        if self.bms is not None:
            if self.protocol not in ("modbus-tcp", "modbus-rtu"):
                raise ValueError(f"bms: needs a map-driven battery (protocol modbus-tcp or "
                                 f"modbus-rtu), not {self.protocol}")
            if self.bms.unit_id == self.unit_id:
                raise ValueError(f"bms.unit_id: {self.unit_id} is the PCS's own unit_id; give "
                                 "the BMS its own")
        return self


class MeterDevice(_DeviceBase):
    role: Literal["meter"]
    measures: Literal["grid", "load"] = "grid"
    ct_ratio: float = Field(
        1.0, ge=1, le=100_000, description="DL/T 645: current transformer ratio, primary / "
        "secondary (2000/5 A -> 400), for a meter that reports secondary values")
    pt_ratio: float = Field(
        1.0, ge=1, le=100_000, description="DL/T 645: voltage transformer ratio, primary / "
        "secondary (10 kV/100 V -> 100)")

    @model_validator(mode="after")
    def _ratios_on_dlt645(self) -> MeterDevice:
        if (self.ct_ratio != 1 or self.pt_ratio != 1) and not self.protocol.startswith("dlt645-"):
            raise ValueError(
                f"ct_ratio/pt_ratio apply to DL/T 645 meters (dlt645-tcp, dlt645-serial), which "
                f"report secondary values; a {self.protocol} meter reports primary values "
                "itself: remove ct_ratio and pt_ratio, or set the ratio in the meter")
        return self


class FlexLoadDevice(_DeviceBase):
    """A switchable load or load group (HVAC, water heaters, EV chargers on a contactor):
    shed when the batteries cannot hold the import limit, restored when there is room."""

    role: Literal["load"]
    protocol: Literal["modbus-tcp", "modbus-rtu"] = "modbus-tcp"
    rated_kw: PositiveKw = Field(description="what it draws when on")
    priority: int = Field(0, ge=0, le=1000, description="lower sheds first, restores last")
    min_on_s: float = Field(60.0, ge=0, le=86400, description="never shed sooner after a start")
    min_off_s: float = Field(60.0, ge=0, le=86400, description="never restored sooner after a stop")
    restore_margin_kw: float | None = Field(
        None, ge=0, description="room beyond rated_kw a restore needs, so site noise does not "
        "shed it again at once; default 10 % of rated_kw")
    safe_state: Literal["on", "off"] = Field(
        "on", description="state on lost communication, a lost PCC meter or shutdown")
    revert_s: int = Field(60, ge=5, le=3600, description="the relay returns to its default after this")


class DcConverterDevice(_DeviceBase):
    """A droop-controlled converter feeding the building's DC bus (DOMAIN.md §1): an AC/DC
    interface converter or a bidirectional DC/DC, observed for the bus voltage, which is
    alarmed outside nominal ± band_pct. One DC bus per site: every converter sits on it.
    In the HIL its DC loads follow sim.profile/base_kw/day_kw, sim.peak_kw is PV on the bus."""

    role: Literal["dcdc"]
    protocol: Literal["modbus-tcp", "modbus-rtu"] = "modbus-tcp"
    rated_kw: PositiveKw
    bus_nominal_v: float = Field(gt=0, le=1500, description="DC bus nominal, e.g. 375, 750, 48")
    band_pct: float = Field(10.0, gt=0, le=50, description="alarm outside nominal ± this %")
    alarm_after_cycles: int = Field(3, ge=1, le=3600, description="consecutive cycles out of "
                                    "band before the alarm is raised")
    revert_s: int = Field(60, ge=5, le=3600, description="v_ref returns to the converter's "
                          "default when not re-written for this long")
    restore_v: bool = Field(False, description="shift the droop reference v_ref so the bus "
                            "sits at nominal under load (secondary control); false: observe "
                            "and alarm only")
    max_shift_pct: float = Field(5.0, gt=0, le=15, description="v_ref stays within nominal ± "
                                 "this % (and within the converter's own v_ref range)")
    v_ref_ramp_v_per_s: float = Field(2.0, gt=0, le=100, description="v_ref moves at most "
                                      "this fast")


Device = Annotated[PvDevice | BatteryDevice | MeterDevice | FlexLoadDevice | DcConverterDevice,
                   Field(discriminator="role")]

FunctionName = Literal["self_consumption", "peak_shaving", "export_limit"]


class ControlConfig(_Model):
    cycle_s: float = Field(1.0, ge=0.05, le=60)
    functions: list[FunctionName] = ["self_consumption", "peak_shaving", "export_limit"]
    import_limit_kw: float | None = Field(None, gt=0)
    export_limit_kw: float | None = Field(None, ge=0, description="0 = zero export")
    deadband_kw: float = Field(0.5, ge=0)
    stale_after_cycles: int = Field(2, ge=1, le=100)
    slow_stale_after_cycles: int = Field(
        300, ge=10, le=100_000, description="a slow-class value (nameplate, energy counter) "
        "not re-read for this many cycles is STALE")
    rewrite_margin: float = Field(
        0.5, gt=0, lt=1, description="re-write a setpoint after this share of its revert time"
    )

    @field_validator("functions")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each control function may be listed once")
        return value


class TariffPeriod(_Model):
    name: str
    start: time
    end: time
    price: float = Field(ge=0, description="per kWh imported")


class TariffConfig(_Model):
    currency: str = "CNY"
    periods: list[TariffPeriod] = Field(min_length=1)
    export_price: float = Field(0.0, ge=0)
    demand_charge_per_kw: float = Field(0.0, ge=0, description="on the period's 15-min peak")

    @model_validator(mode="after")
    def _covers_day(self) -> TariffConfig:
        minutes = [False] * 1440
        for p in self.periods:
            a = p.start.hour * 60 + p.start.minute
            b = p.end.hour * 60 + p.end.minute or 1440
            rng = range(a, b) if a < b else [*range(a, 1440), *range(0, b)]
            for m in rng:
                if minutes[m]:
                    raise ValueError(f"period {p.name!r} overlaps another at {m // 60:02d}:{m % 60:02d}")
                minutes[m] = True
        if not all(minutes):
            gap = minutes.index(False)
            raise ValueError(f"periods leave {gap // 60:02d}:{gap % 60:02d} uncovered; cover 24 h")
        return self

    def price_at(self, local: time) -> float:
        m = local.hour * 60 + local.minute
        for p in self.periods:
            a = p.start.hour * 60 + p.start.minute
            b = p.end.hour * 60 + p.end.minute or 1440
            if (a <= m < b) if a < b else (m >= a or m < b):
                return p.price
        raise AssertionError("tariff validated to cover the day")


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = Field(
        None, description="read the password from this file (e.g. a systemd credential)")
    tls: bool = False
    ca_file: Path | None = Field(None, description="CA bundle; the system's CAs when empty")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client private key, with cert_file")
    tls_insecure: bool = Field(
        False, description="skip the check of the broker's host name (testing only)")
    keepalive_s: int = Field(30, ge=5, le=3600)
    topic_prefix: str = "pedf/v1"
    telemetry_s: float = Field(5.0, gt=0)
    devices_s: float = Field(60.0, gt=0, description="device health report period")

    @field_validator("topic_prefix")
    @classmethod
    def _plain_topic(cls, value: str) -> str:
        if not value or value[0] == "/" or value[-1] == "/" or any(c in value for c in "#+\0"):
            raise ValueError("must be a topic without wildcards (+ #) or a leading/trailing "
                             "slash, e.g. pedf/v1")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mutual TLS needs both cert_file and key_file")
        tls_only = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n)]
        tls_only += ["tls_insecure"] if self.tls_insecure else []
        if tls_only and not self.tls:
            raise ValueError(f"{', '.join(tls_only)} only apply with tls: true; set it")
        return self


class StorageConfig(_Model):
    dir: Path = Path("var")


class HilConfig(_Model):
    """Simulated clock of the HIL: start instant and default speed-up."""

    start: datetime = datetime.fromisoformat("2026-06-22T00:00:00+08:00")
    speed: float = Field(1.0, gt=0, le=10000)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give an explicit UTC offset, e.g. 2026-06-22T00:00:00+08:00")
        return value


class PlannerConfig(_Model):
    """The rolling-horizon optimiser (edge/plan): an LP re-solved every `replan_min` and on
    events; its plan reaches the cycle as grid targets and bounds inside every limit."""

    enabled: bool = False
    horizon_h: float = Field(24.0, gt=0, le=168, description="planning horizon")
    step_min: int = Field(15, ge=1, le=60, description="plan resolution; divides 60")
    replan_min: float = Field(15.0, gt=0, le=1440, description="re-plan period")
    follow: Literal["battery", "grid"] = Field(
        "battery", description="what the cycle follows between re-plans: the planned battery "
        "power (forecast error goes to the grid at today's price; the planned grid power where "
        "the plan sits on an import/export limit or its peak cap) or always the planned grid "
        "power (error goes into the battery's energy)")
    time_limit_s: float = Field(
        10.0, gt=0, le=20, description="HiGHS time limit per solve; at most 20 s so a solve "
        "in progress ends well inside systemd's 30 s TimeoutStopSec (48 h @ 5 min takes "
        "0.02 s as an LP, ~4 s as a MILP on 2 cores)")
    degradation_cost_per_kwh: float = Field(
        0.0, ge=0, description="cost per kWh of battery throughput (charge + discharge)")
    reserve_soc_pct: Pct = Field(0.0, description="SoC kept for critical loads (soft floor)")
    terminal_value_per_kwh: float | None = Field(
        None, ge=0, description="value of energy left at the horizon's end; none: keep the "
        "starting SoC")

    @model_validator(mode="after")
    def _steps(self) -> PlannerConfig:
        if 60 % self.step_min:
            raise ValueError("step_min must divide 60 (1, 5, 10, 15, 30, 60 ...)")
        steps = self.horizon_h * 60 / self.step_min
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError("horizon_h must be a whole number of steps of step_min")
        return self


class ForecastConfig(_Model):
    """PV and load forecasts (edge/forecast) and the local 15-min history they learn from."""

    history_days: int = Field(28, ge=1, le=400, description="days of 15-min history kept")
    similar_days: int = Field(5, ge=1, le=60, description="past days of the same kind averaged "
                              "for the load profile")
    pv_derate: float = Field(0.85, gt=0, le=1, description="DC/AC, soiling, temperature losses")
    linke_turbidity: float = Field(3.0, gt=0, le=10, description="clear-sky haze; ~3 rural, "
                                   "~4-5 hazy urban")
    correction_tau_h: float = Field(2.0, gt=0, le=48, description="how fast the correction "
                                    "from recent measurements fades over the horizon")


CommandName = Literal["dispatch", "dr_event", "mode", "cancel"]


class VppConfig(_Model):
    """The MQTT command contract with the park platform (edge/vpp): which commands are
    honoured, what a command must keep to to be accepted, and the flex report."""

    commands: bool = Field(True, description="subscribe to <topic_prefix>/<site>/cmd/+")
    allow: list[CommandName] = ["dispatch", "dr_event", "mode", "cancel"]
    max_payload_bytes: int = Field(4096, ge=256, le=1_048_576)
    max_ahead_s: float = Field(
        172_800, gt=0, description="a window may start at most this far ahead (day-ahead: 2 d)")
    max_window_s: float = Field(86_400, gt=0, description="longest window a command may span")
    past_tolerance_s: float = Field(
        30, ge=0, description="a dispatch starting longer ago than this is refused as stale")
    flex_s: float = Field(60, gt=0, description="flex message period")
    flex_horizon_h: float = Field(4, gt=0, le=48, description="flex intervals cover this far")

    @field_validator("allow")
    @classmethod
    def _unique_commands(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each command may be listed once")
        return value


class OpenAdrConfig(_Model):
    """The OpenADR 2.0b VEN (edge/vpp/openadr.py); off unless a VTN URL is given."""

    vtn_url: str | None = Field(
        None, pattern=r"^https?://", description="e.g. http://vtn:8080/OpenADR2/Simple/2.0b")
    ven_name: str | None = Field(None, min_length=1, description="default: the site id")
    ven_id: str | None = Field(None, min_length=1, description="default: assigned by the VTN")
    poll_interval_s: float = Field(10.0, ge=0.2, le=3600)
    cert_file: Path | None = Field(None, description="PEM: TLS client cert, signs messages")
    key_file: Path | None = None
    key_passphrase: str | None = None
    ca_file: Path | None = Field(None, description="PEM: CA that signed the VTN's TLS cert")
    vtn_fingerprint: str | None = Field(None, description="check the VTN's message signatures")
    simple_levels_kw: dict[Literal[1, 2, 3], Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {1: 10.0, 2: 20.0, 3: 40.0},
        description="SIMPLE level -> kW of grid import shed below the baseline (0 = normal)")
    report_interval_s: int = Field(10, ge=1, le=86400, description="TELEMETRY_USAGE period")

    @model_validator(mode="after")
    def _consistent(self) -> OpenAdrConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together (or neither)")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("with cert_file, give ca_file too: the CA of the VTN's certificate")
        if self.ca_file is not None and self.cert_file is None:
            raise ValueError("ca_file is used only with cert_file and key_file (without them the "
                             "VTN's https certificate is checked against the system CAs)")
        n = self.report_interval_s
        if (n < 60 and 60 % n) or (n >= 60 and n % 60):
            raise ValueError("report_interval_s must divide a minute (1, 2, 5, 10, 15, 30 ...) "
                             "or be whole minutes: reports run on the wall clock's cron")
        missing = sorted({1, 2, 3} - self.simple_levels_kw.keys())
        if missing:
            raise ValueError(f"simple_levels_kw needs levels 1, 2 and 3; missing {missing}")
        return self


class DrConfig(_Model):
    """Demand-response execution and M&V (edge/vpp/dr.py, baseline.py, mv.py; DOMAIN.md §4).

    The baseline is computed on `baseline_on`: by default the PCC grid import, which is what
    the grid operator meters and settles. Working days are Monday-Friday minus `holidays`
    plus `working_days` (weekend days worked in exchange for a holiday, 调休)."""

    baseline: Literal["avg5", "realtime", "high5of10"] = Field(
        "avg5", description="avg5: same intervals of the 5 most recent normal working days; "
        "realtime: the 15 min before the response starts; high5of10: of the 10 eligible working "
        "days before D-1, the 5 with the highest daily maximum")
    baseline_on: Literal["import", "grid"] = Field(
        "import", description="import: PCC import (what the grid operator meters and settles); "
        "grid: import - export")
    avg_days: int = Field(5, ge=1, le=20, description="days averaged by avg5")
    high_days: int = Field(5, ge=1, le=20, description="days averaged by high5of10")
    high_window_days: int = Field(10, ge=1, le=30, description="eligible days high5of10 picks from")
    lookback_days: int = Field(45, ge=1, le=400, description="how far back to look for eligible days")
    holidays: list[date] = Field([], description="public holidays: never baseline days")
    working_days: list[date] = Field([], description="weekend days worked (调休)")
    ramp_in_s: float = Field(900, ge=0, le=7200, description="bound tightens linearly over this "
                             "before the start, so the site is at the level when the event begins")
    restore_s: float = Field(900, ge=0, le=7200, description="bound relaxed in steps over this "
                             "after the end, so loads and batteries do not all recover at once")
    restore_steps: int = Field(3, ge=1, le=20)
    target_ratio: float = Field(1.02, ge=1.0, le=1.2, description="aim at this share of the "
                                "declared amount: a margin for load steps between cycles")
    alarm_ratio: float = Field(0.8, ge=0, le=1.2, description="alarm when the projected response "
                               "ratio falls below this")
    min_response_ratio: float = Field(0.8, ge=0, le=1.2, description="opt in only when the site "
                                      "expects to deliver at least this share")
    penalty_below: float = Field(0.5, ge=0, le=1, description="settlement: below this share of "
                                 "the declared amount is penalised (unconfirmed default)")
    pay_cap: float = Field(1.2, ge=1, le=3, description="settlement: payment capped at this share")
    report_s: float = Field(60, ge=1, le=900, description="period of the dr/<event_id> reports")

    @model_validator(mode="after")
    def _calendar(self) -> DrConfig:
        both = sorted(set(self.holidays) & set(self.working_days))
        if both:
            raise ValueError(f"{', '.join(map(str, both))} listed in both holidays and "
                             "working_days; keep each date in one list")
        if self.high_days > self.high_window_days:
            raise ValueError("high_days must be <= high_window_days (it picks from the window)")
        return self


class CarbonConfig(_Model):
    """Grid emission factors for carbon accounting (DOMAIN.md §6). MEE/NBS publish them
    yearly in three versions; name the one you use so reports can be audited."""

    factor_kg_per_kwh: float = Field(0.5366, ge=0, le=2, description="grid emission factor")
    factor_year: int = Field(2022, ge=2000, le=2100)
    factor_version: Literal["average", "excl_market_nonfossil", "fossil"] = "average"
    factor_region: str = "national"
    green_import_share: float = Field(
        0.0, ge=0, le=1, description="share of grid import bought as green power (contracts, "
        "certificates); counted zero-emission")
    residual_factor_kg_per_kwh: float | None = Field(
        None, ge=0, le=2, description="factor for the rest of the import when green power is "
        "bought: the 'excluding market-traded non-fossil' version")

    @model_validator(mode="after")
    def _residual_with_green(self) -> CarbonConfig:
        if self.green_import_share > 0 and self.residual_factor_kg_per_kwh is None:
            raise ValueError("green_import_share > 0 needs residual_factor_kg_per_kwh (the "
                             "'excluding market-traded non-fossil' factor), or the green power "
                             "would be counted twice")
        return self

    @property
    def import_factor(self) -> float:
        """kg CO2 per kWh of grid import, after the green share is taken out."""
        if self.green_import_share > 0:
            return (1 - self.green_import_share) * float(self.residual_factor_kg_per_kwh)
        return self.factor_kg_per_kwh


def bus_problems(devices: list, cycle_s: float) -> list[str]:
    """What devices sharing a bus or a connection must agree on, and what a poll must fit:
    one line setting and one framing per serial port, one timeout per shared endpoint, each
    timeout inside the poll deadline (half of it where neighbours share the endpoint), and
    the poll round of a DL/T 645 serial bus inside the deadline."""
    deadline = poll_deadline_s(cycle_s)
    problems: list[str] = []
    groups: dict[tuple, list[int]] = {}
    for i, d in enumerate(devices):
        groups.setdefault(d.endpoint, []).append(i)

    def who(i: int) -> str:
        return f"devices[{i}] ({devices[i].id})"

    for key, members in groups.items():
        where = f"serial port {key[1]}" if key[0] == "serial" else f"{key[0]}:{key[1]}"
        units = {devices[i].unit_id: i for i in members}
        for i in members:
            bms = getattr(devices[i], "bms", None)
            if bms is not None and units.get(bms.unit_id, i) != i:
                problems.append(
                    f"devices[{i}].bms.unit_id: {bms.unit_id} on {where} is "
                    f"{who(units[bms.unit_id])}'s unit id; give the BMS a free one")
        first = devices[members[0]]
        for i in members[1:]:
            d = devices[i]
            a = _BUS_FAMILY.get(first.protocol, first.protocol)
            b = _BUS_FAMILY.get(d.protocol, d.protocol)
            if a != b:
                problems.append(
                    f"{who(members[0])} ({first.protocol}) and {who(i)} ({d.protocol}) share "
                    f"{where}: {a} and {b} cannot share one bus or port (each would read the "
                    "other's frames as noise); put them on separate ports")
                continue
            if key[0] == "serial":
                for field in ("baudrate", "parity", "stopbits", "bytesize"):
                    x, y = getattr(first.serial, field), getattr(d.serial, field)
                    if x != y:
                        problems.append(
                            f"{who(members[0])} and {who(i)} share {where} but differ in "
                            f"serial.{field} ({x} vs {y}): one bus has one line setting; set the "
                            f"same serial.{field} on both")
            if d.timeout_s != first.timeout_s:
                problems.append(
                    f"{who(members[0])} and {who(i)} share {where} but differ in timeout_s "
                    f"({first.timeout_s:g} vs {d.timeout_s:g} s): the shared connection has one "
                    "timeout; set the same timeout_s on both")
        limit = deadline / 2 if len(members) > 1 else deadline
        for i in members:
            t = devices[i].timeout_s
            if len(members) == 1 and t >= deadline:
                problems.append(
                    f"devices[{i}].timeout_s: {t:g} s does not fit the poll deadline "
                    f"{deadline:g} s (0.8 x control.cycle_s, at least 0.2 s): the cycle would cut "
                    "a silent device "
                    f"off before its own timeout; use timeout_s <= {deadline / 2:g} or raise "
                    "control.cycle_s")
            elif len(members) > 1 and t > limit:
                others = ", ".join(devices[j].id for j in members if j != i)
                problems.append(
                    f"devices[{i}].timeout_s: {t:g} s is more than half the poll deadline "
                    f"{deadline:g} s on {where}, shared with {others}: one silent unit would leave "
                    f"its neighbours no time in the cycle; use timeout_s <= {limit:g} or raise "
                    "control.cycle_s")
        if key[0] == "serial" and first.protocol == "dlt645-serial" and not any(
                "cannot share" in p and where in p for p in problems):
            from drivers.dlt645.frame import poll_round_s

            need = poll_round_s(len(members), first.serial.baudrate, first.serial.bytesize,
                                first.serial.parity != "N", first.serial.stopbits)
            if need > deadline:
                problems.append(
                    f"{where}: {len(members)} DL/T 645 meters at {first.serial.baudrate} bit/s "
                    f"need about {need:.2f} s per poll (power from each, one slow value), more "
                    f"than the poll deadline {deadline:g} s; raise serial.baudrate if the meters "
                    f"allow, split them across ports, or set control.cycle_s >= "
                    f"{math.ceil(need / 0.8 * 10) / 10:g}")
    return problems


class Config(_Model):
    site: SiteConfig
    devices: list[Device] = Field(min_length=1)
    control: ControlConfig = ControlConfig()
    tariff: TariffConfig
    mqtt: MqttConfig = MqttConfig()
    storage: StorageConfig = StorageConfig()
    hil: HilConfig = HilConfig()
    planner: PlannerConfig = PlannerConfig()
    forecast: ForecastConfig = ForecastConfig()
    vpp: VppConfig = VppConfig()
    openadr: OpenAdrConfig = OpenAdrConfig()
    dr: DrConfig = DrConfig()
    carbon: CarbonConfig = CarbonConfig()

    @model_validator(mode="before")
    @classmethod
    def _device_timeouts(cls, data: object) -> object:
        """A device without timeout_s gets its protocol's default, fitted to the cycle."""
        if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
            return data
        control = data.get("control")
        cycle_s = control.get("cycle_s", 1.0) if isinstance(control, dict) else getattr(
            control, "cycle_s", 1.0)
        try:
            cycle_s = float(cycle_s)
        except (TypeError, ValueError):
            cycle_s = 1.0
        if not cycle_s > 0:
            cycle_s = 1.0  # reported as control.cycle_s's own error
        devices = [
            {**d, "timeout_s": default_timeout_s(str(d.get("protocol", "sunspec-tcp")), cycle_s)}
            if isinstance(d, dict) and "timeout_s" not in d else d for d in data["devices"]]
        return {**data, "devices": devices}

    @model_validator(mode="after")
    def _buses(self) -> Config:
        problems = bus_problems(self.devices, self.control.cycle_s)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _site_rules(self) -> Config:
        ids = [d.id for d in self.devices]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"device ids must be unique; repeated: {', '.join(sorted(dup))}")
        endpoints = [(*d.endpoint, d.address or d.unit_id) for d in self.devices]
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("two devices share host, port and unit_id; give each its own unit_id")
        grid = [d for d in self.devices if isinstance(d, MeterDevice) and d.measures == "grid"]
        if len(grid) != 1:
            raise ValueError(
                f"exactly one meter with measures: grid (the PCC meter) is required, found {len(grid)}"
            )
        return self

    @model_validator(mode="after")
    def _one_dc_bus(self) -> Config:
        """Converters in parallel measure one bus; telemetry's dc_bus_v is their mean."""
        nominal = {d.bus_nominal_v for d in self.devices if isinstance(d, DcConverterDevice)}
        if len(nominal) > 1:
            raise ValueError(f"dcdc converters give bus_nominal_v {sorted(nominal)}: one DC bus "
                             "per site is supported; give every converter the same bus_nominal_v")
        restoring = {d.id: d.restore_v for d in self.devices if isinstance(d, DcConverterDevice)}
        if len(set(restoring.values())) > 1:
            on = sorted(k for k, v in restoring.items() if v)
            off = sorted(k for k, v in restoring.items() if not v)
            raise ValueError(f"restore_v is on for {', '.join(on)} but off for {', '.join(off)}: "
                             "converters in parallel share load by their references, so a "
                             "shifted one would carry the others' share; set restore_v alike "
                             "on every converter")
        return self

    def pv_safe_kw(self, pv: PvDevice) -> float:
        pct = pv.safe_limit_pct
        if pct is None:
            pct = 0.0 if self.control.export_limit_kw is not None else 100.0
        return pv.rated_kw * pct / 100.0

    def of_role(self, role: str) -> list[PvDevice | BatteryDevice | MeterDevice]:
        return [d for d in self.devices if d.role == role]

    @property
    def grid_meter(self) -> MeterDevice:
        return next(d for d in self.devices if isinstance(d, MeterDevice) and d.measures == "grid")


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
    "union_tag_invalid": "role must be one of: pv, battery, meter, load, dcdc",
    "union_tag_not_found": "each device needs a role: pv, battery, meter, load or dcdc",
    "literal_error": "must be one of {expected}",
    "too_short": "must have at least {min_length} item(s)",
}


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("pv", "battery", "meter", "load", "dcdc") and out.endswith("]"):
            continue  # discriminator tag pydantic inserts; not part of the YAML path
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _message(err: dict) -> str:
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
        problems = [f"{_path(e['loc'])}: {_message(e)}" for e in exc.errors()]
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

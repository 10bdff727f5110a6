"""Site configuration: the pydantic models at the YAML boundary, and a loader whose errors
name the field and the fix.

Sign conventions (everywhere): grid +import/-export, battery +discharge/-charge, PV >= 0.
"""

from __future__ import annotations

from datetime import datetime, time
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


class _DeviceBase(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    protocol: Protocol = "sunspec-tcp"
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    serial: SerialParams | None = None
    unit_id: int = Field(1, ge=0, le=247)
    map: str | None = Field(None, pattern=r"^[a-z0-9_-]+$", description="drivers/maps/<map>.yaml")
    address: str | None = Field(None, pattern=r"^[0-9]{12}$", description="DL/T 645 address")
    timeout_s: float = Field(1.0, gt=0, le=30)
    sim: SimParams = SimParams()

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

    @model_validator(mode="after")
    def _soc_window(self) -> BatteryDevice:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        if not -self.max_charge_kw <= self.safe_power_kw <= self.max_discharge_kw:
            raise ValueError("safe_power_kw must lie within [-max_charge_kw, max_discharge_kw]")
        return self


class MeterDevice(_DeviceBase):
    role: Literal["meter"]
    measures: Literal["grid", "load"] = "grid"


Device = Annotated[PvDevice | BatteryDevice | MeterDevice, Field(discriminator="role")]

FunctionName = Literal["self_consumption", "peak_shaving", "export_limit"]


class ControlConfig(_Model):
    cycle_s: float = Field(1.0, ge=0.05, le=60)
    functions: list[FunctionName] = ["self_consumption", "peak_shaving", "export_limit"]
    import_limit_kw: float | None = Field(None, gt=0)
    export_limit_kw: float | None = Field(None, ge=0, description="0 = zero export")
    deadband_kw: float = Field(0.5, ge=0)
    stale_after_cycles: int = Field(2, ge=1, le=100)
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
    tls: bool = False
    ca_file: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    topic_prefix: str = "pedf/v1"
    telemetry_s: float = Field(5.0, gt=0)
    devices_s: float = Field(60.0, gt=0, description="device health report period")


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


class Config(_Model):
    site: SiteConfig
    devices: list[Device] = Field(min_length=1)
    control: ControlConfig = ControlConfig()
    tariff: TariffConfig
    mqtt: MqttConfig = MqttConfig()
    storage: StorageConfig = StorageConfig()
    hil: HilConfig = HilConfig()

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
    "union_tag_invalid": "role must be one of: pv, battery, meter",
    "union_tag_not_found": "each device needs a role: pv, battery or meter",
    "literal_error": "must be one of {expected}",
    "too_short": "must have at least {min_length} item(s)",
}


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("pv", "battery", "meter") and out.endswith("]"):
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


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(p), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(p), ["(top level): must be a mapping with site, devices, tariff"])
    return parse(data, str(p))

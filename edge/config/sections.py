"""The site-wide sections of the configuration: control, tariff, MQTT link, state storage,
planner and forecasts."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.config.model import Pct, _Model

FunctionName = Literal["self_consumption", "peak_shaving", "export_limit"]


class ControlConfig(_Model):
    cycle_s: float = Field(1.0, ge=0.05, le=60, description="control period")
    functions: list[FunctionName] = ["self_consumption", "peak_shaving", "export_limit"]
    import_limit_kw: float | None = Field(None, gt=0, description="limit at the PCC; none: no limit")
    export_limit_kw: float | None = Field(None, ge=0, description="0 = zero export")
    deadband_kw: float = Field(0.5, ge=0, description="write a setpoint only when it moves "
                               "more than this (or after rewrite_margin)")
    stale_after_cycles: int = Field(2, ge=1, le=100, description="consecutive failed polls "
                                    "before a device is STALE")
    slow_stale_after_cycles: int = Field(
        300, ge=10, le=100_000, description="a slow-class value (nameplate, energy counter) "
        "not re-read for this many cycles is STALE")
    rewrite_margin: float = Field(
        0.5, gt=0, lt=1, description="re-write a setpoint after this share of its revert time"
    )
    ev_from_battery: bool = Field(
        False, description="let the batteries discharge into EV chargers (by default EVs "
        "charge from the grid and PV only)")

    @field_validator("functions")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each control function may be listed once")
        return value


class Circuit(_Model):
    """A feeder several EV chargers share: their currents on each phase stay under its limit."""

    max_current_a: float = Field(gt=0, description="per phase, A")


class OcppConfig(_Model):
    """The CSMS inside the daemon: chargers connect to ws://host:port/<charge_point_id>,
    speaking OCPP 1.6J or 2.0.1 (chosen by the WebSocket subprotocol)."""

    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(9000, ge=1, le=65535)
    heartbeat_s: int = Field(60, ge=5, le=3600, description="interval granted at boot")
    meter_interval_s: int = Field(
        10, ge=0, le=3600, description="meter values asked of each charger during a "
        "transaction (1.6 MeterValueSampleInterval, 2.0.1 SampledDataCtrlr.TxUpdatedInterval); "
        "0 leaves the charger's own. The controller learns from them what a car takes")
    circuits: dict[str, Circuit] = Field(
        default_factory=dict, description="named current limits shared by chargers (their "
        "`circuit`)")


class TariffPeriod(_Model):
    name: str
    start: time = Field(description="local HH:MM")
    end: time = Field(description="local HH:MM; the periods cover 24 h without overlap")
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



NATS_FORBIDDEN = ". \t*>"  # NATS subject separators and wildcards: not allowed in its MQTT topics


class MqttConfig(_Model):
    """The link to the park platform's broker: MQTT 3.1.1, QoS 1 publishes (what every
    broker, NATS's MQTT front end included, carries), subscriptions at QoS 1 or 0. `hosts`
    lists brokers to fail over between."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    hosts: list[str] = Field(
        default_factory=list,
        description="brokers to fail over between, each host:port, instead of host/port: "
        "tried in order on a failed connect, kept while connected")
    broker: Literal["mqtt", "nats"] = Field(
        "mqtt", description="nats: NATS's MQTT front end (no '.', spaces, '*' or '>' in "
        "topics; the prefix and topic ids are checked or mapped for it)")
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
    subscribe_qos: Literal[0, 1] = Field(
        1, description="QoS of the command subscriptions. The session is clean, so QoS 1 only "
        "covers a command in flight when the link drops, and a platform takes a command "
        "without an ack as not taken; 0 for thousands of sites on a NATS cluster, where a "
        "QoS 1 subscription is a JetStream consumer made at every connect and removed at "
        "every disconnect")
    topic_prefix: str = "pedf/v1"
    telemetry_s: float = Field(5.0, gt=0, description="telemetry period")
    devices_s: float = Field(60.0, gt=0, description="device health report period")

    @field_validator("topic_prefix")
    @classmethod
    def _plain_topic(cls, value: str) -> str:
        if not value or value[0] == "/" or value[-1] == "/" or any(c in value for c in "#+\0"):
            raise ValueError("must be a topic without wildcards (+ #) or a leading/trailing "
                             "slash, e.g. pedf/v1")
        return value

    @field_validator("hosts")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, sep, port = entry.rpartition(":")
            if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{entry!r} is not host:port (e.g. broker-1.example:1883)")
        if len(set(value)) != len(value):
            raise ValueError("each broker may be listed once")
        return value

    @property
    def brokers(self) -> list[tuple[str, int]]:
        """(host, port) in the order the link tries them."""
        if not self.hosts:
            return [(self.host, self.port)]
        return [(h.rpartition(":")[0].strip("[]"), int(h.rpartition(":")[2])) for h in self.hosts]

    @model_validator(mode="after")
    def _credentials(self) -> MqttConfig:
        if self.hosts and {"host", "port"} & self.model_fields_set:
            raise ValueError("give hosts (a list of host:port) or host and port, not both")
        if self.broker == "nats" and any(c in self.topic_prefix for c in NATS_FORBIDDEN):
            raise ValueError(f"topic_prefix {self.topic_prefix!r}: with broker: nats a topic "
                             "may not hold '.', spaces, '*' or '>' (e.g. pedf/v1)")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mutual TLS needs both cert_file and key_file")
        tls_only = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n)]
        tls_only += ["tls_insecure"] if self.tls_insecure else []
        if tls_only and not self.tls:
            raise ValueError(f"{', '.join(tls_only)} only apply with tls: true; set it")
        return self


class ApiConfig(_Model):
    """The operator's HTTP API inside the daemon (edge/api): JSON views of the state, devices,
    plan, history, DR and flex, a live stream (Server-Sent Events), commands and Prometheus
    metrics. Off unless enabled. Reads need no token: keep `host` on loopback or behind a
    proxy that authenticates; commands need the bearer token in `token_file`."""

    enabled: bool = Field(False, description="serve the API; false: no port is opened")
    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(8080, ge=1, le=65535)
    token_file: Path | None = Field(
        None, description="file holding the bearer token for commands (at least 16 "
        "characters, e.g. a systemd credential); none: every command is refused (401)")
    max_body_bytes: int = Field(65_536, ge=256, le=1_048_576,
                                description="a longer request body is refused (413)")
    max_connections: int = Field(32, ge=2, le=1024, description="open connections and "
                                 "streams at once; more are answered 503")


class StorageConfig(_Model):
    dir: Path = Field(Path("var"), description="outbox, history, DR and OpenADR databases; a "
                      "relative path resolves under $STATE_DIRECTORY when systemd sets it")



class PlannerConfig(_Model):
    """The rolling-horizon optimiser (edge/plan): an LP re-solved every `replan_min` and on
    events; its plan reaches the cycle as grid targets and bounds inside every limit."""

    enabled: bool = Field(False, description="plan the battery; false: rule-based control")
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
        "~0.03 s as an LP, ~0.06 s as a MILP on 2 cores, a third of that or less warm-started "
        "from the previous round: tests/bench/bench_plan.py)")
    degradation_cost_per_kwh: float = Field(
        0.0, ge=0, description="cost per kWh of battery throughput (charge + discharge)")
    reserve_soc_pct: Pct = Field(0.0, description="SoC kept for critical loads (soft floor)")
    terminal_value_per_kwh: float | None = Field(
        None, ge=0, description="value of energy left at the horizon's end, per kWh (a "
        "thermal storage tank's per electric kWh: thermal / COP); none: keep the starting "
        "SoC and tank energy")

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



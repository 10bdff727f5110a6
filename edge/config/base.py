"""What every part of the site configuration shares: the strict base model, units, the serial
line and the fields every device has (where it lives and how it is reached). Role-specific
device settings live with their role in edge/roles/."""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from drivers.dlt645.frame import address_problem
from edge.config.model import Pct, PositiveKw, _Model  # noqa: F401 - re-exported for the roles


class SiteConfig(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="used in the MQTT topics")
    name: str = ""
    timezone: str = Field("UTC", description="IANA name; tariff periods are in local time")
    latitude: float = Field(31.23, ge=-90, le=90, description="for the PV forecast and the "
                            "simulator's PV model")
    longitude: float = Field(121.47, ge=-180, le=180, description="as latitude")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Asia/Shanghai)") from exc
        return value


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
_PIPELINED_PROTOCOLS = {"sunspec-tcp", "modbus-tcp"}  # transaction ids match replies
# Devices that connect to us (OCPP chargers reach the daemon's CSMS): no host or port of theirs.
_INBOUND_PROTOCOLS = {"ocpp"}
# Reply timeout when a device gives none: a Modbus reply over TCP or a 9600 bit/s bus comes
# within tens of ms; a DL/T 645 reply at 2400 bit/s spends ~0.25 s on the wire alone.
_DEFAULT_TIMEOUT_S = {"dlt645-tcp": 0.5, "dlt645-serial": 0.5}
_TIMEOUT_S = 0.3
_PORT_HINT = {"sunspec-tcp": "502 for Modbus TCP", "modbus-tcp": "502 for Modbus TCP",
              "dlt645-tcp": "the gateway's TCP port for the meter bus"}


def poll_deadline_s(cycle_s: float) -> float:
    """How long the control cycle waits for one device's poll (edge/cycle.py)."""
    return max(0.8 * cycle_s, 0.2)


def default_timeout_s(protocol: str, cycle_s: float) -> float:
    """The protocol's default, cut to half the poll deadline: a silent unit on a shared bus
    then leaves the other half of the cycle to its neighbours."""
    return min(_DEFAULT_TIMEOUT_S.get(protocol, _TIMEOUT_S), poll_deadline_s(cycle_s) / 2)


class DeviceBase(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    protocol: Protocol = "sunspec-tcp"
    host: str | None = Field(None, min_length=1, description="network protocols: the device's "
                             "(or its gateway's) IP address or name")
    port: int | None = Field(None, ge=1, le=65535, description="network protocols: the TCP "
                             "port, e.g. 502 for Modbus TCP")
    serial: SerialParams | None = None
    unit_id: int = Field(1, ge=0, le=247)
    map: str | None = Field(None, pattern=r"^[a-z0-9_-]+$", description="drivers/maps/<map>.yaml")
    address: str | None = Field(None, description="DL/T 645 address: the meter's 12 digits")
    timeout_s: float = Field(_TIMEOUT_S, gt=0, le=30, description="reply timeout; default "
                             "per protocol (0.3 s, DL/T 645 0.5 s), at most half the poll deadline")
    max_in_flight: int = Field(1, ge=1, le=16, description="Modbus TCP: requests on the "
                               "wire at once on the device's connection (shared by every unit "
                               "behind its host:port, which must all agree); above 1 only for "
                               "gateways and devices that accept several transactions")
    sim: dict[str, Any] = Field(
        default_factory=dict, description="the simulator's settings for this device, "
        "declared and checked by the simulator (hil/config.py); the daemon ignores them")

    @field_validator("address")
    @classmethod
    def _one_meter(cls, value: str | None) -> str | None:
        if value is not None and (problem := address_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="before")
    @classmethod
    def _dlt645_line(cls, data: object) -> object:
        """DL/T 645 meters default to 2400 bit/s 8E1 (docs/domain.md §5), not Modbus's 9600 8N1."""
        if (isinstance(data, dict) and data.get("protocol") == "dlt645-serial"
                and isinstance(data.get("serial"), dict)):
            data = {**data, "serial": {"baudrate": 2400, "parity": "E", **data["serial"]}}
        return data

    @model_validator(mode="after")
    def _protocol_needs(self) -> DeviceBase:
        if self.protocol in _SERIAL_PROTOCOLS and self.serial is None:
            raise ValueError(f"protocol {self.protocol} needs serial: {{port: /dev/ttyUSB0, ...}}")
        if self.protocol.startswith("modbus-") and self.map is None:
            raise ValueError(f"protocol {self.protocol} needs map: <name of drivers/maps/*.yaml>")
        if self.protocol.startswith("dlt645-") and self.address is None:
            raise ValueError("DL/T 645 needs the meter address: 12 digits, e.g. '000000000001'")
        if self.max_in_flight > 1 and self.protocol not in _PIPELINED_PROTOCOLS:
            raise ValueError(
                f"device {self.id}: max_in_flight {self.max_in_flight}: only Modbus TCP "
                f"(sunspec-tcp, modbus-tcp) has several requests in flight; {self.protocol} "
                "sends one at a time: remove max_in_flight or set it to 1")
        missing = [f for f in ("host", "port") if self.protocol not in _SERIAL_PROTOCOLS
                   and self.protocol not in _INBOUND_PROTOCOLS and getattr(self, f) is None]
        if missing:
            raise ValueError(
                f"device {self.id}: {' and '.join(missing)} required for protocol "
                f"{self.protocol}: give host (the device's or its gateway's IP address or name) "
                f"and port ({_PORT_HINT[self.protocol]})")
        return self

    @property
    def endpoint(self) -> tuple[str, int | str]:
        """Where the device lives: a TCP host:port or a serial port, shared by its units."""
        if self.serial is not None and self.protocol in _SERIAL_PROTOCOLS:
            return ("serial", self.serial.port)
        if self.protocol in _INBOUND_PROTOCOLS:
            return (self.protocol, self.id)
        return (self.host, self.port)


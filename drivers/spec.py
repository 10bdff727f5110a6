"""What a driver needs to know about one device: where it lives, how to address it, which
role it plays. The site config (or a test, or a bench) fills these in; drivers never see it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["pv", "battery", "meter", "load", "dcdc", "ev_charger", "breaker", "hvac",
               "thermal_storage"]


@dataclass(frozen=True, slots=True)
class SerialSpec:
    """An RS-485 line; every device on one port shares it."""

    port: str
    baudrate: int
    parity: str  # "N", "E" or "O"
    stopbits: int
    bytesize: int


@dataclass(frozen=True, slots=True)
class OcppSpec:
    """An EV charger that connects to us: the CSMS the daemon runs listens on listen_host:
    listen_port, and the charger opens ws://listen_host:listen_port/<charge_point_id>."""

    charge_point_id: str
    listen_host: str
    listen_port: int
    connectors: int
    phases: int  # 1 or 3
    voltage_v: float  # phase voltage
    max_current_a: float  # the charger's cap, installed at boot (ChargePointMaxProfile)
    safe_current_a: float  # what the charger falls back to when we go quiet (0: pause)
    heartbeat_s: int  # interval granted at BootNotification
    deadband_a: float  # a new limit closer than this to the one in force is not sent
    min_interval_s: float  # raises are sent at most this often; cuts go at once
    meter_interval_s: int = 0  # meter values asked for during a transaction (0: its own)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device. `role` names the drivers.base Protocol the driver implements; `serial` is
    set only when the device is reached over its serial line (not a TCP gateway)."""

    id: str
    role: Role
    protocol: str
    host: str | None  # TCP devices only
    port: int | None
    serial: SerialSpec | None
    unit_id: int
    map: str | None  # register map name (modbus-*)
    address: str | None  # DL/T 645 meter address
    timeout_s: float
    ct_ratio: float = 1.0
    pt_ratio: float = 1.0
    bms_map: str | None = None  # a BMS on its own unit id beside a map-driven battery
    bms_unit_id: int | None = None
    auto_transfer: bool = False  # a map-driven PCS told to transfer to island on its own
    revert_pct: float = 100.0  # where a SunSpec 704 PV inverter reverts when we go quiet
    ocpp: OcppSpec | None = None  # protocol "ocpp": the charger and the CSMS it reaches
    max_in_flight: int = 1  # Modbus TCP: requests on the shared connection at once

    @property
    def endpoint(self) -> tuple[str, int | str]:
        """The shared connection the device is on: its serial port, or TCP host:port."""
        if self.serial is not None:
            return ("serial", self.serial.port)
        if self.ocpp is not None:
            return ("ocpp", self.ocpp.charge_point_id)
        return (self.host, self.port)

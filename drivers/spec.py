"""What a driver needs to know about one device: where it lives, how to address it, which
role it plays. The site config (or a test, or a bench) fills these in; drivers never see it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["pv", "battery", "meter", "load", "dcdc"]


@dataclass(frozen=True, slots=True)
class SerialSpec:
    """An RS-485 line; every device on one port shares it."""

    port: str
    baudrate: int
    parity: str  # "N", "E" or "O"
    stopbits: int
    bytesize: int


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
    revert_pct: float = 100.0  # where a SunSpec 704 PV inverter reverts when we go quiet

    @property
    def endpoint(self) -> tuple[str, int | str]:
        """The shared connection the device is on: its serial port, or TCP host:port."""
        if self.serial is not None:
            return ("serial", self.serial.port)
        return (self.host, self.port)

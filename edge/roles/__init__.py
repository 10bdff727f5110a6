"""The device roles: one module each, registered here. Everything role-specific the daemon
does is asked of `ROLES`; see docs/adding-a-role.md."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from edge.roles.battery import Battery, BatteryDevice, BmsParams
from edge.roles.breaker import Breaker, BreakerDevice
from edge.roles.dcdc import DcConverter, DcConverterDevice
from edge.roles.evcharger import EvCharger, EvChargerDevice
from edge.roles.flexload import FlexLoad, FlexLoadDevice
from edge.roles.hvac import Hvac, HvacDevice
from edge.roles.meter import Meter, MeterDevice
from edge.roles.pv import Pv, PvDevice
from edge.roles.role import Memory, Part, Role, Written
from edge.roles.tes import ThermalStorage, ThermalStorageDevice

# Order matters where roles meet: the kernel's blocks and the telemetry fields follow it.
ROLES: dict[str, Role] = {r.name: r for r in (Pv(), Battery(), Meter(), FlexLoad(), DcConverter(),
                                                  EvCharger(), Breaker(), Hvac(),
                                                  ThermalStorage())}

DeviceConfig = Annotated[
    PvDevice | BatteryDevice | MeterDevice | FlexLoadDevice | DcConverterDevice
    | EvChargerDevice | BreakerDevice | HvacDevice | ThermalStorageDevice,
    Field(discriminator="role"),
]


def role_of(dev: Any) -> Role:
    return ROLES[dev.role]


def grouped(devices: list[Any]) -> dict[str, list[Any]]:
    """The devices of each role, in config order (every role present, maybe empty)."""
    out: dict[str, list[Any]] = {name: [] for name in ROLES}
    for d in devices:
        out[d.role].append(d)
    return out


__all__ = ["ROLES", "BatteryDevice", "BmsParams", "BreakerDevice", "Part", "DcConverterDevice",
           "DeviceConfig", "EvChargerDevice", "FlexLoadDevice", "HvacDevice", "Memory",
           "MeterDevice", "PvDevice", "Role", "ThermalStorageDevice", "Written", "grouped",
           "role_of"]

"""The simulators by device role and protocol: `build(cfg)` picks the class a config's device
needs. Adding a role to the simulator is one module with its class (which answers what the
site asks: `step`, `account`, `rating_kw`, `building_load`) and one line in `SIMULATORS`.

A class that names `protocols` serves that role over those protocols; one without serves
it over SunSpec, the default (sunspec-tcp, sunspec-rtu); `CHAINS` serves it when the config
chooses another SunSpec model chain (`sim.models`).
"""

from __future__ import annotations

from drivers.sunspec.models import SunSpecError
from edge.config import DeviceConfig
from hil.config import sim_of
from hil.devices.base import SimulatedDevice
from hil.devices.breaker import MapBreakerSim
from hil.devices.dcbus import MapDcBusSim
from hil.devices.dlt645 import Dlt645SimMeter
from hil.devices.evcharger import EvChargerSim
from hil.devices.flexload import MapFlexLoadSim
from hil.devices.hvac import MapHvacSim, MapTesSim
from hil.devices.mapped import MapBatteryPcs, MapThreePhaseMeter
from hil.devices.sunspec import BatteryPcs, Meter, PvInverter
from hil.devices.variants import BatteryVariant, MeterVariant, PvVariant

SIMULATORS: tuple[type[SimulatedDevice], ...] = (
    PvInverter, BatteryPcs, Meter, MapBatteryPcs, MapThreePhaseMeter, MapFlexLoadSim,
    MapDcBusSim, Dlt645SimMeter, EvChargerSim, MapBreakerSim, MapHvacSim, MapTesSim,
)
CHAINS: dict[str, type[SimulatedDevice]] = {
    cls.role: cls for cls in (PvVariant, BatteryVariant, MeterVariant)
}

SUNSPEC: dict[str, type[SimulatedDevice]] = {}  # role -> SunSpec simulator (the default)
BY_PROTOCOL: dict[tuple[str, str], type[SimulatedDevice]] = {}  # (role, protocol) -> simulator


def register(cls: type[SimulatedDevice]) -> type[SimulatedDevice]:
    """By role (SunSpec, the default), or by role and protocol when the class names them."""
    for proto in cls.protocols:
        BY_PROTOCOL[(cls.role, proto)] = cls
    if not cls.protocols:
        SUNSPEC[cls.role] = cls
    return cls


for _cls in SIMULATORS:
    register(_cls)
_NOT_SUNSPEC = {proto for _, proto in BY_PROTOCOL}  # never fall back to SunSpec


def simulator_for(cfg: DeviceConfig) -> type[SimulatedDevice]:
    """The class that simulates `cfg`'s device; SunSpecError when the HIL has none."""
    cls = BY_PROTOCOL.get((cfg.role, cfg.protocol))
    models = sim_of(cfg).models
    if cls is None and cfg.protocol not in _NOT_SUNSPEC:
        cls = SUNSPEC.get(cfg.role)
        if models is not None:  # another model chain: hil/devices/variants.py
            cls = CHAINS.get(cfg.role)
    elif models is not None:
        raise SunSpecError(f"device {cfg.id}: sim.models chooses a SunSpec model chain; "
                           f"protocol {cfg.protocol} has none: remove sim.models")
    if cls is None:
        raise SunSpecError(
            f"device {cfg.id}: the HIL has no simulator for role {cfg.role!r} "
            f"over {cfg.protocol}"
        )
    return cls


def build(cfg: DeviceConfig, site_max_kw: float) -> SimulatedDevice:
    return simulator_for(cfg)(cfg, site_max_kw)

"""Build role drivers from the site config, sharing one endpoint per host:port."""

from __future__ import annotations

from drivers.base import Device
from drivers.sunspec_tcp import Endpoint, SunSpecBattery, SunSpecMeter, SunSpecPv
from edge.config import BatteryDevice, Config, MeterDevice, PvDevice

_ROLES = {PvDevice: SunSpecPv, BatteryDevice: SunSpecBattery, MeterDevice: SunSpecMeter}


def build_devices(config: Config) -> dict[str, Device]:
    endpoints: dict[tuple[str, int], Endpoint] = {}
    devices: dict[str, Device] = {}
    for dev in config.devices:
        key = (dev.host, dev.port)
        if key not in endpoints:
            endpoints[key] = Endpoint(dev.host, dev.port, dev.timeout_s)
        devices[dev.id] = _ROLES[type(dev)](dev.id, endpoints[key], dev.unit_id)
    return devices

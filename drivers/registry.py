"""Build role drivers from the site config: one builder per protocol, one shared endpoint
per TCP host:port or serial port. A new protocol registers a builder here."""

from __future__ import annotations

from collections.abc import Callable

from drivers import dlt645
from drivers.base import Device
from drivers.modbus_map import modbus_tcp_builder as _modbus_map
from drivers.modbus_serial import SerialEndpoint
from drivers.sunspec_tcp import Endpoint, SunSpecBattery, SunSpecMeter, SunSpecPv
from edge.config import BatteryDevice, Config, MeterDevice, PvDevice

_SUNSPEC_ROLES = {PvDevice: SunSpecPv, BatteryDevice: SunSpecBattery, MeterDevice: SunSpecMeter}

# protocol -> (device config, shared endpoints keyed by config.endpoint) -> driver
Builder = Callable[[PvDevice | BatteryDevice | MeterDevice, dict], Device]


def _sunspec_tcp(dev, endpoints: dict) -> Device:
    key = dev.endpoint
    if key not in endpoints:
        endpoints[key] = Endpoint(dev.host, dev.port, dev.timeout_s)
    return _SUNSPEC_ROLES[type(dev)](dev.id, endpoints[key], dev.unit_id)


def _dlt645(dev, endpoints: dict) -> Device:
    if not isinstance(dev, MeterDevice):
        raise ValueError(f"device {dev.id}: DL/T 645 is a meter protocol; role must be meter")
    if dev.protocol == "dlt645-tcp":
        opener = dlt645.Tcp(dev.host, dev.port)
    else:
        s = dev.serial
        # DL/T 645 meters default to 2400 8E1 (DOMAIN §5), not the Modbus 9600 8N1 defaults.
        given = s.model_fields_set
        opener = dlt645.Serial(s.port, s.baudrate if "baudrate" in given else 2400,
                               s.parity if "parity" in given else "E")
    return dlt645.Dlt645Meter(dev.id, dev.address, opener, dev.timeout_s)


def _sunspec_rtu(dev, endpoints: dict) -> Device:
    key = dev.endpoint  # ("serial", port): every unit on the bus shares one master
    if key not in endpoints:
        endpoints[key] = SerialEndpoint(dev.serial, dev.timeout_s)
    return _SUNSPEC_ROLES[type(dev)](dev.id, endpoints[key], dev.unit_id)


BUILDERS: dict[str, Builder] = {
    "sunspec-tcp": _sunspec_tcp,
    "modbus-tcp": _modbus_map,
    "sunspec-rtu": _sunspec_rtu,
    "dlt645-tcp": _dlt645,
    "dlt645-serial": _dlt645,
}


class UnsupportedProtocol(ValueError):
    """The config names a protocol no driver is built for yet."""


def build_devices(config: Config) -> dict[str, Device]:
    endpoints: dict = {}
    devices: dict[str, Device] = {}
    for dev in config.devices:
        builder = BUILDERS.get(dev.protocol)
        if builder is None:
            raise UnsupportedProtocol(
                f"device {dev.id}: protocol {dev.protocol} has no driver yet "
                f"(available: {', '.join(sorted(BUILDERS))})"
            )
        devices[dev.id] = builder(dev, endpoints)
    return devices

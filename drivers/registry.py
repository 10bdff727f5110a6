"""Build role drivers from the site config: one builder per protocol, one shared endpoint
per TCP host:port or serial port. A new protocol registers a builder here."""

from __future__ import annotations

from collections.abc import Callable

from drivers import dlt645
from drivers.base import Device
from drivers.modbus_map import modbus_builder as _modbus_map
from drivers.modbus_serial import SerialEndpoint
from drivers.sunspec_tcp import Endpoint, SunSpecBattery, SunSpecMeter, SunSpecPv
from edge.config import BatteryDevice, Config, MeterDevice, PvDevice

_SUNSPEC_ROLES = {PvDevice: SunSpecPv, BatteryDevice: SunSpecBattery, MeterDevice: SunSpecMeter}

# protocol -> (device config, shared endpoints keyed by config.endpoint) -> driver
Builder = Callable[[PvDevice | BatteryDevice | MeterDevice, dict], Device]


def _sunspec(dev, endpoint) -> Device:
    if isinstance(dev, PvDevice):
        # build_devices resolved safe_limit_pct: where a 704 inverter reverts when we go quiet
        return SunSpecPv(dev.id, endpoint, dev.unit_id, revert_pct=dev.safe_limit_pct)
    return _SUNSPEC_ROLES[type(dev)](dev.id, endpoint, dev.unit_id)


def _sunspec_tcp(dev, endpoints: dict) -> Device:
    key = dev.endpoint
    if key not in endpoints:
        endpoints[key] = Endpoint(dev.host, dev.port, dev.timeout_s)
    return _sunspec(dev, endpoints[key])


def _dlt645(dev, endpoints: dict) -> Device:
    """Every meter on one serial port or gateway shares one bus (one connection, one request
    on the wire at a time, one slow read per poll round)."""
    if not isinstance(dev, MeterDevice):
        raise ValueError(f"device {dev.id}: DL/T 645 is a meter protocol; role must be meter")
    key = ("dlt645", *dev.endpoint)
    if key not in endpoints:
        if dev.protocol == "dlt645-tcp":
            opener = dlt645.Tcp(dev.host, dev.port)
        else:
            s = dev.serial  # 2400 8E1 unless the config says otherwise (edge/config.py)
            opener = dlt645.Serial(s.port, s.baudrate, s.parity, s.bytesize, s.stopbits)
        endpoints[key] = dlt645.Dlt645Bus(opener, dev.timeout_s)
    return dlt645.Dlt645Meter(dev.id, dev.address, endpoints[key],
                              ct_ratio=dev.ct_ratio, pt_ratio=dev.pt_ratio)


def _sunspec_rtu(dev, endpoints: dict) -> Device:
    key = dev.endpoint  # ("serial", port): every unit on the bus shares one master
    if key not in endpoints:
        endpoints[key] = SerialEndpoint(dev.serial, dev.timeout_s)
    return _sunspec(dev, endpoints[key])


BUILDERS: dict[str, Builder] = {
    "sunspec-tcp": _sunspec_tcp,
    "modbus-tcp": _modbus_map,
    "modbus-rtu": _modbus_map,  # shares the port's SerialEndpoint with sunspec-rtu units
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
        if isinstance(dev, PvDevice):
            dev = dev.model_copy(update={"safe_limit_pct": 100.0 * config.pv_safe_kw(dev) / dev.rated_kw})
        devices[dev.id] = builder(dev, endpoints)
    return devices

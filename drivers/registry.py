"""Build role drivers from device specs: one builder per protocol, one shared endpoint per
TCP host:port or serial port. A new protocol registers a builder here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from drivers.base import Device
from drivers.dlt645.bus import Dlt645Bus, Serial, Tcp
from drivers.dlt645.meter import Dlt645Meter
from drivers.modbus.endpoint import Endpoint, ModbusEndpoint
from drivers.modbus.mapped import ROLES as MAP_ROLES
from drivers.modbus.mapped import MapBattery, MapDevice
from drivers.modbus.regmap import load_map, map_for
from drivers.modbus.serial import SerialEndpoint
from drivers.ocpp import Csms, OcppCharger
from drivers.ocpp.point import wall_clock
from drivers.spec import DeviceSpec
from drivers.sunspec.roles import SunSpecBattery, SunSpecMeter, SunSpecPv

Now = Callable[[], datetime]  # the site's clock (simulated under the HIL)
# protocol -> (device spec, shared endpoints keyed by spec.endpoint, the site's clock for
# protocols that tell a device the time) -> driver
Builder = Callable[[DeviceSpec, dict, Now | None], Device]


def _modbus_endpoint(spec: DeviceSpec, endpoints: dict) -> ModbusEndpoint:
    """The one Modbus master of the device's host:port or serial port (sunspec-* and
    modbus-* units there share it; the config check makes them agree on its settings)."""
    key = spec.endpoint
    if key not in endpoints:
        if spec.serial is not None:
            endpoints[key] = SerialEndpoint(spec.serial, spec.timeout_s)
        else:
            endpoints[key] = Endpoint(spec.host, spec.port, spec.timeout_s, spec.max_in_flight)
    return endpoints[key]


# role -> the SunSpec driver of that role (a 704 inverter reverts to the site's safe level)
_SUNSPEC = {
    "pv": lambda s, ep: SunSpecPv(s.id, ep, s.unit_id, revert_pct=s.revert_pct),
    "battery": lambda s, ep: SunSpecBattery(s.id, ep, s.unit_id),
    "meter": lambda s, ep: SunSpecMeter(s.id, ep, s.unit_id),
}


def _sunspec(spec: DeviceSpec, endpoints: dict, now: Now | None = None) -> Device:
    endpoint = _modbus_endpoint(spec, endpoints)
    driver = _SUNSPEC.get(spec.role)
    if driver is None:
        raise ValueError(f"device {spec.id}: no SunSpec driver for role {spec.role}")
    return driver(spec, endpoint)


def _modbus_map(spec: DeviceSpec, endpoints: dict, now: Now | None = None) -> Device:
    regmap = map_for(spec)
    endpoint = _modbus_endpoint(spec, endpoints)
    if spec.bms_map is not None and spec.bms_unit_id is not None:
        bms = MapDevice(f"{spec.id}.bms", endpoint, spec.bms_unit_id, load_map(spec.bms_map),
                        spec.protocol)
        return MapBattery(spec.id, endpoint, spec.unit_id, regmap, spec.protocol, bms=bms,
                          auto_transfer=spec.auto_transfer)
    if spec.role == "battery":
        return MapBattery(spec.id, endpoint, spec.unit_id, regmap, spec.protocol,
                          auto_transfer=spec.auto_transfer)
    return MAP_ROLES[spec.role](spec.id, endpoint, spec.unit_id, regmap, spec.protocol)


def _dlt645(spec: DeviceSpec, endpoints: dict, now: Now | None = None) -> Device:
    """Every meter on one serial port or gateway shares one bus (one connection, one request
    on the wire at a time, one slow read per poll round)."""
    if spec.role != "meter":
        raise ValueError(f"device {spec.id}: DL/T 645 is a meter protocol; role must be meter")
    if spec.address is None:
        raise ValueError(f"device {spec.id}: DL/T 645 needs the meter address")
    key = ("dlt645", *spec.endpoint)
    if key not in endpoints:
        if (s := spec.serial) is not None:
            opener: Tcp | Serial = Serial(s.port, s.baudrate, s.parity, s.bytesize, s.stopbits)
        else:
            opener = Tcp(spec.host, spec.port)
        endpoints[key] = Dlt645Bus(opener, spec.timeout_s)
    return Dlt645Meter(spec.id, spec.address, endpoints[key],
                       ct_ratio=spec.ct_ratio, pt_ratio=spec.pt_ratio)


def _ocpp(spec: DeviceSpec, endpoints: dict, now: Now | None = None) -> Device:
    """Chargers connect to us: every charger on one listen host:port shares one CSMS."""
    if spec.role != "ev_charger" or spec.ocpp is None:
        raise ValueError(f"device {spec.id}: OCPP drives EV chargers (role ev_charger with "
                         "its charge point settings)")
    o = spec.ocpp
    key = ("ocpp", o.listen_host, o.listen_port)
    if key not in endpoints:
        endpoints[key] = Csms(o.listen_host, o.listen_port)
    return OcppCharger(spec.id, o, endpoints[key], now=now or wall_clock)


BUILDERS: dict[str, Builder] = {
    "sunspec-tcp": _sunspec,
    "sunspec-rtu": _sunspec,  # shares the port's SerialEndpoint with modbus-rtu units
    "modbus-tcp": _modbus_map,
    "modbus-rtu": _modbus_map,
    "dlt645-tcp": _dlt645,
    "dlt645-serial": _dlt645,
    "ocpp": _ocpp,
}


class UnsupportedProtocol(ValueError):
    """The spec names a protocol no driver is built for yet."""


def build_device(spec: DeviceSpec, endpoints: dict, now: Now | None = None) -> Device:
    """The driver of one device; `endpoints` (shared across a site's calls) holds one
    connection per host:port or serial port; `now` is the site's clock, for protocols that
    tell the device the time (default: the wall clock)."""
    builder = BUILDERS.get(spec.protocol)
    if builder is None:
        raise UnsupportedProtocol(
            f"device {spec.id}: protocol {spec.protocol} has no driver yet "
            f"(available: {', '.join(sorted(BUILDERS))})"
        )
    return builder(spec, endpoints, now)

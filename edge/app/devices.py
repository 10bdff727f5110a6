"""The site config's devices as driver specs: the one place edge maps its config onto what
the drivers need (drivers.spec), so drivers never see the config."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from drivers.base import Device
from drivers.modbus.regmap import MapError, load_map, map_for
from drivers.registry import build_device
from drivers.spec import DeviceSpec, SerialSpec
from edge.config import Config
from edge.roles import role_of


def device_spec(config: Config, dev) -> DeviceSpec:
    """What the driver of `dev` needs: where it lives, plus what its role adds (a PV
    inverter's revert level, a battery's BMS, a meter's transformer ratios)."""
    s = dev.serial if dev.endpoint[0] == "serial" else None
    return DeviceSpec(
        id=dev.id, role=dev.role, protocol=dev.protocol, host=dev.host, port=dev.port,
        serial=None if s is None else SerialSpec(s.port, s.baudrate, s.parity, s.stopbits,
                                                 s.bytesize),
        unit_id=dev.unit_id, map=dev.map, address=dev.address, timeout_s=dev.timeout_s,
        max_in_flight=dev.max_in_flight,
        **role_of(dev).driver_options(dev, config),
    )


def build_devices(config: Config, now: Callable[[], datetime] | None = None
                  ) -> dict[str, Device]:
    """Every configured device's driver, sharing one endpoint per host:port or serial port;
    `now` is the site's clock (simulated under the HIL), for protocols that carry the time."""
    endpoints: dict = {}
    return {dev.id: build_device(device_spec(config, dev), endpoints, now)
            for dev in config.devices}


def check_maps(config: Config) -> list[str]:
    """One `devices[i].map: ...` line per problem of the config's modbus devices' maps
    (for `pedf-edge check`)."""
    problems = []
    for i, dev in enumerate(config.devices):
        if not dev.protocol.startswith("modbus-"):
            continue
        try:
            map_for(dev)
        except MapError as exc:
            problems += [f"devices[{i}].map: {exc.source}: {p}" for p in exc.problems]
        if (bms := getattr(dev, "bms", None)) is not None:
            try:
                load_map(bms.map)
            except MapError as exc:
                problems += [f"devices[{i}].bms.map: {exc.source}: {p}" for p in exc.problems]
    return problems

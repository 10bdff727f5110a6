"""Simulated devices on a Modbus RTU bus: one pymodbus RTU server on a serial port (a real
adapter, or one end of a pseudo-terminal pair in tests) answers for every unit id on it.

Like a real RS-485 bus, a request to a unit id nobody serves, or to a unit stopped by fault
injection (`online` False), gets no answer at all: the master times out. (Over TCP the HIL
answers a stopped unit with GATEWAY_NO_RESPONSE instead, as a gateway would.)

SunSpec units (sunspec-rtu) and register-map units (modbus-rtu) share a bus as they would
in the field. A configured port that does not exist becomes a virtual cable (hil/serve/cable.py)
whose controller end is linked at that path, so a simulated site needs no adapters.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from pymodbus import FramerType
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import SimDevice

from edge.config import SerialParams
from hil.devices.base import SimulatedDevice
from hil.serve.cable import VirtualCable, needs_cable

log = logging.getLogger(__name__)

# Config protocols whose devices the HIL serves as Modbus RTU units on a serial bus.
RTU_PROTOCOLS = frozenset({"sunspec-rtu", "modbus-rtu"})


def _bus_unit(dev: SimulatedDevice) -> SimDevice:
    """The device's SimDevice, made silent while it is offline: pymodbus drops a request
    whose unit "does not exist" without replying when `ignore_missing_devices` is set."""
    sim = dev.sim_device()
    inner = sim.action

    async def action(*args):  # type: ignore[no-untyped-def]
        if not dev.online:
            raise NoSuchIdException(f"{dev.id} (unit {dev.cfg.unit_id}) is offline")
        return await inner(*args) if inner else None

    return dataclasses.replace(sim, action=action)


async def serve_rtu(devices: list[SimulatedDevice], serial: SerialParams) -> ModbusSerialServer:
    """Open `serial.port` and answer for `devices` (by their unit ids); serving on return.
    Stop with `await server.shutdown()`, which closes the port."""
    ids = ", ".join(f"{d.id} (unit {d.cfg.unit_id})" for d in devices)
    server = ModbusSerialServer(
        [_bus_unit(d) for d in devices], framer=FramerType.RTU, port=serial.port,
        baudrate=serial.baudrate, bytesize=serial.bytesize, parity=serial.parity,
        stopbits=serial.stopbits, ignore_missing_devices=True,
    )
    try:
        await server.serve_forever(background=True)  # returns once the port is open
    except RuntimeError:
        pty = " (a simulated bus on a pseudo-terminal needs parity N)" if serial.parity == "E" else ""
        raise OSError(
            f"HIL cannot open serial port {serial.port} for {ids}; does it exist, and is it "
            f"free (not held by another program)?{pty} change `serial` in the config"
        ) from None
    log.info("HIL serving %s on %s (RTU %d %d%s%d)", ids, serial.port, serial.baudrate,
             serial.bytesize, serial.parity, serial.stopbits)
    return server


@dataclass
class RtuBus:
    """The simulated devices on one serial port, with start/stop for fault injection
    (stopping closes the port: the bus goes silent for every unit on it)."""

    serial: SerialParams
    devices: list[SimulatedDevice] = field(default_factory=list)
    server: ModbusSerialServer | None = None
    cable: VirtualCable | None = None  # when the configured port is simulated too

    def add(self, device: SimulatedDevice) -> None:
        if device.cfg.serial != self.serial:
            raise ValueError(
                f"device {device.id}: serial settings {device.cfg.serial} differ from the other "
                f"units on {self.serial.port} ({self.serial}); one bus has one line setting"
            )
        self.devices.append(device)

    @property
    def serving(self) -> bool:
        return self.server is not None

    async def start(self) -> None:
        if self.server is None:
            if self.cable is None and needs_cable(self.serial.port):
                self.cable = VirtualCable(self.serial.port)
            serial = self.serial
            if self.cable is not None:
                serial = serial.model_copy(update={"port": self.cable.hil_port})
            self.server = await serve_rtu(self.devices, serial)

    async def stop(self) -> None:
        """The bus goes silent; a virtual cable stays plugged in (see `close`)."""
        if self.server is not None:
            server, self.server = self.server, None
            await server.shutdown()
            log.info("HIL stopped serving %s", self.serial.port)

    async def close(self) -> None:
        """Stop serving and unplug the virtual cable, if any."""
        await self.stop()
        if self.cable is not None:
            self.cable.close()
            self.cable = None

"""Modbus RTU on an RS-485 bus: the serial counterpart of the TCP `Endpoint`, so the same
drivers (SunSpec, register maps) run over either.

One bus is one half-duplex wire with one master: every unit id on a port shares one
`SerialEndpoint` (one client, one lock), so a request is answered or timed out before the
next one, to any unit, goes out. Between frames the bus stays silent for at least 3.5
character times (Modbus over serial line V1.02 §2.5.1.1; a fixed 1.75 ms above 19200 bit/s).
pymodbus frames RTU but does not pace requests, so the endpoint does it.

After a timeout the port is closed and re-opened on the next request: re-opening flushes
the input buffer, so a late reply to the abandoned request is never read as the answer to
the next one.
"""

from __future__ import annotations

import asyncio
import time

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from drivers.modbus.endpoint import ModbusEndpoint
from drivers.modbus.fastpdu import fast_registers
from drivers.spec import SerialSpec


def frame_gap_s(serial: SerialSpec) -> float:
    """The minimum silence between two RTU frames (t3.5) for this line setting."""
    if serial.baudrate > 19200:
        return 0.00175
    bits = 1 + serial.bytesize + (serial.parity != "N") + serial.stopbits
    return 3.5 * bits / serial.baudrate


class SerialEndpoint(ModbusEndpoint):
    """One Modbus RTU master on a serial port, shared by every unit id on that bus."""

    transport = "rtu"
    _connect_failed_hint = (
        "cannot open the serial port (missing, no permission, or held by another program)"
    )

    def __init__(self, serial: SerialSpec, timeout_s: float) -> None:
        super().__init__(timeout_s)
        self.serial = serial
        self.gap_s = frame_gap_s(serial)
        self._quiet_from = 0.0  # monotonic time the bus has been silent long enough

    @property
    def name(self) -> str:
        return self.serial.port

    def _new_client(self) -> AsyncModbusSerialClient:
        s = self.serial
        client = AsyncModbusSerialClient(
            s.port, framer=FramerType.RTU, baudrate=s.baudrate, bytesize=s.bytesize,
            parity=s.parity, stopbits=s.stopbits, timeout=self.timeout_s, retries=0,
            reconnect_delay=0, name=f"rtu {s.port}",
        )
        fast_registers(client.register)
        return client

    async def _pace(self) -> None:
        while (wait := self._quiet_from - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    def _done(self) -> None:
        self._quiet_from = time.monotonic() + self.gap_s

"""Register responses decoded in one `struct.unpack`: pymodbus 3.16 unpacks a holding or
input register response one register at a time (a 120-register block took ~100 µs here,
most of a poll's client-side CPU). The classes are pymodbus's own, registered with each
client's decoder (`register`, its hook for custom responses), so framing, error replies
and every other function code stay pymodbus's. pymodbus also renders every decoded response
for a debug line it builds whether or not debug logging is on; these classes render as a
short summary instead of all their registers (another ~10 % of a poll's CPU)."""

from __future__ import annotations

import struct

from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)


def _decode(pdu: ModbusPDU, data: bytes) -> None:
    count = data[0] if data else 0
    if count >= len(data) or count % 2:
        raise ModbusIOException(f"byte_count {count} does not fit a packet of {len(data)} bytes",
                                function_code=pdu.function_code)
    pdu.registers = list(struct.unpack(f">{count // 2}H", data[1:1 + count]))


def _summary(pdu: ModbusPDU) -> str:
    return (f"{type(pdu).__name__}(dev_id={pdu.dev_id}, transaction_id={pdu.transaction_id}, "
            f"{len(pdu.registers)} registers)")


class FastHoldingRegisters(ReadHoldingRegistersResponse):
    def decode(self, data: bytes) -> None:
        _decode(self, data)

    __str__ = _summary


class FastInputRegisters(ReadInputRegistersResponse):
    def decode(self, data: bytes) -> None:
        _decode(self, data)

    __str__ = _summary


FAST_RESPONSES: tuple[type[ModbusPDU], ...] = (FastHoldingRegisters, FastInputRegisters)


def fast_registers(register) -> None:
    """Hand each fast response class to a client's (or a decoder's) `register`."""
    for cls in FAST_RESPONSES:
        register(cls)

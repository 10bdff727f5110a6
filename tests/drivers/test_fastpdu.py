"""Register responses decoded in one unpack decode exactly what pymodbus's own classes
decode, refuse a byte count that does not fit, and are what every client here uses."""

from __future__ import annotations

import random

import pytest
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from drivers.modbus.endpoint import Endpoint
from drivers.modbus.fastpdu import FastHoldingRegisters, FastInputRegisters
from drivers.modbus.pipeline import PipelinedTcpClient


@pytest.mark.parametrize("theirs, ours", [(ReadHoldingRegistersResponse, FastHoldingRegisters),
                                          (ReadInputRegistersResponse, FastInputRegisters)])
def test_a_fast_register_response_decodes_what_pymodbus_decodes(theirs, ours):
    rng = random.Random(7)
    for n in (0, 1, 2, 17, 120, 125):
        regs = [rng.randrange(0x10000) for _ in range(n)]
        frame = theirs(registers=regs).encode()
        a, b = theirs(), ours()
        a.decode(frame)
        b.decode(frame)
        assert b.registers == a.registers == regs
        assert b.function_code == a.function_code


@pytest.mark.parametrize("frame", [b"", b"\x04\x00\x01", b"\x03\x00\x01\x00", b"\x05" + bytes(5)])
def test_a_register_response_whose_byte_count_does_not_fit_is_refused(frame):
    with pytest.raises(ModbusIOException):
        FastHoldingRegisters().decode(frame)


async def test_every_tcp_client_decodes_register_replies_with_the_fast_classes():
    plain = Endpoint("127.0.0.1", 1, timeout_s=0.1)._new_client()
    piped = PipelinedTcpClient("127.0.0.1", 1, 0.1, 4)
    for decoder in (plain.ctx.framer.decoder, piped._framer.decoder):
        assert decoder.pdu_table[3][1] is FastHoldingRegisters
        assert decoder.pdu_table[4][1] is FastInputRegisters

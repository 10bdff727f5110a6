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
from drivers.modbus.serial import SerialEndpoint
from drivers.spec import SerialSpec


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


async def test_every_modbus_client_decodes_register_replies_with_the_fast_classes():
    one_at_a_time = Endpoint("127.0.0.1", 1, timeout_s=0.1)._new_client()
    piped = Endpoint("127.0.0.1", 1, timeout_s=0.1, max_in_flight=4)._new_client()
    rtu = SerialEndpoint(SerialSpec("/dev/null", 9600, "N", 1, 8), timeout_s=0.1)._new_client()
    assert isinstance(one_at_a_time, PipelinedTcpClient) and isinstance(piped, PipelinedTcpClient)
    for decoder in (one_at_a_time._framer.decoder, piped._framer.decoder,
                    rtu.ctx.framer.decoder):
        assert decoder.pdu_table[3][1] is FastHoldingRegisters
        assert decoder.pdu_table[4][1] is FastInputRegisters


def test_a_fast_register_response_renders_as_a_summary_not_its_registers():
    """pymodbus renders each decoded response for a debug line even with debug off: a
    120-register block must not be turned into a string on every poll."""
    pdu = FastHoldingRegisters()
    pdu.decode(ReadHoldingRegistersResponse(registers=list(range(1000, 1120))).encode())
    pdu.dev_id, pdu.transaction_id = 3, 41
    text = str(pdu)
    assert text == "FastHoldingRegisters(dev_id=3, transaction_id=41, 120 registers)"
    assert len(text) < len(str(ReadHoldingRegistersResponse(registers=list(range(1000, 1120)))))

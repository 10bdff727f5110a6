"""Every SunSpec AC meter model (201 single, 202 split, 203 wye, 204 delta) reads the same:
power with our sign (+import) and the cumulative counters, over a real Modbus socket."""

import asyncio

import pytest
from conftest import free_port
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.base import DeviceError
from drivers.modbus.endpoint import Endpoint
from drivers.sunspec import models as sunspec
from drivers.sunspec.roles import SunSpecMeter


def meter_image(model_id: int, watts: int, wh_imp: int, wh_exp: int) -> list[int]:
    regs = sunspec.chain_registers([1, model_id])
    start = sunspec.layout([1, model_id], base=0)[model_id]
    mdef = sunspec.model(model_id)
    for name, value in (("W", watts), ("W_SF", 0), ("TotWhImp", wh_imp), ("TotWhExp", wh_exp),
                        ("TotWh_SF", 0)):
        p = mdef.point(name)
        regs[start + p.offset:start + p.offset + p.size] = sunspec.encode_point(p, value)
    return regs


async def serve(image: list[int]) -> tuple[ModbusTcpServer, int]:
    port = free_port()
    device = SimDevice(id=1, simdata=[SimData(address=40000, values=image, datatype=DataType.REGISTERS)])
    server = ModbusTcpServer([device], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server, port


@pytest.mark.parametrize("model_id", [201, 202, 203, 204])
async def test_each_ac_meter_model_reads_power_and_counters(model_id):
    server, port = await serve(meter_image(model_id, watts=-1500, wh_imp=12345, wh_exp=678))
    meter = SunSpecMeter("pcc", Endpoint("127.0.0.1", port, 1.0), 1)
    try:
        reading = await asyncio.wait_for(meter.poll(), 10)
    finally:
        await meter.close()
        await server.shutdown()
    assert reading.values == {"power_kw": -1.5, "import_kwh": 12.345, "export_kwh": 0.678}


async def test_device_without_a_meter_model_is_refused_with_what_it_has():
    server, port = await serve(sunspec.chain_registers([1, 103]))
    meter = SunSpecMeter("pcc", Endpoint("127.0.0.1", port, 1.0), 1)
    try:
        with pytest.raises(DeviceError, match=r"no SunSpec meter model 201-204 \(found \[1, 103\]\)"):
            await meter.poll()
    finally:
        await meter.close()
        await server.shutdown()

"""Bus time on a simulated RS-485 bus (virtual cable, hil/serve/cable.py): what one Modbus RTU
poll of a map device and of a SunSpec unit costs, and what a DL/T 645 poll round of two
meters costs, next to the wire-time estimate the config check uses at real baud rates.

    python tests/bench/bench_serial.py

A pseudo-terminal has no baud rate, so these are the software and t3.5-gap costs; on a real
bus add the wire time (`drivers.dlt645.frame.poll_round_s`, Modbus: 11 bits per character).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from drivers.dlt645.frame import poll_round_s
from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.config import parse
from hil.config import hil_of
from hil.site import SimSite

N = 200
TARIFF = {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]}


async def timed(label: str, call) -> None:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(N):
        t0 = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    print(f"{label:<44} median {statistics.median(samples):6.2f} ms   "
          f"p95 {samples[int(0.95 * N)]:6.2f} ms")


async def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    rtu = {"port": str(tmp / "rtu"), "baudrate": 19200}
    dlt = {"port": str(tmp / "dlt"), "parity": "N"}
    cfg = parse({
        "site": {"id": "bench"}, "tariff": TARIFF,
        "devices": [
            {"id": "pcc", "role": "meter", "protocol": "sunspec-rtu", "serial": rtu, "unit_id": 1},
            {"id": "load", "role": "meter", "measures": "load", "protocol": "modbus-rtu",
             "map": "meter3p_generic", "serial": rtu, "unit_id": 2},
            {"id": "m1", "role": "meter", "measures": "load", "protocol": "dlt645-serial",
             "address": "000000000001", "serial": dlt},
            {"id": "m2", "role": "meter", "measures": "load", "protocol": "dlt645-serial",
             "address": "000000000002", "serial": dlt},
        ]})
    site = SimSite(cfg, Clock(hil_of(cfg).start, 1.0))
    await site.start()
    devs = build_devices(cfg)
    try:
        for dev in devs.values():
            await dev.connect()
        await timed("Modbus RTU map meter poll (1 request)", devs["load"].poll)
        await timed("Modbus RTU SunSpec meter poll", devs["pcc"].poll)
        await timed("DL/T 645 round, 2 meters (3 requests)",
                    lambda: asyncio.gather(devs["m1"].poll(), devs["m2"].poll()))
    finally:
        for dev in devs.values():
            await dev.close()
        await site.stop()
    print("\nDL/T 645 poll round on the wire (config check estimate):")
    for baud, parity in ((2400, True), (2400, False), (9600, True)):
        rounds = ", ".join(f"{n} meters {poll_round_s(n, baud, parity=parity):.2f} s"
                           for n in (1, 2, 3))
        print(f"  {baud} bit/s 8{'E' if parity else 'N'}1: {rounds}")


if __name__ == "__main__":
    asyncio.run(main())

"""What one poll of a SunSpec device costs on each model chain: Modbus requests and
registers per poll (reads, writes: heartbeats) and poll latency, for the classic chains and
the 7xx DER ones, averaged over SLOW_EVERY polls so the slow class (nameplates, 802 static
part, model 1) counts with its real share.

The HIL devices run in this process on loopback Modbus TCP (pymodbus server on the same
event loop), so latency includes the server's work; requests and registers are exact.

Run: python tests/bench/bench_sunspec_chains.py [--polls 240]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import datetime

from benchlib import environment, free_port, pct

from drivers.modbus.endpoint import Endpoint
from drivers.sunspec.device import SLOW_EVERY
from drivers.sunspec.roles import SunSpecBattery, SunSpecPv
from edge.app.clock import Clock
from edge.config import parse
from hil.site import SimSite

CHAINS = {
    "pv 1/103/120/123": ("pv", [1, 103, 120, 123]),
    "pv 1/111/120/123 (float)": ("pv", [1, 111, 120, 123]),
    "pv 1/701/702/704/715 (DER)": ("pv", [1, 701, 702, 704, 715]),
    "bess 1/103/124/802": ("battery", [1, 103, 124, 802]),
    "bess 1/701/702/704/713/715/802": ("battery", [1, 701, 702, 704, 713, 715, 802]),
}


class CountingEndpoint(Endpoint):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.reads = self.writes = self.registers = 0

    async def read(self, unit, address, count, input_registers=False):  # type: ignore[no-untyped-def]
        self.reads += 1 + (count - 1) // 120
        self.registers += count
        return await super().read(unit, address, count, input_registers)

    async def write(self, unit, address, values):  # type: ignore[no-untyped-def]
        self.writes += 1
        self.registers += len(values)
        return await super().write(unit, address, values)


async def measure(role: str, chain: list[int], polls: int) -> dict:
    dev = {"id": "d", "role": role, "host": "127.0.0.1", "port": free_port(),
           "sim": {"models": chain}}
    if role == "pv":
        dev["rated_kw"] = 100
    else:
        dev.update(capacity_kwh=200, max_charge_kw=60, max_discharge_kw=60)
    cfg = parse({"site": {"id": "b"}, "devices": [dev, {"id": "pcc", "host": "127.0.0.1", "role": "meter",
                                                         "port": free_port()}],
                 "tariff": {"periods": [{"name": "f", "start": "00:00", "end": "00:00",
                                         "price": 1}]}})
    site = SimSite(cfg, Clock(datetime.fromisoformat("2026-06-22T12:00:00+08:00"), 1.0))
    await site.start()
    ep = CountingEndpoint("127.0.0.1", dev["port"], 1.0)
    drv = (SunSpecPv if role == "pv" else SunSpecBattery)("d", ep, 1)
    try:
        await drv.poll()  # discovery is not part of the steady state
        ep.reads = ep.writes = ep.registers = 0
        times = []
        for _ in range(polls):
            t0 = time.perf_counter()
            await drv.poll()
            times.append((time.perf_counter() - t0) * 1000)
        uses = drv.describe()["uses"]
    finally:
        await drv.close()
        await site.stop()
    return {"reads": ep.reads / polls, "writes": ep.writes / polls,
            "registers": ep.registers / polls, "p50": statistics.median(times),
            "p99": pct(times, 99), "uses": uses}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--polls", type=int, default=4 * SLOW_EVERY)
    polls = ap.parse_args().polls
    print(environment())
    print(f"{polls} polls per chain (slow models every {SLOW_EVERY})")
    print(f"{'chain':34} {'reads':>6} {'writes':>6} {'regs':>6} {'p50 ms':>7} {'p99 ms':>7}  uses")
    for name, (role, chain) in CHAINS.items():
        r = await measure(role, chain, polls)
        print(f"{name:34} {r['reads']:6.2f} {r['writes']:6.2f} {r['registers']:6.1f} "
              f"{r['p50']:7.2f} {r['p99']:7.2f}  {r['uses']}")


if __name__ == "__main__":
    asyncio.run(main())

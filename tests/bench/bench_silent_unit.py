"""Poll-round time on a shared RS-485 bus while one unit is dead: the figure behind
tests/drivers/test_sunspec_driver.py and test_modbus_map_rtu.py, which prove the behaviour
(the dead unit takes the bus for one request per backoff window, its neighbours are read
every round) without timing anything.

Three SunSpec RTU units on one simulated bus (a virtual cable, hil/serve/cable.py): PV (1),
battery (2), PCC meter (3). The battery stops answering; then for `--seconds` the three are
polled together, every poll under the cycle's poll deadline at a 1 s cycle, as edge/cycle.py
does. Printed: round times of the rounds where the dead unit was probed (one timeout on the
bus) and of those where it was backing off, and how often a neighbour missed the deadline.

    python tests/bench/bench_silent_unit.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import environment

from drivers.base import DeviceError
from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.config import parse, poll_deadline_s
from hil.config import hil_of
from hil.site import SimSite

CYCLE_S = 1.0
TARIFF = {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]}


def site_config(port: Path):  # type: ignore[no-untyped-def]
    bus = {"port": str(port), "baudrate": 19200}
    return parse({
        "site": {"id": "bench-silent"}, "tariff": TARIFF, "control": {"cycle_s": CYCLE_S},
        "devices": [
            {"id": "pv1", "role": "pv", "rated_kw": 30, "protocol": "sunspec-rtu",
             "serial": bus, "unit_id": 1},
            {"id": "bess1", "role": "battery", "capacity_kwh": 40, "max_charge_kw": 20,
             "max_discharge_kw": 20, "protocol": "sunspec-rtu", "serial": bus, "unit_id": 2},
            {"id": "pcc", "role": "meter", "measures": "grid", "protocol": "sunspec-rtu",
             "serial": bus, "unit_id": 3},
        ]})


def line(label: str, ms: list[float]) -> str:
    if not ms:
        return f"  {label:<34} none"
    return (f"  {label:<34} {len(ms):4d} rounds   median {statistics.median(ms):7.1f} ms   "
            f"max {max(ms):7.1f} ms")


async def main(seconds: float) -> None:
    cfg = site_config(Path(tempfile.mkdtemp()) / "ttyRS485")
    deadline = poll_deadline_s(CYCLE_S)
    site = SimSite(cfg, Clock(hil_of(cfg).start, 1.0))
    await site.start()
    devs = build_devices(cfg)
    probe_ms: list[float] = []
    skip_ms: list[float] = []
    missed = 0
    try:
        for dev in devs.values():
            await dev.connect()
        await site.stop_device("bess1")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            results = await asyncio.gather(
                *(asyncio.wait_for(d.poll(), deadline) for d in devs.values()),
                return_exceptions=True)
            ms = (time.perf_counter() - t0) * 1000
            r = dict(zip(devs, results, strict=True))
            missed += sum(isinstance(r[k], BaseException) for k in ("pv1", "pcc"))
            skipped = isinstance(r["bess1"], DeviceError) and "backing off" in str(r["bess1"])
            (skip_ms if skipped else probe_ms).append(ms)
            await asyncio.sleep(0.1)
    finally:
        for dev in devs.values():
            await dev.close()
        await site.stop()
    timeout_ms = devs["bess1"].sunspec.endpoint.timeout_s * 1000
    print(f"SunSpec RTU bus, 3 units, unit 2 dead; poll deadline {deadline * 1000:.0f} ms at a "
          f"{CYCLE_S:g} s cycle, timeout {timeout_ms:.0f} ms, {seconds:g} s of rounds")
    print(line("dead unit probed (one timeout)", probe_ms))
    print(line("dead unit backing off", skip_ms))
    print(f"  neighbour polls past the deadline: {missed}")
    for env in environment(("pymodbus", "pyserial")):
        print(env)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # one line per timeout otherwise
    asyncio.run(main(parser.parse_args().seconds))

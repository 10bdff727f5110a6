"""OpenADR event -> register written: latency from the moment the grid operator creates an
event on its VTN to the moment the HIL battery's power register holds the new setpoint.

In one process, on loopback: the grid-operator emulator (hil/emulators/vtn.py, a real openleadr VTN),
the demo site served by the HIL over Modbus TCP, and the daemon with its OpenADR VEN, all in
real time. Each round the VTN issues a SIMPLE level-2 event starting at once; the VEN picks
it up on its next poll, opts in, and the cycle writes the battery. The write is timed where
it lands: in the simulated PCS's register write handler. Between rounds the event ends, the
battery returns to 0 kW, and a random pause puts the next event at any phase of the polling.

The end-to-end figure is dominated by the VEN's poll interval (an event waits on average half
an interval at the VTN): it is printed alongside. `received -> written` is the controller's
own part (docs/domain.md §4 budget: <= 200 ms added by the controller, p95 <= 1 s end to end from
receipt); it is one woken control cycle.

Run: python tests/bench/bench_openadr.py [--events 20] [--poll 2] [--cycle 1]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import benchlib
import yaml
from benchlib import free_port, pct

ROOT = Path(__file__).resolve().parents[2]

from edge import config as config_mod  # noqa: E402
from edge.app.clock import Clock  # noqa: E402
from edge.app.daemon import Daemon  # noqa: E402
from hil.config import hil_of  # noqa: E402
from hil.emulators.vtn import EventSpec, GridOperator, IntervalSpec  # noqa: E402
from hil.site import SimSite  # noqa: E402

LEVEL, SHED_KW = 2, 20.0


def site(state: Path, vtn_url: str, poll_s: float, cycle_s: float) -> config_mod.Config:
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs/demo.yaml").read_text()))
    for dev in data["devices"]:
        dev["port"] = free_port()
        dev["timeout_s"] = min(0.4 * cycle_s, 1.0)
        if dev["role"] == "battery":
            dev["sim"] = {"initial_soc_pct": 90}
            dev["ramp_kw_per_s"] = 1000
    data["control"].update({"cycle_s": cycle_s, "deadband_kw": 0.1,
                            "functions": ["peak_shaving", "export_limit"]})
    # No planner: its battery targets for the evening peak would keep the battery from
    # coming to rest between events, and the figure is the event's path alone.
    data["planner"] = {"enabled": False}
    data["mqtt"]["port"] = free_port()  # no broker: telemetry waits in the outbox
    data["storage"]["dir"] = str(state)
    data["hil"]["start"] = "2026-06-22T19:00:00+08:00"
    data["dr"] = {"ramp_in_s": 0, "restore_s": 0}  # a step in, a step out: the write is the figure
    data["openadr"] = {"vtn_url": vtn_url, "poll_interval_s": poll_s, "report_interval_s": 10,
                       "simple_levels_kw": {1: 10, 2: SHED_KW, 3: 40}}
    return config_mod.parse(data)


async def until(check, timeout: float, what) -> None:
    """Wait for `check()`; `what` (a string, or a function giving one) names it on time-out."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {said}")
        await asyncio.sleep(0.005)


async def bench(n: int, poll_s: float, cycle_s: float) -> None:
    vtn = GridOperator(port=free_port(), poll_s=poll_s, echo=lambda line: None)
    await vtn.start()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = site(Path(tmp), vtn.url, poll_s, cycle_s)
        clock = Clock(hil_of(cfg).start, 1.0)
        sim = SimSite(cfg, clock)
        await sim.start()
        writes: list[tuple[float, float]] = []  # (monotonic, commanded kW) per battery write
        pcs = sim.devices["bess1"]
        on_write = pcs.on_write

        def timed(model_id, changes, before):  # the register write lands here
            on_write(model_id, changes, before)
            writes.append((time.monotonic(), pcs.command_kw))

        pcs.on_write = timed
        d = Daemon(cfg, clock)
        stop = asyncio.Event()
        task = asyncio.create_task(d.run(stop))
        e2e, own = [], []
        rng = random.Random(5)
        try:
            await asyncio.wait_for(d.ven.registered.wait(), 20)
            ven_id = vtn.ven_id(d.ven.ven_name)
            # outlasts one poll: an event over before the VEN polls is received as completed
            spec = EventSpec(signal="SIMPLE", type="level",
                             intervals=[IntervalSpec(duration_s=poll_s + 2, value=LEVEL)])
            for k in range(n):
                await until(lambda: abs(pcs.command_kw) < 0.5, 30,
                            lambda: f"the battery at rest (commanded {pcs.command_kw:.1f} kW: "
                                    f"{d.cycle.decision.reason})")
                await asyncio.sleep(rng.uniform(0, poll_s))  # any phase of the VEN's polling
                t0 = time.monotonic()
                eid = vtn.issue(ven_id, spec, datetime.now(UTC) + timedelta(milliseconds=5))
                await until(lambda t0=t0: any(t > t0 and c > SHED_KW - 1 for t, c in writes),
                            30, f"event {k + 1}: the battery written")
                t_write = next(t for t, c in writes if t > t0 and c > SHED_KW - 1)
                e2e.append(t_write - t0)
                own.append(t_write - d.ven.received_at[eid])
                print(f"  event {k + 1:2d}: VTN -> register {1000 * e2e[-1]:7.1f} ms, "
                      f"received -> register {1000 * own[-1]:6.1f} ms", flush=True)
                await until(lambda eid=eid: d.ven.store.get(eid).status == "completed", 30,
                            "its end")
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()
            await vtn.stop()
    print()
    print(f"OpenADR event -> HIL register written, {n} events (SIMPLE level {LEVEL} = "
          f"{SHED_KW:g} kW), VEN poll every {poll_s:g} s, control cycle {cycle_s:g} s:")
    for name, xs in (("VTN created -> register written", e2e),
                     ("VEN received -> register written", own)):
        print(f"  {name:34s} p50 {1000 * pct(xs, 50):7.1f} ms   p99 {1000 * pct(xs, 99):7.1f} ms"
              f"   max {1000 * max(xs):7.1f} ms")
    print(f"  (the poll alone adds U(0, {poll_s:g} s): mean {500 * poll_s:.0f} ms)")
    for line in benchlib.environment(("openleadr", "aiohttp", "pymodbus")):
        print(f"  {line}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20)
    p.add_argument("--poll", type=float, default=2.0, help="VEN poll interval, s (default 2)")
    p.add_argument("--cycle", type=float, default=1.0, help="control cycle, s (default 1)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    asyncio.run(bench(args.events, args.poll, args.cycle))


if __name__ == "__main__":
    main()

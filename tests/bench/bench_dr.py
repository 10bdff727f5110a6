"""Delivered/requested ratio of a DR event on the demo site, end to end: the shipped scenario
hil/scenarios/dr_afternoon_peak.yaml (a hot July weekday; the grid operator caps import at
40 kW from 16:30 to 18:30, announced an hour ahead) served by the HIL over Modbus TCP, the
daemon on the same accelerated clock, the site's history seeded with the scenario's week
before (the avg5 baseline comes from it), the event taken by the daemon's DrManager.

The battery is reserved for DR (peak shaving and export limit only, no self-consumption),
so the import before and after the event is the building's own. Prints the per-interval
M&V from the daemon's final dr report, the delivered/requested ratio, the PCC against the
hold level and the restore against the baseline peak, and what the same metered run gives
under each of the three baselines (docs/domain.md §4).

Run: python tests/bench/bench_dr.py [--speed 300] [--scenario PATH] [--baseline avg5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import benchlib
import numpy as np
from benchlib import free_port

from edge import config as config_mod
from edge.app.clock import Clock
from edge.app.daemon import Daemon
from edge.config import Config
from edge.report.history import History
from edge.vpp.baseline import METHODS, BaselineError, Calendar, baseline
from edge.vpp.execution import DrExecution, LiveHistory
from edge.vpp.shaping import DrEvent
from hil.scenario import DrEvent as ScenarioDr
from hil.scenario import load as load_scenario
from hil.site import SimSite
from tools.broker import ensure_broker
from tools.simulate.run import seed_history

ROOT = Path(__file__).resolve().parents[2]


def site_config(scenario, base: Config, state: Path, start: datetime, method: str) -> Config:
    cfg = scenario.apply(base, planner=False, storage_dir=state)
    data = cfg.model_dump()
    for dev in data["devices"]:
        dev["port"] = free_port()
    data["control"]["functions"] = ["peak_shaving", "export_limit"]
    data["hil"]["start"] = start
    data["dr"]["baseline"] = method
    return Config.model_validate(data)


def dr_event(w) -> DrEvent:
    e: ScenarioDr = w.event
    if e.grid_max_kw is not None:
        return DrEvent(w.id, "grid_operator", "reduce", w.start, w.end, target_kw=e.grid_max_kw)
    level = e.grid_min_kw if e.grid_min_kw is not None else e.grid_target_kw
    return DrEvent(w.id, "grid_operator", "increase", w.start, w.end, target_kw=level)


async def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="pedf-bench-dr-") as tmp:
        return await _run(args, Path(tmp))


async def _run(args, tmp: Path) -> int:
    scenario = load_scenario(args.scenario)
    windows = scenario.dr_windows()
    if not windows:
        print(f"{args.scenario}: the scenario has no dr_event", file=sys.stderr)
        return 2
    w = windows[0]
    announce = w.start - timedelta(minutes=w.event.notice_min)
    cfg = site_config(scenario, config_mod.load(args.config), tmp, announce, args.baseline)
    tz = ZoneInfo(cfg.site.timezone)
    history = History(tmp / "history.sqlite")
    seed_history(history, scenario)
    history.close()
    event = dr_event(w)
    until = w.end + timedelta(seconds=cfg.dr.restore_s + 20 * 60)

    broker = await ensure_broker("127.0.0.1", free_port())
    clock = Clock(announce, args.speed)
    site = SimSite(cfg, clock, truth=scenario.truth(cfg))
    await site.start()
    daemon = Daemon(cfg, clock, mqtt_host=broker.host, mqtt_port=broker.port)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        daemon.dr.add(event, clock.now())
        while clock.now() < w.start and not task.done():
            await asyncio.sleep(0.2)
        exe = daemon.dr.get(event.id)  # its baseline is frozen once the ramp-in began
        while clock.now() < until and not task.done():
            await asyncio.sleep(0.2)
        final = daemon.dr.finals.get(event.id)
        samples = list(site.samples)
        cycles = daemon.cycle.stats.cycles
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await site.stop()
        await broker.close()
    wall = time.monotonic() - t0
    if task.done() and not task.cancelled() and task.exception():
        raise task.exception()
    if final is None:
        print("no final DR report: the run ended too early", file=sys.stderr)
        return 1

    def local(t: datetime) -> str:
        return t.astimezone(tz).strftime("%H:%M")

    b = exe.baseline
    print(f"DR scenario {scenario.name}: {cfg.site.id}, event {event.id} {local(w.start)}-"
          f"{local(w.end)} ({w.start:%Y-%m-%d}, {cfg.site.timezone}), import <= "
          f"{event.target_kw:g} kW, announced {w.event.notice_min:g} min ahead")
    print(f"baseline {b.method} on {cfg.dr.baseline_on}: days "
          f"{', '.join(d.strftime('%m-%d') for d in b.days) or '-'}"
          f"{' (degraded: ' + b.note + ')' if b.degraded else ''}; ramp-in {cfg.dr.ramp_in_s:g} s,"
          f" restore {cfg.dr.restore_steps} x {cfg.dr.restore_s / cfg.dr.restore_steps:g} s,"
          f" target ratio {cfg.dr.target_ratio:g}")
    print(f" {'interval':8} {'baseline':>9} {'actual':>8} {'delivered':>10} {'declared':>9} {'ratio':>6}")
    for iv in final["intervals"]:
        t = datetime.fromisoformat(iv["start"].replace("Z", "+00:00"))
        print(f" {local(t):8} {iv['baseline_kw']:9.1f} {iv['actual_kw']:8.1f} "
              f"{iv['delivered_kw']:10.1f} {iv['declared_kw']:9.1f} {iv['response_ratio']:6.3f}")
    print(f"Requested {final['declared_kwh']:.1f} kWh, delivered {final['delivered_kwh']:.1f} kWh:"
          f" delivered/requested = {final['response_ratio']:.3f} ({final['result']}, "
          f"{final['band']}); alarm {'raised' if final['alarm'] else 'not raised'}")

    def span(a: datetime, z: datetime) -> list:
        return [s for s in samples if a.astimezone(UTC) < s.t <= z.astimezone(UTC)]

    hold = span(w.start + timedelta(minutes=1), w.end)
    restore = span(w.end, w.end + timedelta(seconds=cfg.dr.restore_s))
    levels = [p.level_kw for p in exe.pieces]
    above = sum(s.grid_kw > max(levels) + 1.0 for s in hold)
    print(f"PCC during the event (1-min samples): mean {np.mean([s.grid_kw for s in hold]):.1f} kW,"
          f" max {max(s.grid_kw for s in hold):.1f} kW, {above} of {len(hold)} samples more than "
          f"1 kW above the hold level {min(levels):.1f}-{max(levels):.1f} kW (load steps, "
          "corrected the next cycle)")
    if restore:
        print(f"Restore: max {max(s.grid_kw for s in restore):.1f} kW <= pre-event baseline peak "
              f"{b.peak_kw:.1f} kW: {'yes' if max(s.grid_kw for s in restore) <= b.peak_kw + 0.5 else 'NO'}")
    dis = sum(max(s.bess_kw, 0.0) for s in span(w.start, w.end)) / 60
    print(f"Battery: SoC {hold[0].soc_pct:.1f} -> {hold[-1].soc_pct:.1f} %, "
          f"{dis:.1f} kWh discharged during the event")

    history = History(tmp / "history.sqlite")
    try:
        view = LiveHistory(history)
        cal = Calendar.of(cfg.dr)
        parts = []
        for m in METHODS:
            try:
                other = baseline(m, view, w.start, w.end, tz, cal, key=cfg.dr.baseline_on,
                                 ramp_in_s=cfg.dr.ramp_in_s)
            except BaselineError as exc:
                parts.append(f"{m} n/a ({exc})")
                continue
            r = DrExecution(event, other, cfg.dr).measure(view, until).response_ratio
            flag = f", degraded: {other.note}" if other.degraded else ""
            parts.append(f"{m} {r:.3f} (baseline mean {np.mean(other.kw):.1f} kW{flag})")
    finally:
        history.close()
    print("Same metered run under each baseline:")
    for part in parts:
        print(f"  {part}")
    print(f"Wall {wall:.1f} s at x{args.speed:g} ({cycles} control cycles)")
    for line in benchlib.environment():
        print(line)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default=str(ROOT / "hil/scenarios/dr_afternoon_peak.yaml"))
    ap.add_argument("--config", default=str(ROOT / "configs/demo.yaml"))
    ap.add_argument("--speed", type=float, default=300.0)
    ap.add_argument("--baseline", choices=METHODS, default="avg5",
                    help="the method the controller uses (all three are printed)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

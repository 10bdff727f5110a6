"""Run by test_planner_worker.py in a fresh interpreter, so that its sys.modules is the
control process's own: the demo site with the planner on, a plan adopted, the worker
killed, control going on and a new worker planning again. Prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from site_harness import running_site, site_dict  # noqa: E402

HEAVY = ("pvlib", "pandas", "scipy", "highspy")
SPEED = 60.0


async def until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def plan_ids(book) -> list[str]:
    return [i.id for i in book.all() if i.source == "plan"]


async def main(tmp: Path, port: int) -> dict:
    data = site_dict(tmp, port)
    data["hil"]["start"] = "2026-06-22T07:00:00+08:00"
    data["planner"] = {"enabled": True, "horizon_h": 6, "step_min": 15, "replan_min": 15}
    broker = SimpleNamespace(host="127.0.0.1", port=port)
    out: dict = {}
    async with running_site(data, broker, SPEED) as run:
        daemon, planner = run.daemon, run.daemon.planner
        await until(lambda: planner.stats.solves >= 1 and plan_ids(daemon.book), 90,
                    "a plan in the book")
        out["status"] = planner.last.status
        out["heavy"] = [m for m in HEAVY if m in sys.modules]
        horizon = planner.stats.last_at + timedelta(minutes=2 * 15 + 15)
        out["plan_within_two_periods"] = all(
            i.end <= horizon for i in daemon.book.all() if i.source == "plan")
        planner.request_replan("probe")  # the next round starts from this one's basis
        await until(lambda: planner.stats.solves >= 2, 90, "a second plan")
        out["warm_solves"] = planner.stats.warm_solves
        old, cycles, old_stats = planner.pid, daemon.cycle.stats.cycles, planner.stats
        os.kill(old, signal.SIGKILL)
        await until(lambda: planner.restarts >= 1 and planner.pid != old, 30, "a new worker")
        out["cycles_after_kill"] = daemon.cycle.stats.cycles - cycles
        await until(lambda: planner.stats is not old_stats and planner.stats.solves >= 1, 90,
                    "a plan from the new worker")
        out["new_status"] = planner.last.status
        out["cycles_total"] = daemon.cycle.stats.cycles - cycles
        out["heavy_end"] = [m for m in HEAVY if m in sys.modules]
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))))

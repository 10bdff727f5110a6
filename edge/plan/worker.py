"""The planner worker: the forecaster and the planner in a process of their own, started
and restarted by the daemon (edge/plan/remote.py), so forecasting and solving never hold up
the control cycle and a solver blow-up or an out-of-memory kill ends only this process.

Run as `python -m edge.plan.worker` with pipes on stdin/stdout (edge/plan/pipe.py). The
first message is ("init", config, clock, history path, log level, the daemon's start
as a Unix time: the planner keeps its schedule); then, about once a second, ("tick",
image, commitments, observations, metered intervals, energy demands) and now and then
("replan", reason). The worker drives the same `Planner` as an in-process daemon, against a
mirror of the daemon's view, and after every round sends ("plan", plan instructions, stats,
plan summary, the `plan` report of a plan adopted in that round or None). End of stdin ends
the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from edge.control.instructions import PRIORITY, InstructionBook
from edge.forecast import Forecaster
from edge.plan.pipe import frame, read_blocking
from edge.plan.planner import Planner
from edge.plan.stats import PlanSummary
from edge.report.history import History

log = logging.getLogger("edge.plan.worker")  # __name__ is __main__ under -m


class Mirror:
    """The daemon's view as the planner reads it: the last image, the book's commitments
    (the plan's own instructions stay those the planner wrote) and the last decision's
    energy demands."""

    def __init__(self) -> None:
        self.image = None
        self.book = InstructionBook()
        self.demands: tuple = ()

    def update(self, image, commitments, demands=()) -> None:
        self.image, self.demands = image, tuple(demands)
        for source in PRIORITY:
            if source != "plan":
                self.book.replace_source(source, [i for i in commitments if i.source == source])


class Worker:
    def __init__(self, config, clock, history_path: Path, out) -> None:
        self.out = out
        self.history = History(history_path)
        self.forecaster = Forecaster(config, self.history)
        self.view = Mirror()
        self.planner = Planner(config, self.view, clock, self.forecaster, self.history)
        self.adopted: dict | None = None  # the round's `plan` report, sent with its plan
        self.planner.on_adopt = self._adopted
        inner = self.planner.replan

        async def replan(reason: str = "schedule"):
            try:
                return await inner(reason)
            finally:
                self.send_plan()

        self.planner.replan = replan  # every round, whoever started it, reports back

    def _adopted(self, report: dict) -> None:
        self.adopted = report

    def send_plan(self) -> None:
        plan, report, self.adopted = self.planner.last, self.adopted, None
        self.out.write(frame(("plan", [i for i in self.view.book.all() if i.source == "plan"],
                              self.planner.stats, PlanSummary.of(plan) if plan else None,
                              report)))

    def handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "tick":
            _, image, commitments, observed, metered, demands = msg
            self.view.update(image, commitments, demands)
            for ts, power, curtailed, dt_s in observed:
                self.forecaster.observe(ts, power, curtailed, dt_s)
            for closed in metered:
                self.forecaster.errors.metered(closed)
        elif kind == "replan":
            self.planner.request_replan(msg[1])


async def serve(stdin, out) -> None:
    init = read_blocking(stdin)
    if init is None:
        return
    _, config, clock, history_path, level, since = init
    logging.basicConfig(level=level, stream=sys.stderr,  # the daemon's log, as edge/cli does it
                        format="%(asctime)s %(levelname)-7s %(name)s [planner worker]: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    worker = Worker(config, clock, Path(history_path), out)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def read() -> None:
        while (msg := read_blocking(stdin)) is not None:
            loop.call_soon_threadsafe(worker.handle, msg)
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=read, name="worker-stdin", daemon=True).start()
    scheduler = AsyncIOScheduler()
    worker.planner.attach(scheduler, datetime.fromtimestamp(since))
    scheduler.start()
    log.info("planner worker %d ready", os.getpid())
    await done.wait()
    scheduler.shutdown(wait=False)
    worker.history.close()


def main() -> None:
    out = os.fdopen(os.dup(1), "wb", buffering=0)  # the channel to the daemon
    os.dup2(2, 1)  # a stray print goes to the log, never into the channel
    # Ctrl-C, or systemd's SIGTERM to the whole unit, stops the daemon, which then closes our
    # stdin: dying first would only make it log a lost worker on its way down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:  # under memory pressure the kernel takes this process, not the control one
        Path("/proc/self/oom_score_adj").write_text("500")
    except OSError:
        pass
    asyncio.run(serve(sys.stdin.buffer, out))
    out.flush()
    os._exit(0)  # an abandoned solve thread must not hold the exit


if __name__ == "__main__":
    main()

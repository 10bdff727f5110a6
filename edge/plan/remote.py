"""The daemon's end of the planner worker (edge/plan/worker.py): starts it, feeds it, puts
its plans in the book, and starts it again when it dies. Light on purpose: the control
process imports neither the forecaster nor the solver.

What the worker gets, about once a second (and every `_WATCH_S` simulated seconds at
speed): the last image (battery SoCs), the book's commitments, the last decision's energy
demands (EV sessions), the site balance terms with
the PV-held-back flag of every cycle since the last send, and the history intervals closed
meanwhile (forecast errors). What comes back after every planning round: the plan's
instructions (the book's `plan` source is replaced with them), the round's stats, a
summary of the plan in force (`last`, `plan`; flex reads it) and, when the round adopted a
plan, its `plan` report, handed to `on_adopt` (the daemon publishes it).

A dead worker is logged and started again after a back-off (1 s, doubling to 60 s while it
keeps dying within a minute). Control goes on meanwhile; the plan instructions already in
the book cover at most two re-plan periods, so they end on their own.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edge.plan.pipe import frame, read_async
from edge.plan.stats import PlannerStats, PlanSummary

log = logging.getLogger(__name__)

_WATCH_S = 5.0  # simulated seconds: the longest a commitment waits before the worker sees it
_BACKLOG = 4096  # cycles kept for a worker that is (re)starting; older ones are dropped


class PlannerWorker:
    def __init__(self, config, view, clock, history_path: Path) -> None:
        self.config = config
        self.view = view
        self.clock = clock
        self.history_path = history_path
        self.last: PlanSummary | None = None  # the plan in force, as the worker made it
        self.stats = PlannerStats()  # the running worker's
        self.restarts = 0
        self.on_adopt: Callable[[dict], None] | None = None  # each adopted plan's report
        self.pid: int | None = None
        self._observed: deque = deque(maxlen=_BACKLOG)
        self._metered: list = []
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._since = time.time()  # the daemon's start: the planner's schedule counts from it

    @property
    def plan(self) -> PlanSummary | None:
        return self.last

    def observe(self, ts, power, pv_curtailed: bool, dt_s: float) -> None:
        self._observed.append((ts, power, pv_curtailed, dt_s))

    def metered(self, closed) -> None:
        self._metered.append(closed)

    def request_replan(self, reason: str) -> None:
        self._send(("replan", reason))

    def start(self) -> None:
        """Start the worker, first thing in the daemon's loop: its imports (pvlib, pandas,
        scipy, HiGHS) take a second or two, done while the daemon connects its devices."""
        self._since = time.time()
        self._task = asyncio.create_task(self._supervise(), name="planner-worker")

    def attach(self, scheduler) -> None:
        """The job that feeds the worker."""
        every = min(1.0, max(self.clock.wall_s(_WATCH_S), 0.05))
        scheduler.add_job(self._tick, "interval", seconds=every, id="planner-feed",
                          max_instances=1, coalesce=True)

    async def _tick(self) -> None:
        if self._proc is None:
            return
        commitments = [i for i in self.view.book.all() if i.source != "plan"]
        observed, self._observed = list(self._observed), deque(maxlen=_BACKLOG)
        metered, self._metered = self._metered, []
        self._send(("tick", self.view.image, commitments, observed, metered,
                    tuple(self.view.demands)))

    def _send(self, msg: tuple) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        try:
            proc.stdin.write(frame(msg))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker is gone; the supervisor notices and starts another

    async def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping:
            began = time.monotonic()
            code = await self._serve()
            if self._stopping:
                return
            self.restarts += 1
            delay = 1.0 if time.monotonic() - began > 60 else delay
            log.warning("planner worker %s ended (exit %s); starting it again in %.0f s. "
                        "Control continues; the plan in the book runs out on its own",
                        self.pid, code, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 60.0)

    async def _serve(self) -> int | None:
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge.plan.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self.pid = proc.pid
        level = logging.getLogger().getEffectiveLevel()
        self._send(("init", self.config, self.clock, str(self.history_path), level,
                    self._since))
        try:
            while (msg := await read_async(proc.stdout)) is not None:
                _, instructions, self.stats, self.last, report = msg
                self.view.book.replace_source("plan", instructions)
                if report is not None and self.on_adopt is not None:
                    self.on_adopt(report)
            return await proc.wait()
        finally:
            self._proc = None

    async def stop(self) -> None:
        """End of stdin ends the worker; one that does not end within 3 s is killed."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

"""The planner service of the daemon: re-plans on a schedule and on events, hands the plan
to the control cycle as instructions, and falls back safely when no plan can be made.

How the plan reaches the cycle: per step one `plan` instruction with the planned grid power
as `grid_target_kw` and, where a demand charge applies, the planned billing peak (less one
write deadband, see `peak_cap_kw`) as `grid_max_kw`, so the kernel shaves any second above
it. The kernel still enforces every configured limit and every DR/dispatch bound each
cycle; plan instructions rank lowest in the book, so a plan can narrow what the cycle does,
never widen it.

Grid target, not battery target: the money (TOU import, export, the demand peak) and the
limits are all at the grid, and with step-average forecasts a grid target lets the battery
absorb what varies inside a step, so with perfect forecasts the cycle reproduces the plan's
grid and therefore its cost. Under forecast error the battery absorbs the error and its SoC
drifts from the plan; the next re-plan (every `replan_min`, from the measured SoC) corrects
that, whereas a battery target would push the error onto the grid - onto the peak and the
export limit, which are exactly what the plan protects.

Energy demands (EV sessions, from the last decision) are planned with the rest
(demands.py); each plan instruction carries the planned kW per charger (`demand_kw`). The
cycle settles the batteries on the site without its EVs and adds their draw on top (unless
`control.ev_from_battery`), so then the instruction's grid target and cap are those of the
site without the planned EV power; with `ev_from_battery` they are the whole site's. A
material change in the demands asks for a re-plan, rate-limited (watch.py).

Only the next two re-plan periods of the plan are published: a planner that stops re-planning
leaves the cycle to its rule-based functions soon after, never with stale setpoints.

A DR or dispatch commitment the site can only partly deliver does not fail a round: the
LP treats commitments as soft (model.py), so the plan delivers as much as it can, is
adopted, and its shortfall is logged and kept in `stats.last_reason`. The commitment itself
still binds the cycle to the second (it ranks above the plan in the book).

Fallback when a solve fails (the configured limits cannot hold, time limit without a
solution, forecast or input error): keep the previous plan while it still covers now and is
younger than two re-plan periods (`KEEP_PERIODS`), published only up to that age; else clear
the plan so the configured functions (self-consumption, peak shaving, export limit) run
alone. A previous plan was made for another situation (it may not know a new DR event), so
it must not steer the site for its whole horizon. Either way the reason is logged and kept
in `stats`. Before anything is measured (the first rounds of a starting site) the same
fallback is said at INFO: nothing is wrong yet.

The solve runs in a daemon thread of its own, not the default executor: asyncio.run waits
for that executor on exit, so a solve in progress would hold up the daemon's stop (and
systemd's TimeoutStopSec). A cancelled round abandons its solve; the thread ends on its own
(within `planner.time_limit_s`) and its result is dropped.

Each round's LP starts from the previous round's simplex basis, shifted along the horizon
(warm.py): the state lives with the planner, so in the worker process where it runs there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from edge.app.clock import Clock
from edge.config import Config
from edge.control.instructions import Instruction
from edge.forecast import NotMeasured
from edge.plan import message
from edge.plan.demands import kpis, usable
from edge.plan.learn import Learner
from edge.plan.model import build_input
from edge.plan.solve import Plan, PlanInfeasible, solve
from edge.plan.stats import PlannerStats
from edge.plan.warm import WarmStart
from edge.plan.watch import DemandWatch
from edge.plan.zones import OutdoorLog, Weather, thermal_input

log = logging.getLogger(__name__)

_WATCH_S = 5.0  # simulated seconds between looks at the instruction book
KEEP_PERIODS = 2  # a kept previous plan steers at most this many re-plan periods after it was made

Forecast = Callable[[datetime, int, int], tuple[np.ndarray, np.ndarray]]


def billing_peak_kw(history, now: datetime, tz: str) -> float:
    """The highest 15-min mean net import of the billing month so far (local calendar)."""
    if history is None:
        return 0.0
    local = now.astimezone(ZoneInfo(tz))
    month = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    means = (iv.mean_kw("grid") for iv in history.intervals(month, now))
    return max((max(m, 0.0) for m in means if math.isfinite(m)), default=0.0)  # NaN: unmeasured


class Planner:
    """`view` is what the daemon publishes after each cycle (edge/app/fanout.py): the planner
    reads its process image (SoC) and the last decision's energy demands, and writes its
    instruction book. `forecast(start, n, step_s) -> (load_kw, pv_kw)` comes from the daemon
    (edge/forecast); `history` (optional): the billing peak, the zone models (learn.py)."""

    def __init__(self, config: Config, view, clock: Clock, forecast: Forecast,
                 history=None) -> None:
        self.config = config
        self.cfg = config.planner
        self.view = view
        self.clock = clock
        self.forecast = forecast
        self.history = history
        self.step_s = self.cfg.step_min * 60
        self.n = round(self.cfg.horizon_h * 3600 / self.step_s)
        self.last: Plan | None = None  # the plan in force; None: rule-based control
        self.made_at: datetime | None = None  # (simulated) time the plan in force was made
        self.solver: threading.Thread | None = None  # the latest solve's thread
        self.stats = PlannerStats()
        self._lock = asyncio.Lock()
        self._scheduler = None
        self._pending: str | None = None
        self._seen: dict[str, tuple] = {}
        self.demand_watch = DemandWatch()
        self.warm = WarmStart()  # the last round's basis, for the next (warm.py)
        self.outdoor = OutdoorLog()
        self.weather: Weather | None = None  # the true weather, where a caller knows it
        self.learn = Learner(config, history)  # zone models fitted on the site's history
        self._bad_demands: set[str] = set()  # said once each
        # Called with the `plan` report (message.py) of each plan adopted, once per plan.
        self.on_adopt: Callable[[dict], None] | None = None

    @property
    def plan(self) -> Plan | None:
        """The plan in force (same as `last`)."""
        return self.last

    # -- scheduling ----------------------------------------------------------------------
    def attach(self, scheduler, since: datetime | None = None) -> None:
        """Add the periodic re-plan job to the daemon's APScheduler. The first round runs
        a few cycles after start, once the forecaster has seen measurements. `since` (naive
        local wall time, default now) is when the daemon started: a planner in a worker that
        came up later, or again, keeps the daemon's schedule."""
        every = max(self.clock.wall_s(self.cfg.replan_min * 60), 0.05)
        first = max(self.clock.wall_s(5 * self.config.control.cycle_s), 0.2)
        anchor = (since or datetime.now()) + timedelta(seconds=first)
        scheduler.add_job(self._scheduled, "interval", seconds=every, id="planner",
                          max_instances=1, coalesce=True, start_date=anchor,
                          next_run_time=max(anchor, datetime.now()))
        scheduler.add_job(self._watch, "interval", id="planner-watch", max_instances=1,
                          coalesce=True, seconds=max(self.clock.wall_s(_WATCH_S), 0.05))
        self._scheduler = scheduler
        self._seen = self._commitments()

    def _commitments(self) -> dict[str, tuple]:
        """NaN (no target) as None: in the worker each tick brings new float objects, and
        NaN never equals NaN, so the same commitment would look changed every time."""
        return {i.id: tuple(None if v != v else v for v in (
                    i.start, i.end, i.grid_max_kw, i.grid_min_kw, i.grid_target_kw))
                for i in self.view.book.all() if i.source != "plan"}

    async def _watch(self) -> None:
        """Re-plan when a DR event or dispatch arrives, changes or is cancelled, whoever put
        it in the book (an expiring one needs no re-plan: the plan saw its end)."""
        now_seen = self._commitments()
        changed = sorted(k for k, v in now_seen.items() if self._seen.get(k) != v)
        now = self.clock.now()
        gone = sorted(k for k, v in self._seen.items() if k not in now_seen and v[1] > now)
        self._seen = now_seen
        if changed or gone:
            self.request_replan("commitments changed: " + ", ".join(
                [f"+{k}" for k in changed] + [f"-{k}" for k in gone]))
        elif reason := self.demand_watch.due(self._demands(), now, self.stats.last_at):
            self.request_replan(reason)

    def _demands(self) -> list:
        """The usable demands of the last decision; a bad one is said once and left out."""
        ok, bad = usable(getattr(self.view, "demands", ()))
        for why in bad:
            if why not in self._bad_demands:
                log.warning("planning without %s", why)
        self._bad_demands = set(bad)
        return ok

    async def _scheduled(self) -> None:
        reason, self._pending = self._pending or "schedule", None
        await self.replan(reason)

    def request_replan(self, reason: str) -> None:
        """Re-plan as soon as possible (a DR event, a dispatch, a changed limit arrived).
        Safe to call from any thread; requests that pile up while one runs coalesce."""
        log.info("re-plan requested: %s", reason)
        if self._scheduler is None or not self._scheduler.running:
            self._pending = reason  # taken by the next scheduled round
            return
        self._scheduler.add_job(self.replan, kwargs={"reason": reason}, id="planner-event",
                                replace_existing=True, max_instances=1, coalesce=True)

    # -- one round -----------------------------------------------------------------------
    async def replan(self, reason: str = "schedule") -> Plan | None:
        """Plan from now; adopt the plan or fall back. Returns the plan in force."""
        async with self._lock:
            now = self.clock.now()
            self.stats.last_at, self.stats.last_trigger = now, reason
            try:
                inp = self._input(now)
                plan = await self._solve(inp)
            except asyncio.CancelledError:
                log.info("planning round (%s) cancelled: the daemon stops", reason)
                raise
            except PlanInfeasible as exc:
                return self._fall_back(now, exc.reason)
            except NotMeasured as exc:  # the first rounds of a starting site
                return self._fall_back(now, str(exc), expected=True)
            except Exception as exc:  # noqa: BLE001 - any failure must end in a safe fallback
                if not isinstance(exc, ValueError):  # bad input says enough; a bug needs its trace
                    log.error("planning round raised", exc_info=True)
                return self._fall_back(now, f"{type(exc).__name__}: {exc}")
            return self._adopt(plan, now, inp)

    async def _solve(self, inp) -> Plan:
        """`solve` in a daemon thread; the result comes back through a future of this loop.
        If the round is cancelled (the daemon stops) the thread is abandoned, not awaited."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def settle(ok: bool, value) -> None:
            if done.done():  # the round was cancelled: nobody wants this plan any more
                return
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)

        def work() -> None:
            try:
                ok, value = True, solve(inp, self.cfg.time_limit_s, self.warm)
            except Exception as exc:  # noqa: BLE001 - handed to the round, which falls back
                ok, value = False, exc
            try:
                loop.call_soon_threadsafe(settle, ok, value)
            except RuntimeError:  # the loop has closed: the daemon stopped meanwhile
                log.debug("solve finished after the event loop closed; result dropped")

        self.solver = threading.Thread(target=work, name="planner-solve", daemon=True)
        self.solver.start()
        return await done

    def _input(self, now: datetime):
        image = self.view.image
        if image is None:
            raise NotMeasured("no measurement yet: the first cycle has not run")
        soc: dict[str, float] = {}
        for b in self.config.devices_that("stores_energy"):
            if image.good(b.id):
                soc[b.id] = image.value(b.id, "soc_pct")
            else:
                log.warning("battery %s is %s: planning without it", b.id,
                            image.devices[b.id].quality.value)
        epoch = now.timestamp()
        start = datetime.fromtimestamp(epoch - epoch % self.step_s, UTC)
        load, pv = self.forecast(start, self.n, self.step_s)
        commitments = [i for i in self.view.book.all() if i.source != "plan"]
        peak = billing_peak_kw(self.history, now, self.config.site.timezone)
        demands = self._demands()
        self.demand_watch.planned_with(demands, now)
        zones, tanks = thermal_input(self.config, image, start, self.n, self.step_s, self.outdoor,
                                     self.weather, self.learn.models(now, self.stats))
        inp = build_input(self.config, start, self.step_s, load, pv, soc, peak, commitments,
                          now=now, battery_ids=list(soc), demands=demands)
        return replace(inp, zones=zones, tanks=tanks) if zones or tanks else inp

    def _adopt(self, plan: Plan, made_at: datetime, inp=None) -> Plan:
        self.last, self.made_at = plan, made_at
        self.demand_watch.adopted(plan)
        self._publish(plan, self.clock.now())
        if self.on_adopt is not None and inp is not None:
            try:  # the report is for people: it never costs the site its plan
                self.on_adopt(message.build(plan, inp, made_at, self.clock.now(),
                                            self.stats.last_trigger, self.config.tariff.currency,
                                            self.stats.zones))
            except Exception:  # noqa: BLE001
                log.exception("the plan report could not be built; the plan stands")
        s = self.stats
        s.solves += 1
        s.warm_solves += self.warm.used
        s.last_status, s.last_reason = plan.status, plan.reason
        s.rounds.append((s.last_at, s.last_trigger, plan.status))
        s.last_solve_s, s.last_build_s = plan.solve_s, plan.build_s
        s.demand_kwh, s.demand_valley_kwh = plan.demand_kwh, plan.demand_valley_kwh
        s.demand_short_kwh = dict(plan.demand_short_kwh)
        short = plan.status != "optimal" or plan.commitment_short_kwh > 0
        level = logging.WARNING if short else logging.INFO
        log.log(level, "plan (%s, %s): %d x %d min, cost %.2f, peak %.1f kW, build %.0f ms, "
                "solve %.0f ms (%s)%s%s", s.last_trigger, plan.status, plan.n, self.cfg.step_min,
                plan.objective, plan.peak_kw, plan.build_s * 1e3, plan.solve_s * 1e3,
                "warm" if self.warm.used else "cold", kpis(plan),
                f"; {plan.reason}" if plan.reason else "")
        return plan

    def keep_until(self) -> datetime | None:
        """Until when the plan in force may be kept when re-planning fails."""
        if self.last is None or self.made_at is None:
            return None
        keep = self.made_at + timedelta(seconds=KEEP_PERIODS * self.cfg.replan_min * 60)
        return min(keep, self.last.end)

    def _fall_back(self, now: datetime, why: str, expected: bool = False) -> Plan | None:
        """`expected`: nothing is wrong (nothing measured yet), so it is said at INFO."""
        level = logging.INFO if expected else logging.WARNING
        s = self.stats
        s.failures += 1
        s.last_reason = why
        prev, until = self.last, self.keep_until()
        if prev is not None and until is not None and prev.covers(now) and now < until:
            self.last = replace(prev, status="fallback", reason=why)
            self._publish(prev, now, until)
            s.last_status = "fallback"
            log.log(level, "%s (%s): %s; keeping the previous plan until %s",
                    "no new plan" if expected else "planning failed", s.last_trigger, why,
                    until.isoformat())
        else:
            lost = ("the previous plan expired at " + until.isoformat()
                    if prev is not None and until is not None else "no plan covers now")
            self.last = self.made_at = None
            self.view.book.replace_source("plan", [])
            s.last_status = "rule-based"
            log.log(level, "%s (%s): %s; %s: rule-based control (%s)",
                    "no plan yet" if expected else "planning failed", s.last_trigger, why,
                    lost, "+".join(self.config.control.functions) or "idle")
            self._retry_soon()
        s.rounds.append((s.last_at, s.last_trigger, s.last_status))
        return self.last

    def _retry_soon(self) -> None:
        """Without a plan, try again after a simulated minute, not a whole re-plan period
        (a transient cause - no measurements yet, a forecast gap - should not cost 15 min)."""
        if self._scheduler is None or not self._scheduler.running:
            return
        delay = min(60.0, self.cfg.replan_min * 60)
        self._scheduler.add_job(self.replan, "date", kwargs={"reason": "retry"},
                                run_date=datetime.now() + timedelta(
                                    seconds=max(self.clock.wall_s(delay), 0.05)),
                                id="planner-retry", replace_existing=True)

    def instructions(self, plan: Plan, now: datetime,
                     until: datetime | None = None) -> list[Instruction]:
        """The plan's steps from now over the next two re-plan periods (and not past
        `until`), as instructions."""
        k0 = plan.step_at(now)
        if k0 is None:
            return []
        ahead = math.ceil(2 * self.cfg.replan_min * 60 / plan.step_s) + 1
        cap = self.peak_cap_kw(plan)
        out = []
        for k in range(k0, min(plan.n, k0 + ahead)):
            a = plan.start + timedelta(seconds=k * plan.step_s)
            b = a + timedelta(seconds=plan.step_s)
            if until is not None:
                if a >= until:
                    break
                b = min(b, until)
            g = float(plan.grid_kw[k])
            # With steps under 15 min a step may sit above the billed (15-min mean) peak
            # while its block stays below it: cap that step at its own target.
            step_cap = g if math.isfinite(cap) and g > plan.peak_kw + 1e-6 else cap
            bess = float(plan.bess_kw[k]) if self.cfg.follow == "battery" and \
                not self._on_bound(g, step_cap) else math.nan
            demand = tuple((i, round(float(kw[k]), 3)) for i, kw in plan.demand_kw.items()
                           if kw[k] >= 1e-3)
            # HVAC and tanks: every step, 0 included (a planned shed is an instruction too).
            demand += tuple((i, round(float(kw[k]), 3)) for i, kw in plan.thermal_kw.items())
            apart = 0.0 if self.config.control.ev_from_battery else sum(v for _, v in demand)
            out.append(Instruction(
                id=f"plan-{a.strftime('%Y%m%dT%H%M%SZ')}", source="plan", start=max(a, now),
                end=b, grid_max_kw=step_cap - apart, grid_target_kw=g - apart,
                bess_target_kw=bess, demand_kw=demand))
        return out

    def _on_bound(self, grid_kw: float, cap_kw: float) -> bool:
        """The plan holds the grid on a limit this step (zero export, the export limit, the
        peak cap): then the grid value is what the plan decided, and following it lets the
        battery absorb the forecast error that would otherwise be lost export or a higher
        peak. Inside the limits the battery schedule is the decision."""
        c = self.config.control
        tol = max(c.deadband_kw, 0.1)
        floor = -c.export_limit_kw if c.export_limit_kw is not None else -math.inf
        ceiling = min(cap_kw, c.import_limit_kw if c.import_limit_kw is not None else math.inf)
        return grid_kw <= floor + tol or grid_kw >= ceiling - tol

    def peak_cap_kw(self, plan: Plan) -> float:
        """Where a demand charge applies, the grid cap the cycle enforces: the planned peak
        less one write deadband. The cycle only re-writes a setpoint once the grid drifts a
        deadband from its target, so a cap at the peak itself would let every 15-min mean
        end a little above it; that raises the billed peak, which the next plan takes as
        already paid and targets again - a ratchet. One deadband below, it holds."""
        if self.config.tariff.demand_charge_per_kw <= 0:
            return math.inf
        margin = self.config.control.deadband_kw
        return plan.peak_kw - margin if plan.peak_kw > margin else plan.peak_kw

    def _publish(self, plan: Plan, now: datetime, until: datetime | None = None) -> None:
        self.view.book.replace_source("plan", self.instructions(plan, now, until))

"""`pedf-edge simulate`: the controller against a scenario on the simulated clock, and what
it cost next to three references.

The run is real: the HIL (hil/site.py, driven by the scenario's series) and the daemon
(planner on unless told otherwise) share one accelerated clock; money and energy come from
the HIL ledger (metered at the PCC every simulated second, demand on 15-min means).
The references, all on the same true series, prices and end-of-run valuation:

- optimum: the planner's own LP (edge/plan) solved once over the whole run with the true
  series on 15-min means (perfect foresight); what any controller could at best have done;
- rule_based: the controller without the planner - the configured control functions and
  the same compiled kernel, replayed in Python on the series each `control.cycle_s` with the
  HIL's battery physics. A replay, not a second HIL run: it takes seconds instead of doubling
  the wall time of every run, and without Modbus latency or the accelerated clock's coarse
  cycles it is the rules at their best, so the planner is compared with a fair baseline
  (`--no-planner` gives the HIL figure for the rules when wanted);
- no_battery: the same site without its battery (the HIL's counterfactual ledger, PV
  curtailed ideally to the export limit).

Energy left in the batteries at the end is worth `terminal_value_per_kwh` (the scenario's,
default its lowest import price): every strategy's `adjusted_cost` = total_cost − value ×
(stored energy at the end − at the start), and the optimum maximises exactly that, so
strategies that end fuller or emptier compare fairly.

cost_ratio_vs_optimum = 1 + (adjusted controller cost − adjusted optimum) / scale, where
scale is the adjusted optimum when it is > 0 (then the ratio is simply controller/optimum)
and otherwise the no-battery site's gross import cost (a site that earns money overall has
no meaningful cost ratio; the gap is then measured against what the site buys).
`cost_gap_vs_optimum` (money) and `savings_capture` ((no battery − controller) /
(no battery − optimum)) are reported too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from edge.app.clock import Clock
from edge.config import BatteryDevice, Config, PvDevice
from edge.control import kernel as dispatch
from edge.control.bounds import run_functions
from edge.control.instructions import Instruction, InstructionBook
from edge.image.image import ProcessImage
from edge.report.history import INTERVAL_S, History, Interval
from hil.physics import Battery, ramp_toward
from hil.scenario import BILLING_S, DeviceOffline, DrEvent, Scenario, Truth, Window
from hil.site import Ledger, Sample, SimSite

log = logging.getLogger(__name__)

DEFAULT_SPEED = 720.0  # a day in ~2 min; one cycle (50 Hz wall cap) spans ~15 simulated s
VIOLATION_TOL_KW = 0.1  # an excursion smaller than this is metering noise


class RunClock(Clock):
    """The run's clock: simulated time stands still until `release()` (the controller
    connects and takes its first cycle before the scenario's first second) and stops at
    `end_s` (the HIL meters exactly the scenario, whatever the teardown takes)."""

    def __init__(self, start: datetime, speed: float, end_s: float) -> None:
        super().__init__(start, speed)
        self.end_s = end_s
        self._released = False

    def release(self) -> None:
        self._t0 = time.monotonic()
        self._released = True

    def elapsed_s(self) -> float:
        return min(super().elapsed_s(), self.end_s) if self._released else 0.0


@dataclass
class Excess:
    """Excursions beyond a bound: episodes, seconds, the worst kW and the energy beyond."""

    count: int = 0
    seconds: float = 0.0
    worst_kw: float = 0.0
    kwh: float = 0.0
    _on: bool = field(default=False, repr=False)

    def add(self, excess_kw: float, dt_s: float) -> None:
        if excess_kw > VIOLATION_TOL_KW:
            self.count += 0 if self._on else 1
            self._on = True
            self.seconds += dt_s
            self.kwh += excess_kw * dt_s / 3600
            self.worst_kw = max(self.worst_kw, excess_kw)
        else:
            self._on = False

    def as_dict(self) -> dict:
        return {"count": self.count, "seconds": self.seconds, "worst_kw": self.worst_kw,
                "kwh": self.kwh}


class Recorder:
    """Sees every physics sub-step of the HIL: limit and DR excursions at 1 s resolution,
    the SoC range, and per-15-min means for plan-vs-actual."""

    def __init__(self, config: Config, start: datetime, duration_s: float,
                 dr: list[Window]) -> None:
        c = config.control
        self.import_limit = math.inf if c.import_limit_kw is None else c.import_limit_kw
        self.export_limit = math.inf if c.export_limit_kw is None else c.export_limit_kw
        self.t0 = start.timestamp()
        self.dr = [(w.start.timestamp() - self.t0, w.end.timestamp() - self.t0, w.event)
                   for w in dr]
        n = math.ceil(duration_s / INTERVAL_S)
        self.sums = {k: np.zeros(n) for k in ("grid", "bess", "pv", "pv_available", "load")}
        self.soc_end = np.full(n, np.nan)
        self.imports, self.exports, self.dr_excess = Excess(), Excess(), Excess()
        self.soc_min = math.inf
        self.soc_max = -math.inf

    def __call__(self, s: Sample, dt_s: float) -> None:
        t = s.t.timestamp() - self.t0 - dt_s  # start of the sub-step
        k = int(t // INTERVAL_S)
        if not 0 <= k < len(self.soc_end):
            return
        for key, v in (("grid", s.grid_kw), ("bess", s.bess_kw), ("pv", s.pv_kw),
                       ("pv_available", s.pv_available_kw), ("load", s.load_kw)):
            self.sums[key][k] += v * dt_s
        if s.soc_pct is not None:
            self.soc_end[k] = s.soc_pct
            self.soc_min = min(self.soc_min, s.soc_pct)
            self.soc_max = max(self.soc_max, s.soc_pct)
        self.imports.add(s.grid_kw - self.import_limit, dt_s)
        self.exports.add(-s.grid_kw - self.export_limit, dt_s)
        worst = 0.0
        for a, b, e in self.dr:
            if a <= t < b:
                if e.grid_max_kw is not None:
                    worst = max(worst, s.grid_kw - e.grid_max_kw)
                if e.grid_min_kw is not None:
                    worst = max(worst, e.grid_min_kw - s.grid_kw)
        self.dr_excess.add(worst, dt_s)

    def means(self) -> dict[str, np.ndarray]:
        return {k: v / INTERVAL_S for k, v in self.sums.items()}


@dataclass
class PlanTrack:
    """Every plan the daemon adopted, in order (seen by polling `planner.last`)."""

    plans: list = field(default_factory=list)

    def see(self, plan) -> None:
        if plan is not None and (not self.plans or plan is not self.plans[-1]):
            self.plans.append(plan)

    def in_force(self, start: datetime, n: int, step_s: int) -> dict[str, np.ndarray]:
        """Per step: what the latest plan made before the step began said for it."""
        out = {k: np.full(n, np.nan) for k in ("grid", "bess", "soc")}
        made = [(p.start + timedelta(seconds=(p.step_s - (p.first_step_s or p.step_s))), p)
                for p in self.plans]
        for i in range(n):
            t = start + timedelta(seconds=i * step_s)
            mid = t + timedelta(seconds=step_s / 2)
            cands = [p for at, p in made if at <= t + timedelta(seconds=1)]
            if not cands:
                continue
            p = cands[-1]
            k = p.step_at(mid)
            if k is not None:
                out["grid"][i], out["bess"][i] = p.grid_kw[k], p.bess_kw[k]
                out["soc"][i] = p.soc_pct[k + 1]
        return out


class ForecastLog:
    """Wraps the planner's forecast callable and keeps every forecast issued, to score it
    against the true series afterwards."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.issued: list[tuple[datetime, int, np.ndarray, np.ndarray]] = []

    def __call__(self, start: datetime, n: int, step_s: int):
        load, pv = self.inner(start, n, step_s)
        self.issued.append((start, step_s, np.asarray(load, float), np.asarray(pv, float)))
        return load, pv

    def errors(self, truth: Truth, end: datetime) -> dict:
        """MAE over every (forecast, step) pair inside the run, as the forecaster's own
        tracker counts; nMAE on the mean load and on the PV peak of the run."""
        err = {"load": [], "pv": []}
        for start, step_s, load, pv in self.issued:
            n = min(len(load), int((end - start).total_seconds() // step_s))
            if n <= 0:
                continue
            t_load, t_pv = truth.averages(start, n, step_s)
            err["load"].append(np.abs(load[:n] - t_load))
            err["pv"].append(np.abs(pv[:n] - t_pv))
        scale = {"load": float(np.mean(truth.load_kw)), "pv": float(np.max(truth.pv_kw))}
        out: dict = {"forecasts": len(self.issued)}
        for k, parts in err.items():
            if not parts:
                out[k] = {"mae_kw": None, "nmae": None}
                continue
            mae = float(np.mean(np.concatenate(parts)))
            out[k] = {"mae_kw": mae, "nmae": mae / scale[k] if scale[k] > 0 else None}
        return out


# -- the run ------------------------------------------------------------------------------------
@dataclass
class RunResult:
    scenario: Scenario
    config: Config
    truth: Truth
    forecast: str
    planner: bool
    speed: float
    wall_s: float
    site_kpis: dict
    recorder: Recorder
    samples: list[Sample]
    plans: PlanTrack
    forecast_log: ForecastLog | None
    forecaster_errors: dict | None
    stored_kwh: tuple[float, float]  # at start, at end
    cycles: int
    crashes: int
    device_errors: dict[str, int]  # failed polls and writes per device, over the run
    planner_stats: dict | None  # rounds adopted / fallen back, the last reason
    kpis: dict = field(default_factory=dict)
    optimum_plan: object | None = None
    notes: list[str] = field(default_factory=list)


def billing_notes(scenario: Scenario, cfg: Config) -> list[str]:
    """What makes the run's demand charge differ from what the planner optimises: the HIL
    bills the run's own peak, the planner the billing month's (from the site history)."""
    if cfg.tariff.demand_charge_per_kw <= 0 or not scenario.spec.history_days:
        return []
    local = scenario.start.astimezone(ZoneInfo(cfg.site.timezone))
    first = local - timedelta(days=scenario.spec.history_days)
    if (first.year, first.month) != (local.year, local.month):
        return []
    return [f"history_days reach back into the billing month of the start ({first:%Y-%m-%d}): "
            "the planner counts their peak as already billed, the HIL bills the run's own "
            "peak; start the scenario on the first of a month for a fair demand charge"]


def isolated(cfg: Config) -> Config:
    """The site with every TCP device on its own free loopback port: the HIL stands in for
    all of them, so a simulation never collides with a running HIL or reaches a real
    device, whatever the config says. Units that share an endpoint keep sharing one."""
    data = cfg.model_dump()
    ports: dict[tuple[str, int], int] = {}
    for d in data["devices"]:
        if d.get("serial") is not None and d["protocol"] in ("sunspec-rtu", "modbus-rtu",
                                                             "dlt645-serial"):
            continue
        d["port"] = ports.setdefault((d["host"], d["port"]), _free_port())
        d["host"] = "127.0.0.1"
    return Config.model_validate(data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stored_kwh(site: SimSite) -> float:
    return sum(d.battery.soc_pct / 100 * d.battery.capacity_kwh
               for d in site.devices.values() if d.role == "battery")


def seed_history(history: History, scenario: Scenario) -> int:
    """The `history_days` before the start as the site's 15-min history (load and PV as
    the scenario says; grid as if no battery had run), so the controller's forecasts start
    the run the way they would on a site that has been running."""
    if not len(scenario.history_load_kw):
        return 0
    step = scenario.step_s
    first = scenario.start - timedelta(seconds=len(scenario.history_load_kw) * step)
    per = max(1, INTERVAL_S // step)
    load = scenario.history_load_kw.reshape(-1, per).mean(1) if step < INTERVAL_S else \
        np.repeat(scenario.history_load_kw, step // INTERVAL_S)
    pv = scenario.history_pv_kw.reshape(-1, per).mean(1) if step < INTERVAL_S else \
        np.repeat(scenario.history_pv_kw, step // INTERVAL_S)
    h = INTERVAL_S / 3600
    for i, (lo, p) in enumerate(zip(load, pv)):
        g = lo - p
        history.put(Interval(first + timedelta(seconds=i * INTERVAL_S),
                             import_kwh=max(g, 0) * h, export_kwh=max(-g, 0) * h,
                             pv_kwh=p * h, load_kwh=lo * h, covered_s=INTERVAL_S))
    return len(load)


def _dr_instruction(w: Window) -> Instruction:
    e = w.event
    assert isinstance(e, DrEvent)
    return Instruction(
        id=w.id, source="grid_operator", start=w.start, end=w.end,
        grid_max_kw=math.inf if e.grid_max_kw is None else e.grid_max_kw,
        grid_min_kw=-math.inf if e.grid_min_kw is None else e.grid_min_kw,
        grid_target_kw=math.nan if e.grid_target_kw is None else e.grid_target_kw)


async def _events(scenario: Scenario, clock: Clock, site: SimSite, daemon) -> None:
    """Fire the scenario's events at their simulated instants (DR events at their notice)."""
    actions = []
    for w in scenario.windows:
        if isinstance(w.event, DrEvent):
            at = w.start - timedelta(minutes=w.event.notice_min)
            actions.append((at, f"DR {w.id} announced",
                            lambda w=w: daemon.cycle.book.put(_dr_instruction(w))))
        elif isinstance(w.event, DeviceOffline):
            dev = w.event.device
            actions.append((w.start, f"{dev} offline", lambda d=dev: site.stop_device(d)))
            actions.append((w.end, f"{dev} back", lambda d=dev: site.start_device(d)))
    for at, what, act in sorted(actions, key=lambda a: a[0]):
        wait = (at - clock.now()).total_seconds()
        if wait > 0:
            await asyncio.sleep(clock.wall_s(wait))
        log.info("scenario %s: %s at %s", scenario.name, what, at.isoformat())
        result = act()
        if asyncio.iscoroutine(result):
            await result


async def run(scenario: Scenario, config: Config, *, forecast: str = "perfect",
              planner: bool = True, speed: float = DEFAULT_SPEED,
              state_dir: Path | None = None, progress=None) -> RunResult:
    """One HIL + daemon run of `scenario` on `config` (as given: not yet applied).
    `progress(t_s, total_s, status)` is called ~10 times per wall second."""
    from edge.app.daemon import Daemon
    from tools.broker import ensure_broker  # the daemon's modules: only for a run

    if forecast not in ("perfect", "own"):
        raise ValueError("forecast must be 'perfect' or 'own'")
    with tempfile.TemporaryDirectory(prefix="pedf-sim-") as tmp:
        state = Path(state_dir or tmp)
        cfg = isolated(scenario.apply(config, planner=planner, storage_dir=state))
        truth = scenario.truth(cfg)
        notes = billing_notes(scenario, cfg)
        for n in notes:
            log.warning("scenario %s: %s", scenario.name, n)
        history = History(state / "history.sqlite")
        seed_history(history, scenario)
        history.close()
        clock = RunClock(scenario.start, speed, scenario.duration_s)
        site = SimSite(cfg, clock, truth=truth)
        recorder = Recorder(cfg, scenario.start, scenario.duration_s, scenario.dr_windows())
        site.on_substep = recorder
        e0 = _stored_kwh(site)
        await site.start()  # before the broker: its free port must not be a device's port
        # Never the configured broker: simulated telemetry must not reach a real platform
        # under the site's id. A broker of its own keeps the daemon's whole path real.
        try:
            broker = await ensure_broker("127.0.0.1", _free_port())
        except BaseException:
            await site.stop()
            raise
        try:
            daemon = Daemon(cfg, clock, mqtt_host=broker.host, mqtt_port=broker.port)
            flog = None
            if daemon.planner is not None:
                inner = truth.forecast if forecast == "perfect" else daemon.planner.forecast
                flog = daemon.planner.forecast = ForecastLog(inner)
            result = await _drive(scenario, clock, site, daemon, progress)
        finally:
            await site.stop()
            await broker.close()
        wall_s, plans = result
        errors = None
        if forecast == "own" and daemon.planner is not None:
            errors = {"load": daemon.forecaster.errors.load.figures(),
                      "pv": daemon.forecaster.errors.pv.figures()}
        return RunResult(
            scenario, cfg, truth, forecast, planner, speed, wall_s, site.kpis(), recorder,
            list(site.samples), plans, flog, errors, (e0, _stored_kwh(site)),
            daemon.cycle.stats.cycles, daemon.cycle.stats.crashes,
            {d: h.errors for d, h in daemon.cycle.health.items()},
            _planner_stats(daemon.planner), notes=notes)


def _planner_stats(planner) -> dict | None:
    if planner is None:
        return None
    s = planner.stats
    return {"solves": s.solves, "failures": s.failures, "last_status": s.last_status,
            "last_reason": s.last_reason}


async def _drive(scenario: Scenario, clock: RunClock, site: SimSite, daemon, progress):
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop), name="daemon")
    events: asyncio.Task | None = None
    plans = PlanTrack()
    try:
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()  # the daemon died while starting: surface why
            raise RuntimeError("the daemon stopped before it was ready")
        if not daemon.ready.is_set():
            raise RuntimeError("the daemon was not ready after 60 s (devices unreachable?)")
        clock.release()
        t_wall = time.monotonic()
        events = asyncio.create_task(_events(scenario, clock, site, daemon), name="events")
        total = scenario.duration_s
        while (t := clock.elapsed_s()) < total and not task.done():
            if daemon.planner is not None:
                plans.see(daemon.planner.last)
            if events.done() and events.exception():
                raise events.exception()
            if progress is not None:
                progress(t, total, site.status_line())
            await asyncio.sleep(0.02)
        if task.done():
            task.result()
            raise RuntimeError("the daemon stopped before the end of the scenario")
        site.step_to(total)
        if daemon.planner is not None:
            plans.see(daemon.planner.last)
        if progress is not None:
            progress(total, total, site.status_line())
        return time.monotonic() - t_wall, plans
    finally:
        if events is not None:
            events.cancel()
            await asyncio.gather(events, return_exceptions=True)
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


# -- references ---------------------------------------------------------------------------------
def replay_rules(cfg: Config, truth: Truth, duration_s: float, dr: list[Window],
                 soc0: dict[str, float]) -> dict:
    """The rule-based controller (no planner) replayed on the true series: the configured
    control functions and the compiled kernel each `control.cycle_s`, writing on the same
    deadband, with the HIL's battery and PV-ramp physics. Returns ledger KPIs plus the
    stored energy at the start and end and the SoC range."""
    kernel = dispatch.load_kernel()
    ctl = cfg.control
    dt = ctl.cycle_s
    bats = [d for d in cfg.devices if isinstance(d, BatteryDevice)]
    pvs = [d for d in cfg.devices if isinstance(d, PvDevice)]
    phys = [Battery(capacity_kwh=b.capacity_kwh, max_charge_kw=b.max_charge_kw,
                    max_discharge_kw=b.max_discharge_kw, soc_pct=soc0[b.id],
                    charge_efficiency=b.charge_efficiency,
                    discharge_efficiency=b.discharge_efficiency, ramp_kw_per_s=b.ramp_kw_per_s)
            for b in bats]
    share = [p.rated_kw / sum(q.rated_kw for q in pvs) for p in pvs]
    pv_kw = np.zeros(len(pvs))
    pv_limit = np.array([p.rated_kw for p in pvs])
    written = [0.0] * len(bats)
    bess_m = np.zeros((len(bats), dispatch.NB))
    pv_m = np.zeros((len(pvs), dispatch.NV))
    book = InstructionBook()
    for w in dr:
        book.put(_dr_instruction(w))
    ledger = Ledger(cfg.tariff)
    stored = lambda: sum(b.soc_pct / 100 * b.capacity_kwh for b in phys)  # noqa: E731
    e0 = stored()
    socs = []
    price_minute, price = -1, 0.0
    steps = int(round(duration_s / dt))
    for k in range(steps):
        t = truth.start + timedelta(seconds=k * dt)
        minute = int(k * dt // 60)
        if minute != price_minute:
            price_minute, price = minute, truth.price_at(t)
        load = truth.load_at(t)
        avail = np.minimum([p.rated_kw for p in pvs], truth.pv_at(t) * np.array(share))
        grid_meas = load - pv_kw.sum() - sum(b.power_kw for b in phys)
        image = ProcessImage(t, dt, {})
        bounds, _ = run_functions(ctl.functions, image, ctl, book.combine(t))
        for i, (b, ph) in enumerate(zip(bats, phys)):
            bess_m[i] = (ph.power_kw, written[i], ph.soc_pct, b.soc_min_pct, b.soc_max_pct,
                         b.max_charge_kw, b.max_discharge_kw, b.ramp_kw_per_s, 1.0)
        for j, p in enumerate(pvs):
            pv_m[j] = (pv_kw[j], p.rated_kw, pv_limit[j], p.ramp_kw_per_s, 1.0)
        res = dispatch.dispatch(kernel, grid_kw=grid_meas, import_limit_kw=bounds.import_limit_kw,
                                export_limit_kw=bounds.export_limit_kw,
                                grid_target_kw=bounds.grid_target_kw, dt_s=dt, bess=bess_m,
                                pv=pv_m)
        violated = grid_meas > bounds.import_limit_kw or -grid_meas > bounds.export_limit_kw
        band = 0.05 if violated else ctl.deadband_kw
        for i in range(len(bats)):
            if abs(res.bess_kw[i] - written[i]) > band:
                written[i] = float(res.bess_kw[i])
        for j in range(len(pvs)):
            if abs(res.pv_limit_kw[j] - pv_limit[j]) > band:
                pv_limit[j] = float(res.pv_limit_kw[j])
        bess = sum(ph.step(written[i], dt) for i, ph in enumerate(phys))
        for j, p in enumerate(pvs):
            pv_kw[j] = ramp_toward(pv_kw[j], min(avail[j], pv_limit[j]), p.ramp_kw_per_s, dt)
        pv = float(pv_kw.sum())
        ledger.add(t, price, dt, load, pv, float(avail.sum()), bess, load - pv - bess)
        if phys:
            socs.append(sum(b.soc_pct * b.capacity_kwh for b in phys)
                        / sum(b.capacity_kwh for b in phys))
    out = ledger.kpis()
    out.update(stored_kwh_start=e0, stored_kwh_end=stored(),
               soc_min_pct=min(socs, default=None), soc_max_pct=max(socs, default=None))
    return out


def optimum(cfg: Config, scenario: Scenario, truth: Truth, value_per_kwh: float,
            time_limit_s: float = 120.0):
    """The perfect-foresight optimum: the planner's LP over the whole run on 15-min means of
    the true series and prices, DR windows as commitments, end energy worth
    `value_per_kwh`. Returns (kpis, plan)."""
    from edge.plan.model import build_input
    from edge.plan.solve import solve

    n = int(scenario.duration_s // BILLING_S)
    load, pv = truth.averages(truth.start, n, BILLING_S)
    commitments = [_dr_instruction(w) for w in scenario.dr_windows()]
    inp = build_input(cfg, truth.start, BILLING_S, load, pv, scenario.initial_soc(cfg), 0.0,
                      commitments)
    inp = replace(inp, import_price=truth.import_prices(truth.start, n, BILLING_S),
                  terminal_value_per_kwh=value_per_kwh)
    plan = solve(inp, time_limit_s)
    h = BILLING_S / 3600
    imp, exp = np.maximum(plan.grid_kw, 0), np.maximum(-plan.grid_kw, 0)
    cap = sum(b.capacity_kwh for b in inp.batteries)
    import_cost = float(np.sum(imp * inp.import_price) * h)
    export_revenue = float(np.sum(exp * inp.export_price) * h)
    peak = float(max(imp.max(initial=0.0), 0.0))
    demand = peak * cfg.tariff.demand_charge_per_kw
    kpis = {
        "import_kwh": float(imp.sum() * h), "export_kwh": float(exp.sum() * h),
        "pv_kwh": float(plan.pv_kw.sum() * h), "pv_available_kwh": float(pv.sum() * h),
        "pv_curtailed_kwh": float((pv - plan.pv_kw).sum() * h), "load_kwh": float(load.sum() * h),
        "import_cost": import_cost, "export_revenue": export_revenue,
        "energy_cost": import_cost - export_revenue, "peak_15min_import_kw": peak,
        "demand_cost": demand, "total_cost": import_cost - export_revenue + demand,
        "stored_kwh_start": float(plan.soc_pct[0]) / 100 * cap,
        "stored_kwh_end": float(plan.soc_pct[-1]) / 100 * cap,
        "soc_min_pct": float(plan.soc_pct.min()), "soc_max_pct": float(plan.soc_pct.max()),
        "status": plan.status, "solve_s": plan.solve_s,
    }
    return kpis, plan


def _costs(k: dict, value: float) -> dict:
    """The comparable figures of one strategy: costs and the end-of-run adjustment."""
    d_e = k.get("stored_kwh_end", 0.0) - k.get("stored_kwh_start", 0.0)
    out = {key: k[key] for key in ("total_cost", "energy_cost", "demand_cost", "import_cost",
                                   "export_revenue", "import_kwh", "export_kwh",
                                   "peak_15min_import_kw", "pv_curtailed_kwh") if key in k}
    out["stored_energy_change_kwh"] = d_e
    out["adjusted_cost"] = k["total_cost"] - value * d_e
    for key in ("soc_min_pct", "soc_max_pct", "status", "solve_s"):
        if key in k:
            out[key] = k[key]
    return out


def ratio(controller: float, opt: float, no_battery: float, nb_import_cost: float) -> dict:
    """cost_ratio_vs_optimum and its companions (see the module docstring)."""
    gap = controller - opt
    basis, scale = ("optimum", opt) if opt > 1e-9 else ("no_battery_import_cost", nb_import_cost)
    r = 1 + gap / scale if scale > 1e-9 else None
    room = no_battery - opt
    return {"cost_ratio_vs_optimum": r, "ratio_basis": basis, "cost_gap_vs_optimum": gap,
            "savings_capture": (no_battery - controller) / room if room > 1e-6 else None}


def _solve_stats(plans: PlanTrack) -> dict:
    times = np.array([p.solve_s for p in plans.plans if math.isfinite(p.solve_s)])
    statuses: dict[str, int] = {}
    for p in plans.plans:
        statuses[p.status] = statuses.get(p.status, 0) + 1
    if not len(times):
        return {"plans": 0, "status": statuses}
    return {"plans": len(plans.plans), "status": statuses, "mean_s": float(times.mean()),
            "p50_s": float(np.percentile(times, 50)), "p95_s": float(np.percentile(times, 95)),
            "max_s": float(times.max())}


def evaluate(res: RunResult, *, with_optimum: bool = True, with_rules: bool = True) -> dict:
    """The KPI document of a run (also stored in `res.kpis`)."""
    sc, cfg, truth = res.scenario, res.config, res.truth
    value = sc.spec.terminal_value_per_kwh
    if value is None:
        value = float(truth.import_prices(truth.start, int(sc.duration_s // BILLING_S),
                                          BILLING_S).min())
    real, nb = res.site_kpis["with_battery"], res.site_kpis["no_battery"]
    e0, e1 = res.stored_kwh
    ctrl = dict(real, stored_kwh_start=e0, stored_kwh_end=e1,
                soc_min_pct=res.recorder.soc_min if math.isfinite(res.recorder.soc_min) else None,
                soc_max_pct=res.recorder.soc_max if math.isfinite(res.recorder.soc_max) else None)
    controller = _costs(ctrl, value)
    pv = real["pv_kwh"]
    controller.update(
        pv_kwh=pv, load_kwh=real["load_kwh"], max_import_kw=real["max_import_kw"],
        max_export_kw=real["max_export_kw"],
        self_consumption_pct=100 * (pv - real["export_kwh"]) / pv if pv > 0 else None)
    refs: dict = {"no_battery": _costs(nb, value)}
    if with_rules:
        refs["rule_based"] = _costs(
            replay_rules(cfg, truth, sc.duration_s, sc.dr_windows(), sc.initial_soc(cfg)), value)
    k: dict = {
        "scenario": sc.name, "site": cfg.site.id, "start": sc.start.isoformat(),
        "hours": sc.duration_s / 3600, "forecast": res.forecast if res.planner else None,
        "planner": res.planner, "speed": res.speed, "wall_s": res.wall_s,
        "currency": cfg.tariff.currency, "terminal_value_per_kwh": value,
        "controller": controller,
        "limit_violations": {"import": res.recorder.imports.as_dict(),
                             "export": res.recorder.exports.as_dict(),
                             "dr": res.recorder.dr_excess.as_dict(),
                             "tolerance_kw": VIOLATION_TOL_KW},
        "solve_times": _solve_stats(res.plans), "planner_rounds": res.planner_stats,
        "forecast_error": (res.forecast_log.errors(truth, sc.end) if res.forecast_log else None),
        "forecaster_own_error": res.forecaster_errors,
        "cycles": res.cycles, "crashes": res.crashes, "device_errors": res.device_errors,
        "references": refs,
        "notes": res.notes,
    }
    if with_optimum:
        try:
            opt, plan = optimum(cfg, sc, truth, value)
            refs["optimum"] = _costs(opt, value)
            res.optimum_plan = plan
        except Exception as exc:  # noqa: BLE001 - report it, the run's own KPIs still stand
            log.warning("perfect-foresight optimum failed: %s", exc)
            refs["optimum"] = {"error": f"{type(exc).__name__}: {exc}"}
    opt_cost = refs.get("optimum", {}).get("adjusted_cost")
    if opt_cost is not None:
        k.update(ratio(controller["adjusted_cost"], opt_cost, refs["no_battery"]["adjusted_cost"],
                       nb["import_cost"]))
        if "rule_based" in refs:
            refs["rule_based"]["cost_ratio_vs_optimum"] = ratio(
                refs["rule_based"]["adjusted_cost"], opt_cost,
                refs["no_battery"]["adjusted_cost"], nb["import_cost"])["cost_ratio_vs_optimum"]
    else:
        k.update(cost_ratio_vs_optimum=None, ratio_basis=None, cost_gap_vs_optimum=None,
                 savings_capture=None)
    res.kpis = k
    return k


def write_json(kpis: dict, path: Path) -> None:
    def clean(x):
        if isinstance(x, float):
            return round(x, 4) if math.isfinite(x) else None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    path.write_text(json.dumps(clean(kpis), indent=2) + "\n", encoding="utf-8")


# -- report -----------------------------------------------------------------------------------
def report_data(res: RunResult):
    """The HTML report's content for a run (after `evaluate`)."""
    from tools.report_html import ReportData, Steps

    k, sc, cfg = res.kpis, res.scenario, res.config
    refs = k["references"]
    cols = [("controller", k["controller"]), ("rule-based", refs.get("rule_based")),
            ("no battery", refs["no_battery"]), ("optimum", refs.get("optimum"))]
    cols = [(name, c) for name, c in cols if c is not None and "error" not in c]
    cur = k["currency"]
    rows = [
        ("Total cost", cur, "total_cost"), ("Energy cost", cur, "energy_cost"),
        ("Demand charge", cur, "demand_cost"), ("Adjusted cost (end energy valued)", cur,
                                                 "adjusted_cost"),
        ("Energy imported", "kWh", "import_kwh"), ("Energy exported", "kWh", "export_kwh"),
        ("Peak import (15-min mean)", "kW", "peak_15min_import_kw"),
        ("PV curtailed", "kWh", "pv_curtailed_kwh"), ("SoC min", "%", "soc_min_pct"),
        ("SoC max", "%", "soc_max_pct"),
        ("Stored energy change", "kWh", "stored_energy_change_kwh"),
    ]
    kpi_rows = [(name, unit, [c.get(key) for _, c in cols]) for name, unit, key in rows]
    kpi_rows.append(("Cost ratio vs optimum", "", [
        k.get("cost_ratio_vs_optimum") if n == "controller" else
        c.get("cost_ratio_vs_optimum", 1.0 if n == "optimum" else None) for n, c in cols]))
    n = int(sc.duration_s // INTERVAL_S)
    means = res.recorder.means()
    actual = Steps(sc.start, INTERVAL_S, means["grid"][:n], means["bess"][:n],
                   res.recorder.soc_end[:n])
    plan = None
    if res.plans.plans:
        f = res.plans.in_force(sc.start, n, INTERVAL_S)
        plan = Steps(sc.start, INTERVAL_S, f["grid"], f["bess"], f["soc"])
    opt = None
    if res.optimum_plan is not None:
        p = res.optimum_plan
        opt = Steps(p.start, p.step_s, p.grid_kw, p.bess_kw, p.soc_pct[1:])
    lv = k["limit_violations"]
    fe = k.get("forecast_error") or {}
    notes = [
        f"Limit excursions beyond {VIOLATION_TOL_KW} kW: import {lv['import']['count']} "
        f"(worst {lv['import']['worst_kw']:.2f} kW), export {lv['export']['count']} (worst "
        f"{lv['export']['worst_kw']:.2f} kW), DR {lv['dr']['count']}.",
        f"Cycles {k['cycles']}, crashes {k['crashes']}; simulated ×{res.speed:g} in "
        f"{res.wall_s:.0f} s wall. End-of-run energy valued at "
        f"{k['terminal_value_per_kwh']:.3f} {cur}/kWh in the adjusted cost.",
    ]
    if fe.get("load"):
        notes.append(f"Forecast MAE ({res.forecast}): load {fe['load']['mae_kw']:.2f} kW, "
                     f"PV {fe['pv']['mae_kw']:.2f} kW over {fe['forecasts']} forecasts.")
    c = cfg.control
    mode = (f"planner with {res.forecast} forecasts" if res.planner
            else "rule-based control (no planner)")
    return ReportData(
        title=f"{sc.name}: {cfg.site.id}", tz=res.truth.tz, currency=cur,
        subtitle=f"{sc.spec.description} — {mode}, {sc.duration_s / 3600:g} h from "
                 f"{sc.start.isoformat()}",
        samples=res.samples, import_price=res.truth.price_at, export_price=cfg.tariff.export_price,
        kpi_columns=[name for name, _ in cols], kpi_rows=kpi_rows, notes=notes,
        import_limit_kw=c.import_limit_kw, export_limit_kw=c.export_limit_kw,
        actual=actual, plan=plan, optimum=opt,
        windows=[(w.start, w.end, w.id) for w in sc.windows])


# -- command line ---------------------------------------------------------------------------------
def summary_table(k: dict, console) -> None:
    from rich.table import Table

    refs = k["references"]
    cols = [("controller", k["controller"]), ("rule-based", refs.get("rule_based")),
            ("no battery", refs["no_battery"]), ("optimum", refs.get("optimum"))]
    cols = [(n, c) for n, c in cols if c is not None and "error" not in c]
    cur = k["currency"]
    mode = f"planner, {k['forecast']} forecasts" if k["planner"] else "rule-based (no planner)"
    table = Table(title=f"{k['scenario']} on {k['site']}: {k['hours']:g} h, {mode}")
    table.add_column("KPI")
    table.add_column("unit")
    for n, _ in cols:
        table.add_column(n, justify="right")
    for name, unit, key in (("Total cost", cur, "total_cost"), ("Energy cost", cur, "energy_cost"),
                            ("Demand charge", cur, "demand_cost"),
                            ("Adjusted cost", cur, "adjusted_cost"),
                            ("Peak import (15 min)", "kW", "peak_15min_import_kw"),
                            ("Exported", "kWh", "export_kwh"),
                            ("PV curtailed", "kWh", "pv_curtailed_kwh"),
                            ("SoC min", "%", "soc_min_pct"), ("SoC max", "%", "soc_max_pct")):
        table.add_row(name, unit, *(("–" if c.get(key) is None else f"{c[key]:,.2f}")
                                    for _, c in cols))
    console.print(table)
    r = k.get("cost_ratio_vs_optimum")
    lv = k["limit_violations"]
    st = k["solve_times"]
    console.print(
        "cost_ratio_vs_optimum: " + ("–" if r is None else f"{r:.4f} ({k['ratio_basis']})")
        + (f"; savings captured {100 * k['savings_capture']:.1f} %"
           if k.get("savings_capture") is not None else ""))
    console.print(f"limit excursions: import {lv['import']['count']}, export "
                  f"{lv['export']['count']} (worst {lv['export']['worst_kw']:.2f} kW), DR "
                  f"{lv['dr']['count']}; plans {st['plans']}"
                  + (f", solve p50 {1e3 * st['p50_s']:.0f} ms, max {1e3 * st['max_s']:.0f} ms"
                     if st["plans"] else "")
                  + f"; cycles {k['cycles']}, crashes {k['crashes']}")


def command(config: Config, scenario_path: str, *, out: Path | None, report: Path | None,
            forecast: str, planner: bool, speed: float, hours: float | None,
            quiet: bool = False) -> int:
    """`pedf-edge simulate`; returns the exit code (the CLI has loaded the config)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from hil import scenario as scenario_mod

    console = Console(stderr=True, quiet=quiet)
    try:
        sc = scenario_mod.load(scenario_path)
        if hours is not None:
            sc = sc.truncated(hours)
        sc.apply(config)  # scenario errors before anything starts
    except scenario_mod.ScenarioError as exc:
        print(f"{exc.source}: invalid scenario ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.fields[sim]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(sc.name, total=sc.duration_s, sim="")

        def progress(t: float, total: float, status: str) -> None:
            bar.update(task, completed=t, sim=status[:60])

        res = asyncio.run(run(sc, config, forecast=forecast, planner=planner, speed=speed,
                              progress=progress))
    console.print("solving the references (perfect-foresight LP, rule-based replay) ...")
    kpis = evaluate(res)
    summary_table(kpis, Console(quiet=quiet))
    if out is not None:
        write_json(kpis, out)
        console.print(f"KPIs written to {out}")
    if report is not None:
        from tools.report_html import write

        write(report_data(res), report)
        console.print(f"report written to {report}")
    return 0 if res.crashes == 0 else 1

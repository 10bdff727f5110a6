"""One run of `pedf-edge simulate`: the HIL and the daemon on one accelerated clock through
a scenario, with what the run records (tools/simulate/tracks.py)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from edge.app.statedir import StateLock
from edge.config import Config
from edge.cycle import MIN_PERIOD_WALL_S
from edge.report.history import INTERVAL_S, History, Interval
from hil.devices.hvac import MapTesSim
from hil.scenario import GridOutage, Scenario, Truth
from hil.site import Sample, SimSite
from tools.broker import ensure_broker, free_port
from tools.simulate.events import fire_events
from tools.simulate.evkpis import EvLedger
from tools.simulate.evpark import chargers_of
from tools.simulate.islandkpis import collect
from tools.simulate.runclock import AFTER_S, BEFORE_S, RunClock, outage_windows
from tools.simulate.thermal import Comfort, hvacs_of, true_weather
from tools.simulate.tracks import ForecastLog, PlanTrack, Recorder

log = logging.getLogger(__name__)

PACE_OK = 0.5  # a run below this share of its allowed cycles is flagged
DEFAULT_SPEED = 720.0  # a day in ~2 min; one cycle (50 Hz wall cap) spans ~15 simulated s
TOPIC_PREFIX = "pedf-sim/v1"


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
    island: dict | None = None  # a microgrid's island record (tools/simulate/islandkpis.py)
    optimum_plan: object | None = None
    notes: list[str] = field(default_factory=list)
    tank_kwh: tuple[dict, dict] = ({}, {})  # each tank's thermal kWh at start, at end


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
    """The site with every TCP device on its own free loopback port and the CSMS the
    charge points connect to on another: the HIL stands in for all of them, so a
    simulation never collides with a running HIL or daemon or reaches a real device,
    whatever the config says. Units that share an endpoint keep sharing one. Its reports go
    under their own topic prefix (and to a broker of the run's own)."""
    data = cfg.model_dump()
    data["mqtt"]["topic_prefix"] = TOPIC_PREFIX
    taken: set[int] = set()

    def fresh() -> int:  # free now, and not one this run has already handed out
        while (port := free_port()) in taken:
            pass
        taken.add(port)
        return port

    data["ocpp"]["host"], data["ocpp"]["port"] = "127.0.0.1", fresh()
    ports: dict[tuple[str, int], int] = {}
    for d in data["devices"]:
        if d.get("serial") is not None and d["protocol"] in ("sunspec-rtu", "modbus-rtu",
                                                             "dlt645-serial"):
            continue
        if d.get("host") is None:  # it connects to us (a charge point to the CSMS)
            continue
        key = (d["host"], d["port"])
        if key not in ports:
            ports[key] = fresh()
        d["port"] = ports[key]
        d["host"] = "127.0.0.1"
    return Config.model_validate(data)


def _stored_kwh(site: SimSite) -> float:
    stores = [d.stored() for d in site.devices.values()]
    return sum(b.soc_pct / 100 * b.capacity_kwh for b in stores if b is not None)


def _tank_kwh(site: SimSite) -> dict[str, float]:
    return {i: d.stored_kwh for i, d in site.devices.items() if isinstance(d, MapTesSim)}


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
    put_intervals(history, first, load, pv, load - pv)
    return len(load)


def put_intervals(history: History, first: datetime, load_kw, pv_kw, grid_kw) -> None:
    """Mean kW of load, PV and grid (+ import) per 15 min from `first` as stored intervals:
    a history for the controller's forecasts to start from."""
    h = INTERVAL_S / 3600
    for i, (load, pv, grid) in enumerate(zip(load_kw, pv_kw, grid_kw)):
        history.put(Interval(first + timedelta(seconds=i * INTERVAL_S),
                             import_kwh=max(grid, 0.0) * h, export_kwh=max(-grid, 0.0) * h,
                             pv_kwh=pv * h, load_kwh=load * h, covered_s=INTERVAL_S))


async def run(scenario: Scenario, config: Config, *, forecast: str = "perfect",
              planner: bool = True, speed: float = DEFAULT_SPEED,
              state_dir: Path | None = None, progress=None) -> RunResult:
    """One HIL + daemon run of `scenario` on `config` (as given: not yet applied).
    `progress(t_s, total_s, status)` is called ~10 times per wall second."""
    from edge.app.daemon import Daemon  # the daemon's modules: only for a run

    if forecast not in ("perfect", "own"):
        raise ValueError("forecast must be 'perfect' or 'own'")
    with (tempfile.TemporaryDirectory(prefix="pedf-sim-") as tmp,
          StateLock(Path(state_dir or tmp)) as lock):
        state = lock.path.parent
        cfg = isolated(scenario.apply(config, planner=planner, storage_dir=state))
        truth = scenario.truth(cfg)
        notes = billing_notes(scenario, cfg)
        for n in notes:
            log.warning("scenario %s: %s", scenario.name, n)
        history = History(state / "history.sqlite")
        seed_history(history, scenario)
        history.close()
        outages = [(w.start - scenario.start).total_seconds() for w in scenario.windows
                   if isinstance(w.event, GridOutage)]
        clock = RunClock(scenario.start, speed, scenario.duration_s, outage_windows(outages))
        site = SimSite(cfg, clock, truth=truth)
        recorder = Recorder(cfg, scenario.start, scenario.duration_s, scenario.dr_windows())
        if chargers := chargers_of(cfg):
            recorder.ev = EvLedger(cfg, scenario.end)
            recorder.chargers = [(d, site.devices[d.id].connectors) for d in chargers]
        if hvacs := hvacs_of(cfg):
            recorder.comfort = Comfort(cfg)
            recorder.zones = lambda: {d.id: site.devices[d.id].zone_c for d in hvacs}
        site.on_substep = recorder
        e0, tanks0 = _stored_kwh(site), _tank_kwh(site)
        await site.start()  # before the broker: its free port must not be a device's port
        # Never the configured broker: simulated telemetry must not reach a real platform
        # under the site's id. A broker of its own keeps the daemon's whole path real.
        port = free_port()
        while port == cfg.ocpp.port:  # the CSMS listens there once the daemon starts
            port = free_port()
        try:
            broker = await ensure_broker("127.0.0.1", port)
        except BaseException:
            await site.stop()
            raise
        try:
            daemon = Daemon(cfg, clock, mqtt_host=broker.host, mqtt_port=broker.port,
                            in_process_planner=True)  # it swaps and scores the forecasts
            flog = None
            if daemon.planner is not None:
                inner = truth.forecast if forecast == "perfect" else daemon.planner.forecast
                flog = daemon.planner.forecast = ForecastLog(inner)
                if forecast == "perfect" and hvacs_of(cfg):
                    daemon.planner.weather = true_weather(cfg)
            result = await _drive(scenario, clock, site, daemon, progress)
            island = collect(daemon, site)
        finally:
            await site.stop()
            await broker.close()
        wall_s, plans = result
        if outages:
            notes.append(f"the clock ran in real time (×1) from {BEFORE_S:g} s before to "
                         f"{AFTER_S:g} s after each grid loss, so the transfer is timed as on "
                         "site, not by the speed-up")
        fast_wall_s = wall_s - clock.real_time_s()
        if note := pace_note(daemon.cycle.stats.cycles, fast_wall_s, speed, cfg.control.cycle_s):
            log.warning("scenario %s: %s", scenario.name, note)
            notes.append(note)
        errors = None
        if forecast == "own" and daemon.planner is not None:
            errors = {"load": daemon.forecaster.errors.load.figures(),
                      "pv": daemon.forecaster.errors.pv.figures()}
        return RunResult(
            scenario, cfg, truth, forecast, planner, speed, wall_s, site.kpis(), recorder,
            list(site.samples), plans, flog, errors, (e0, _stored_kwh(site)),
            daemon.cycle.stats.cycles, daemon.cycle.stats.crashes,
            {d: h.errors for d, h in daemon.cycle.health.items()},
            _planner_stats(daemon.planner), notes=notes, island=island,
            tank_kwh=(tanks0, _tank_kwh(site)))


def pace_note(cycles: int, wall_s: float, speed: float, cycle_s: float) -> str | None:
    """A warning when the daemon took far fewer cycles than the accelerated clock allowed
    (a busy machine, a stalled loop): each cycle then spans more simulated time than the
    site's control would, so limit excursions and DR figures overstate what it does."""
    if wall_s <= 0 or cycles <= 0:
        return None
    allowed = wall_s / max(cycle_s / speed, MIN_PERIOD_WALL_S)
    if cycles >= PACE_OK * allowed:
        return None
    per_cycle = wall_s * speed / cycles
    return (f"the daemon kept only {100 * cycles / allowed:.0f} % of the cycles this speed "
            f"allows ({per_cycle:.0f} simulated s per cycle, the site's control takes "
            f"{max(cycle_s, MIN_PERIOD_WALL_S * speed):.0f}): the machine was busy; limit and "
            "DR figures are not representative, run again with a lower --speed or on a quiet "
            "machine")


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
        events = asyncio.create_task(fire_events(scenario, clock, site, daemon), name="events")
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



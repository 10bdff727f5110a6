"""`pedf-edge demo`: the simulated building (HIL on loopback Modbus) and the controller on
one accelerated clock for a simulated day, reporting over a real MQTT broker, then a KPI
table against the same day without a battery."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edge.app.clock import Clock
from edge.app.daemon import Daemon
from edge.app.statedir import StateLock, state_dir
from edge.config import Config
from edge.report.bill import self_consumption_pct
from edge.report.history import INTERVAL_S, PER_DAY, History, interval_start
from hil.config import hil_of
from hil.site import SimSite
from tools import report_html
from tools.broker import ensure_broker
from tools.report_html import Steps
from tools.simulate.run import put_intervals
from tools.simulate.tracks import PlanTrack

log = logging.getLogger(__name__)

HISTORY_DAYS = 7  # what the PV calibration reads; the load forecast finds 5 working days in it
TOPIC_PREFIX = "pedf-demo/v1"  # never the site's own topics, even on the site's broker


def demo_config(config: Config) -> Config:
    """The site as the demo runs it: state in `<storage.dir>/demo` and its own topic
    prefix, so a demo never adds to a real run's counters and history or reports under
    the site's topics."""
    return config.model_copy(update={
        "storage": config.storage.model_copy(update={"dir": config.storage.dir / "demo"}),
        "mqtt": config.mqtt.model_copy(update={"topic_prefix": TOPIC_PREFIX})})


def _fresh(directory: Path) -> None:
    """Each demo starts from its seeded week alone: the last demo's databases go."""
    for f in directory.glob("*.sqlite*"):
        f.unlink()


def seed_history(config: Config, days: int = HISTORY_DAYS) -> int:
    """The `days` local days before `hil.start` as the site's 15-min history, from the
    site's own physics with no battery (`SimSite.history_kw`), so the planner starts with a
    load profile of similar days and a calibrated PV forecast, as on a site that has been
    running, instead of carrying the first measured load forward. Stored intervals of those
    days are replaced, so a re-run of the demo seeds the same days. Returns the number of
    intervals. Runs before the demo's clock starts: it costs no simulated time."""
    site = SimSite(config)  # not started: its devices' physics, no sockets
    end = interval_start(hil_of(config).start)
    local = end.astimezone(site.tz).date() - timedelta(days=days)
    first = datetime.combine(local, datetime.min.time(), site.tz)
    kw = site.history_kw(first, end, INTERVAL_S)
    history = History(state_dir(config) / "history.sqlite")
    try:
        put_intervals(history, first, kw["load_kw"], kw["pv_kw"], kw["grid_kw"])
    finally:
        history.close()
    return len(kw["pv_kw"])


class _Counter:
    """A separate MQTT subscriber: counts telemetry the platform would really receive."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.ids: set[int] = set()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pedf-demo-platform")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect_async(host, port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            self.ids.add(int(json.loads(msg.payload)["msg_id"]))
        except (ValueError, KeyError, TypeError):
            log.warning("demo subscriber: unreadable telemetry %r", msg.payload[:80])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def kpi_table(kpis: dict, console: Console) -> None:
    cur = kpis["currency"]
    a, b = kpis["with_battery"], kpis["no_battery"]
    rows = [
        ("Energy imported", "kWh", a["import_kwh"], b["import_kwh"]),
        ("Energy exported", "kWh", a["export_kwh"], b["export_kwh"]),
        ("PV generated", "kWh", a["pv_kwh"], b["pv_kwh"]),
        ("PV curtailed", "kWh", a["pv_curtailed_kwh"], b["pv_curtailed_kwh"]),
        ("Peak import (15-min mean)", "kW", a["peak_15min_import_kw"], b["peak_15min_import_kw"]),
        ("Max import (instantaneous)", "kW", a["max_import_kw"], b["max_import_kw"]),
        ("Self-consumption ratio", "%", self_consumption_pct(a) or 0.0,
         self_consumption_pct(b) or 0.0),
        ("Import cost", cur, a["import_cost"], b["import_cost"]),
        ("Export revenue", cur, a["export_revenue"], b["export_revenue"]),
        ("Demand charge", cur, a["demand_cost"], b["demand_cost"]),
        ("Bill (TOU tariff)", cur, a["total_cost"], b["total_cost"]),
    ]
    table = Table(title=f"Simulated {kpis['sim_hours']:.1f} h — controlled site vs. same day without battery")
    table.add_column("KPI")
    table.add_column("unit")
    table.add_column("controlled", justify="right")
    table.add_column("no battery", justify="right")
    for name, unit, x, y in rows:
        table.add_row(name, unit, f"{x:,.2f}", f"{y:,.2f}")
    console.print(table)
    console.print(f"Savings: {kpis['savings']:,.2f} {cur} "
                  f"({100.0 * kpis['savings'] / b['total_cost']:.1f} % of the no-battery bill)"
                  if b["total_cost"] else f"Savings: {kpis['savings']:,.2f} {cur}")


async def _follow(clock: Clock, site: SimSite, daemon: Daemon, task: asyncio.Task,
                  plans: PlanTrack, console: Console, sim_s: float) -> None:
    """The progress bar, until the simulated span is over or the daemon ends."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.fields[sim]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("simulated day", total=sim_s, sim="")
        while (t := clock.elapsed_s()) < sim_s and not task.done():
            local = clock.now().astimezone(site.tz)
            progress.update(bar, completed=t, sim=f"{local:%H:%M} {site.status_line()[17:60]}")
            if daemon.planner is not None:
                plans.see(daemon.planner.last)
            await asyncio.sleep(0.1)
        progress.update(bar, completed=sim_s)


async def run_demo(config: Config, wall_s: float = 110.0, speed: float | None = None,
                   hours: float = 24.0, report: Path | None = None) -> int:
    """`report`: where the HTML report goes (default: report.html in the demo's state dir).
    Raises StateDirBusy while another demo runs on the same config."""
    config = demo_config(config)
    with StateLock(state_dir(config)) as lock:
        _fresh(lock.path.parent)
        return await _run(config, wall_s, speed, hours, report)


async def _run(config: Config, wall_s: float, speed: float | None, hours: float,
               report: Path | None) -> int:
    console = Console()
    sim_s = hours * 3600.0
    speed = speed or sim_s / wall_s
    n = seed_history(config)
    console.print(f"History: {n / PER_DAY:g} days before the start seeded from the site's "
                  "physics (no battery), for the forecasts and DR baselines")
    clock = Clock(hil_of(config).start, speed)
    site = SimSite(config, clock)
    await site.start()  # first: an embedded broker's free port must not be a device's port
    broker = await ensure_broker(config.mqtt.host, config.mqtt.port)
    where = "embedded amqtt" if broker.embedded else "existing"
    console.print(f"MQTT: {where} broker at {broker.host}:{broker.port}; "
                  f"HIL + controller at ×{speed:.0f} ({hours:g} h in ~{sim_s / speed:.0f} s)")
    daemon = Daemon(config, clock, mqtt_host=broker.host, mqtt_port=broker.port,
                    in_process_planner=True)  # the report reads its forecasts and plans
    counter = _Counter(broker.host, broker.port, daemon.link.topic("telemetry"))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop), name="daemon")
    plans = PlanTrack()
    try:
        try:
            await _follow(clock, site, daemon, task, plans, console, sim_s)
        finally:  # also when interrupted: the daemon stops and writes its safe state
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            await site.stop()
        if task.exception():
            raise task.exception()
        await asyncio.sleep(0.5)  # let the last acknowledged messages reach the subscriber
    finally:
        counter.close()
        await broker.close()
    kpis = site.kpis()
    kpi_table(kpis, console)
    n = int(min(clock.elapsed_s(), sim_s) // 900)
    steps = plans.in_force(clock.start, n, 900) if plans.plans and n else None
    plan = Steps(clock.start, 900, steps["grid"], steps["bess"], steps["soc"]) if steps else None
    end = clock.start + timedelta(seconds=sim_s)
    path = report_html.write(report_html.from_site(config, site, kpis, plan, end=end),
                             report or state_dir(config) / "report.html")
    console.print(f"Report: {path}")
    stats = daemon.cycle.stats
    console.print(f"Controller: {stats.cycles} cycles, {stats.crashes} crashes; "
                  f"telemetry received by the platform subscriber: {len(counter.ids)} messages; "
                  f"left in the outbox: {daemon.undelivered}")
    if daemon.planner is not None:
        ps, src = daemon.planner.stats, daemon.forecaster.source
        console.print(f"Planner: {ps.solves} plans adopted, {ps.failures} fallbacks; forecasts: "
                      f"load {src['load']}, PV {src['pv']}")
    return 0 if counter.ids and stats.crashes == 0 else 1

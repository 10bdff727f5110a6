"""`pedf-edge demo`: the simulated building (HIL on loopback Modbus) and the controller on
one accelerated clock for a simulated day, reporting over a real MQTT broker, then a KPI
table against the same day without a battery."""

from __future__ import annotations

import asyncio
import json
import logging

import paho.mqtt.client as mqtt
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edge.clock import Clock
from edge.config import Config
from edge.report.broker import ensure_broker
from edge.runtime import Daemon
from hil.site import SimSite

log = logging.getLogger(__name__)


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

    def self_consumption(k: dict) -> float:
        return 100.0 * (k["pv_kwh"] - k["export_kwh"]) / k["pv_kwh"] if k["pv_kwh"] else 0.0

    rows = [
        ("Energy imported", "kWh", a["import_kwh"], b["import_kwh"]),
        ("Energy exported", "kWh", a["export_kwh"], b["export_kwh"]),
        ("PV generated", "kWh", a["pv_kwh"], b["pv_kwh"]),
        ("PV curtailed", "kWh", a["pv_curtailed_kwh"], b["pv_curtailed_kwh"]),
        ("Peak import (15-min mean)", "kW", a["peak_15min_import_kw"], b["peak_15min_import_kw"]),
        ("Max import (instantaneous)", "kW", a["max_import_kw"], b["max_import_kw"]),
        ("Self-consumption ratio", "%", self_consumption(a), self_consumption(b)),
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


async def run_demo(config: Config, wall_s: float = 110.0, speed: float | None = None,
                   hours: float = 24.0) -> int:
    console = Console()
    sim_s = hours * 3600.0
    speed = speed or sim_s / wall_s
    broker = await ensure_broker(config.mqtt.host, config.mqtt.port)
    where = "embedded amqtt" if broker.embedded else "existing"
    console.print(f"MQTT: {where} broker at {broker.host}:{broker.port}; "
                  f"HIL + controller at ×{speed:.0f} ({hours:g} h in ~{sim_s / speed:.0f} s)")
    clock = Clock(config.hil.start, speed)
    site = SimSite(config, clock)
    await site.start()
    daemon = Daemon(config, clock, mqtt_host=broker.host, mqtt_port=broker.port)
    counter = _Counter(broker.host, broker.port, daemon.link.topic("telemetry"))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop), name="daemon")
    try:
        columns = (TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.fields[sim]}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task("simulated day", total=sim_s, sim="")
            while (t := clock.elapsed_s()) < sim_s and not task.done():
                local = clock.now().astimezone(site.tz)
                progress.update(bar, completed=t, sim=f"{local:%H:%M} {site.status_line()[17:60]}")
                await asyncio.sleep(0.1)
            progress.update(bar, completed=sim_s)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await site.stop()
    if task.exception():
        raise task.exception()
    await asyncio.sleep(0.5)  # let the last acknowledged messages reach the subscriber
    counter.close()
    await broker.close()
    kpis = site.kpis()
    kpi_table(kpis, console)
    stats = daemon.cycle.stats
    console.print(f"Controller: {stats.cycles} cycles, {stats.crashes} crashes; "
                  f"telemetry received by the platform subscriber: {len(counter.ids)} messages; "
                  f"left in the outbox: {daemon.undelivered}")
    return 0 if counter.ids and stats.crashes == 0 else 1

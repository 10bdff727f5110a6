"""Prometheus metrics of one daemon, in a registry of its own (not prometheus_client's global
one: tests and several daemons in one process must not collide).

The cycle's duration goes into a histogram from the cycle listener (an observe, nothing
awaited); everything else is read when /metrics is scraped: a collector reads what the
daemon holds in memory on the event loop, and the outbox (SQLite) is read in a worker
thread just before (`refresh`), so a scrape never waits on an fsync in the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drivers.base import Quality
from edge.image.balance import site_power
from edge.roles import role_of

if TYPE_CHECKING:
    from edge.api.stream import Stream
    from edge.app.daemon import Daemon

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_QUALITIES = ("good", "stale", "invalid")
_TERMS = ("grid", "pv", "bess", "load", "ev")


class Metrics:
    def __init__(self, daemon: Daemon, stream: Stream) -> None:
        self.daemon = daemon
        self.registry = CollectorRegistry(auto_describe=True)
        self.cycle_seconds = Histogram(
            "pedf_cycle_duration_seconds", "Wall time of one control cycle (poll, decide, "
            "write)", buckets=_BUCKETS, registry=self.registry)
        self.overruns = Counter(
            "pedf_cycle_overruns", "Cycles that took longer than their wall period",
            registry=self.registry)
        self._collector = _DaemonCollector(daemon, stream)
        self.registry.register(self._collector)

    def cycle_done(self, *_: object) -> None:
        """The cycle listener: this cycle's duration (the cycle just appended it)."""
        cycle = self.daemon.cycle
        durations = cycle.stats.durations_ms
        if durations:
            seconds = durations[-1] / 1000.0
            self.cycle_seconds.observe(seconds)
            if seconds > cycle.period_wall_s:
                self.overruns.inc()

    async def render(self) -> bytes:
        outbox = self.daemon.outbox
        self._collector.outbox = await asyncio.to_thread(_outbox_state, outbox)
        return generate_latest(self.registry)


def _outbox_state(outbox) -> tuple[int, float | None]:
    oldest = outbox.pending(1)
    age = max(0.0, time.time() - oldest[0].created_ts) if oldest else None
    return len(outbox), age


class _DaemonCollector(Collector):
    def __init__(self, daemon: Daemon, stream: Stream) -> None:
        self.d = daemon
        self.stream = stream
        self.outbox: tuple[int, float | None] = (0, None)
        devices = daemon.config.devices
        self._stores = daemon.config.devices_that("stores_energy")
        self._evs = [d for d in devices if role_of(d).balance_term(d) == "ev"]

    def describe(self) -> list[Metric]:
        return []  # families vary with the site (devices, planner): not checked at register

    def collect(self) -> Iterator[Metric]:
        yield from self._cycle()
        yield from self._devices()
        yield from self._link()
        yield from self._site()
        yield from self._planner()
        yield from self._commands()

    def _cycle(self) -> Iterator[Metric]:
        stats = self.d.cycle.stats
        yield CounterMetricFamily("pedf_cycles", "Control cycles run", value=stats.cycles)
        yield CounterMetricFamily("pedf_cycle_crashes", "Cycles whose decision failed (safe "
                                  "state applied)", value=stats.crashes)
        yield GaugeMetricFamily("pedf_cycle_period_seconds", "Wall period of the cycle",
                                value=self.d.cycle.period_wall_s)

    def _devices(self) -> Iterator[Metric]:
        errors = CounterMetricFamily("pedf_device_poll_errors", "Failed polls and writes per "
                                     "device", labels=["device", "role"])
        failing = GaugeMetricFamily("pedf_device_failed_polls", "Consecutive failed polls",
                                    labels=["device", "role"])
        quality = GaugeMetricFamily("pedf_device_quality", "1 for the device's quality in the "
                                    "last image", labels=["device", "role", "quality"])
        age = GaugeMetricFamily("pedf_device_age_seconds", "Simulated seconds since the "
                                "device's last good read", labels=["device", "role"])
        image = self.d.view.image
        speed = self.d.clock.speed
        for dev in self.d.config.devices:
            h = self.d.cycle.health[dev.id]
            labels = [dev.id, dev.role]
            errors.add_metric(labels, h.errors)
            failing.add_metric(labels, h.failed_polls)
            now_q = image.devices[dev.id].quality.value if image is not None else "invalid"
            for q in _QUALITIES:
                quality.add_metric([*labels, q], 1.0 if q == now_q else 0.0)
            if h.reading is not None:
                age.add_metric(labels, h.reading.age_s() * speed)
        yield from (errors, failing, quality, age)

    def _link(self) -> Iterator[Metric]:
        depth, oldest = self.outbox
        yield GaugeMetricFamily("pedf_outbox_depth", "Reports waiting in the outbox for the "
                                "broker", value=depth)
        old = GaugeMetricFamily("pedf_outbox_oldest_age_seconds", "Wall age of the oldest "
                                "waiting report (absent: none waits)")
        if oldest is not None:
            old.add_metric([], oldest)
        yield old
        link = self.d.link
        yield GaugeMetricFamily("pedf_mqtt_connected", "1 while the MQTT link is connected",
                                value=1.0 if link.connected else 0.0)
        yield CounterMetricFamily("pedf_mqtt_inbound_dropped", "Inbound messages dropped "
                                  "because the queue was full", value=link.inbound_dropped)
        yield GaugeMetricFamily("pedf_api_stream_clients", "Live stream clients",
                                value=self.stream.clients)
        yield CounterMetricFamily("pedf_api_stream_dropped", "States a slow stream client "
                                  "lost", value=self.stream.dropped)

    def _site(self) -> Iterator[Metric]:
        image = self.d.view.image
        power = GaugeMetricFamily("pedf_site_power_kw", "Site balance term of the last cycle "
                                  "(grid + import, bess + discharge)", labels=["term"])
        soc = GaugeMetricFamily("pedf_soc_percent", "Battery SoC of the last cycle",
                                labels=["device"])
        ev = GaugeMetricFamily("pedf_ev_kw", "EV charger power of the last cycle",
                               labels=["device"])
        if image is not None:
            p = site_power(self.d.config, image)
            for term in _TERMS:
                value = getattr(p, f"{term}_kw")
                if value is not None:
                    power.add_metric([term], value)
            for family, devs, key in ((soc, self._stores, "soc_pct"),
                                      (ev, self._evs, "power_kw")):
                for dev in devs:
                    if image.devices[dev.id].value_quality(key) is Quality.GOOD:
                        family.add_metric([dev.id], image.value(dev.id, key))
        yield from (power, soc, ev)

    def _planner(self) -> Iterator[Metric]:
        planner = self.d.planner
        if planner is None:
            return
        s = planner.stats
        yield CounterMetricFamily("pedf_plan_solves", "Plans adopted", value=s.solves)
        yield CounterMetricFamily("pedf_plan_fallbacks", "Planning rounds that fell back",
                                  value=s.failures)
        solve = GaugeMetricFamily("pedf_plan_solve_seconds", "Solve time of the last round")
        if s.last_solve_s == s.last_solve_s:  # not NaN
            solve.add_metric([], s.last_solve_s)
        yield solve
        age = GaugeMetricFamily("pedf_plan_age_seconds", "Simulated seconds since the last "
                                "planning round")
        if s.last_at is not None:
            age.add_metric([], (self.d.clock.now() - s.last_at).total_seconds())
        yield age
        yield GaugeMetricFamily("pedf_plan_in_force", "1 while a plan is in force",
                                value=1.0 if getattr(planner, "plan", None) else 0.0)
        restarts = getattr(planner, "restarts", None)
        if restarts is not None:
            yield CounterMetricFamily("pedf_planner_restarts", "Planner worker restarts",
                                      value=restarts)

    def _commands(self) -> Iterator[Metric]:
        handler = self.d.commands
        if handler is None:
            return
        fam = CounterMetricFamily("pedf_commands", "Platform and operator commands by "
                                  "answer", labels=["status"])
        for status in ("accepted", "rejected", "done", "repeated"):
            fam.add_metric([status], getattr(handler.stats, status))
        yield fam

"""One lightweight fleet site: the node's real MQTT link (failover included), outbox, command
handler (validation, judging, acks) and flex and telemetry builders, in front of simulated
physics instead of Modbus devices: a flat load, a battery that chases the grid target the
accepted commands put in the instruction book, and the PCC power that leaves.

What it leaves out is the control cycle (kernel, polling, ramps): a fleet run measures
the protocol side of a node, which is what a broker and an aggregator see of it."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from pathlib import Path

from drivers.base import Quality, Reading
from edge.app.clock import Clock
from edge.app.fanout import SiteView
from edge.config import Config, parse
from edge.control.instructions import InstructionBook
from edge.image.image import DeviceState, ProcessImage
from edge.report import telemetry
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox
from edge.vpp import flex
from edge.vpp.commands.handler import CommandHandler

HOURS_OF_STORAGE = 2.5  # battery kWh per kW of its rating
LOAD_SHARE = 0.5  # the flat load as a share of the battery's rating


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """`size_kw`: the battery's rating (the site's flex either way). `hosts`: its broker
    list, in the order it tries them. `opt_out`: the site refuses park dispatch (vpp.allow
    without it), as a site whose owner opted out does."""

    site_id: str
    size_kw: float
    hosts: tuple[str, ...]
    broker: str = "nats"
    groups: tuple[str, ...] = ()
    opt_out: bool = False
    soc_pct: float = 90.0


def site_config(spec: SiteSpec, state_dir: Path, telemetry_s: float, flex_s: float) -> Config:
    allow = ["mode", "cancel", "dr_event"] + ([] if spec.opt_out else ["dispatch"])
    dev = {"host": "127.0.0.1", "port": 502}
    return parse({
        "site": {"id": spec.site_id},
        "devices": [
            {"id": "pcc", "role": "meter", "measures": "grid", **dev, "unit_id": 1},
            {"id": "load", "role": "meter", "measures": "load", **dev, "unit_id": 2},
            {"id": "bess1", "role": "battery", **dev, "unit_id": 3,
             "capacity_kwh": round(spec.size_kw * HOURS_OF_STORAGE, 3),
             "max_charge_kw": spec.size_kw, "max_discharge_kw": spec.size_kw,
             "soc_min_pct": 10, "soc_max_pct": 95},
        ],
        "control": {"import_limit_kw": None, "export_limit_kw": None},
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00",
                                "price": 0.7}]},
        "mqtt": {"hosts": list(spec.hosts), "broker": spec.broker, "keepalive_s": 10,
                 "subscribe_qos": 0 if spec.broker == "nats" else 1,
                 "telemetry_s": telemetry_s, "client_id": f"fleet-{spec.site_id}"},
        "vpp": {"allow": allow, "groups": list(spec.groups), "flex_s": flex_s,
                "flex_horizon_h": 2},
        "storage": {"dir": str(state_dir / spec.site_id)},
    }, f"<fleet site {spec.site_id}>")


class FleetSite:
    def __init__(self, spec: SiteSpec, state_dir: Path, telemetry_s: float = 5.0,
                 flex_s: float = 60.0, step_s: float = 1.0) -> None:
        self.spec = spec
        self.config = site_config(spec, state_dir, telemetry_s, flex_s)
        self.bat = next(d for d in self.config.devices if d.id == "bess1")
        self.step_s = step_s
        self.clock = Clock()
        self.view = SiteView(InstructionBook())
        state_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(state_dir / f"{spec.site_id}.sqlite")
        # the daemon's reconnect backoff (1 s doubling to 30 s): a fleet that re-dialled
        # faster than the product would measure a storm no deployment makes
        self.link = MqttLink(self.config.mqtt, spec.site_id, self.outbox)
        self.handler = CommandHandler(self.config, self.clock, self.view, self.outbox,
                                      self.link)
        self.load_kw = spec.size_kw * LOAD_SHARE
        self.soc = spec.soc_pct
        self.bess_kw = 0.0
        self.import_kwh = self.export_kwh = 0.0
        self._tasks: list[asyncio.Task] = []
        self._final: dict | None = None
        self._step()

    @property
    def grid_kw(self) -> float:
        return self.load_kw - self.bess_kw

    def _step(self, dt: float = 0.0) -> None:
        """Advance the physics by `dt` s: the battery chases the book's grid target within
        its rating and SoC window (an idle battery without one), then the image is new."""
        now = self.clock.now()
        self.view.book.prune(now)
        target = self.view.book.combine(now).target_for(self.load_kw)
        want = 0.0 if math.isnan(target) else self.load_kw - target
        b = self.bat
        if self.soc <= b.soc_min_pct:
            want = min(want, 0.0)
        if self.soc >= b.soc_max_pct:
            want = max(want, 0.0)
        self.bess_kw = min(max(want, -b.max_charge_kw), b.max_discharge_kw)
        h = dt / 3600
        eff = 1 / b.discharge_efficiency if self.bess_kw > 0 else b.charge_efficiency
        self.soc -= self.bess_kw * h * eff / b.capacity_kwh * 100
        grid = self.grid_kw
        self.import_kwh += max(grid, 0.0) * h
        self.export_kwh += max(-grid, 0.0) * h

        def good(dev: str, **values: float) -> DeviceState:
            return DeviceState(Reading(dev, values), Quality.GOOD, 0)

        self.view.image = ProcessImage(now, dt, {
            "pcc": good("pcc", power_kw=grid, import_kwh=self.import_kwh,
                        export_kwh=self.export_kwh),
            "load": good("load", power_kw=self.load_kw),
            "bess1": good("bess1", power_kw=self.bess_kw, soc_pct=self.soc),
        })

    async def start(self) -> None:
        self.handler.subscribe()
        await self.link.start()
        self._tasks = [asyncio.create_task(self.handler.run()),
                       asyncio.create_task(self._physics()),
                       asyncio.create_task(self._every(self.config.mqtt.telemetry_s,
                                                       self.publish_telemetry)),
                       asyncio.create_task(self._every(self.config.vpp.flex_s,
                                                       self.publish_flex))]

    async def _physics(self) -> None:
        while True:
            await asyncio.sleep(self.step_s)
            self._step(self.step_s)

    async def _every(self, period_s: float, fn) -> None:
        await asyncio.sleep(random.uniform(0, min(period_s, 2.0)))  # spread the fleet
        while True:
            fn()
            await asyncio.sleep(period_s)

    def publish_telemetry(self) -> None:
        self.outbox.enqueue(self.link.topic("telemetry"),
                            telemetry.build(self.config, self.view.image, None))

    def publish_flex(self) -> None:
        payload = flex.build(self.config, self.view.image, self.clock.now())
        self.outbox.enqueue(self.link.topic("flex"), payload)
        self.handler.declare(payload)

    async def stop(self, flush_s: float = 0.0) -> None:
        for t in self._tasks[1:]:
            t.cancel()
        if flush_s > 0:
            try:
                await self.link.flush(flush_s)
            except TimeoutError:
                pass
        self._tasks[0].cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.link.stop()
        self._final = self.status()
        self.outbox.close()

    def status(self) -> dict:
        if self._final is not None:
            return self._final  # stopped: the outbox is closed
        return {
            "site": self.spec.site_id, "broker": "%s:%d" % self.link.broker,
            "connected": self.link.connected, "failovers": self.link.failovers,
            "last_id": self.outbox.last_id, "outbox": len(self.outbox),
            "load_kw": round(self.load_kw, 3), "bess_kw": round(self.bess_kw, 3),
            "grid_kw": round(self.grid_kw, 3), "soc_pct": round(self.soc, 3),
            "sent": self.link.sent, "acked": self.link.acked,
        }


def draw_sizes(n: int, capacity_kw: float, seed: int = 1) -> list[float]:
    """`n` battery ratings (log-normal: many small sites, a few large) scaled so they sum to
    `capacity_kw` exactly (to the watt)."""
    rng = random.Random(seed)
    raw = [rng.lognormvariate(0.0, 0.6) for _ in range(n)]
    scale = capacity_kw / sum(raw)
    sizes = [round(r * scale, 3) for r in raw]
    sizes[-1] = round(capacity_kw - sum(sizes[:-1]), 3)
    return sizes

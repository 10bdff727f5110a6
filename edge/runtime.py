"""The supervisor: owns every task of the daemon, starts them in order and stops them in
reverse, leaving devices in their safe state and the platform told we are offline."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from drivers.base import DeviceError
from drivers.registry import build_devices
from edge import dispatch, telemetry
from edge.clock import Clock
from edge.config import Config
from edge.cycle import ControlCycle
from edge.notify import Notifier
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox

log = logging.getLogger(__name__)


def state_dir(config: Config, environ: dict[str, str] | None = None) -> Path:
    """storage.dir; a relative one lives under systemd's $STATE_DIRECTORY when set."""
    env = os.environ if environ is None else environ
    d = config.storage.dir
    if not d.is_absolute() and env.get("STATE_DIRECTORY"):
        d = Path(env["STATE_DIRECTORY"].split(":")[0]) / d
    return d


class Daemon:
    def __init__(self, config: Config, clock: Clock | None = None,
                 notifier: Notifier | None = None, mqtt_host: str | None = None,
                 mqtt_port: int | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.notifier = notifier or Notifier()
        self.kernel = dispatch.load_kernel()  # refuse to start without the compiled kernel
        mqtt = config.mqtt.model_copy(update={
            k: v for k, v in (("host", mqtt_host), ("port", mqtt_port)) if v is not None
        })
        directory = state_dir(config)
        directory.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(directory / "outbox.sqlite")
        self.link = MqttLink(mqtt, config.site.id, self.outbox)
        self.devices = build_devices(config)
        self.cycle = ControlCycle(config, self.devices, self.kernel, self.clock)
        self.scheduler: AsyncIOScheduler | None = None
        self.ready = asyncio.Event()
        self.undelivered = 0  # outbox rows left at shutdown; they go out on the next start

    async def _connect_devices(self) -> None:
        async def one(dev_id: str) -> None:
            try:
                await asyncio.wait_for(self.devices[dev_id].connect(), 5.0)
            except (TimeoutError, DeviceError, OSError) as exc:
                log.warning("device %s not reachable at start (%s); will keep trying", dev_id, exc)
        await asyncio.gather(*(one(d) for d in self.devices))

    async def publish_telemetry(self) -> None:
        image = self.cycle.image
        if image is None:
            return
        payload = telemetry.build(self.config, image, self.cycle.decision)
        self.outbox.enqueue(self.link.topic("telemetry"), payload)

    async def publish_devices(self) -> None:
        payload = telemetry.device_health(self.config, self.cycle, self.clock.now(), self.clock.speed)
        self.outbox.enqueue(self.link.topic("devices"), payload)

    async def housekeeping(self) -> None:
        d = self.cycle.stats.durations_ms
        log.info(
            "cycles=%d crashes=%d last_ms=%.1f outbox=%d mqtt=%s",
            self.cycle.stats.cycles, self.cycle.stats.crashes, d[-1] if d else 0.0,
            len(self.outbox), "up" if self.link.connected else "down",
        )

    async def run(self, stop: asyncio.Event) -> None:
        site = self.config.site.id
        log.info("site %s: starting with %d devices", site, len(self.devices))
        short = self.cycle.check_revert_timers()
        if short:
            log.warning("revert_s of %s is shorter than the cycle can re-write at this speed; "
                        "those devices will revert between cycles", ", ".join(short))
        await self.link.start()
        cycle_task: asyncio.Task | None = None
        try:
            await self._connect_devices()
            await self.cycle.step()
            self.scheduler = AsyncIOScheduler()
            every = max(self.clock.wall_s(self.config.mqtt.telemetry_s), 0.05)
            self.scheduler.add_job(self.publish_telemetry, "interval", seconds=every,
                                   id="telemetry", max_instances=1, coalesce=True)
            self.scheduler.add_job(self.publish_devices, "interval",
                                   seconds=max(self.clock.wall_s(self.config.mqtt.devices_s), 0.05),
                                   id="devices", max_instances=1, coalesce=True,
                                   next_run_time=datetime.now())
            self.scheduler.add_job(self.housekeeping, "interval", seconds=60,
                                   id="housekeeping", max_instances=1, coalesce=True)
            self.scheduler.start()
            cycle_task = asyncio.create_task(
                self.cycle.run(stop, on_cycle=self.notifier.watchdog), name="control-cycle"
            )
            self.notifier.ready(f"controlling {len(self.devices)} devices")
            self.ready.set()
            log.info("site %s: ready, cycle every %.3f s (wall)", site, self.cycle.period_wall_s)
            await stop.wait()
        finally:
            await self._shutdown(cycle_task)

    async def _shutdown(self, cycle_task: asyncio.Task | None) -> None:
        """Reverse order of start; each step runs even if an earlier one failed."""
        self.notifier.stopping()
        log.info("site %s: stopping", self.config.site.id)
        steps = [
            ("scheduler", self._stop_scheduler),
            ("control cycle", lambda: self._cancel(cycle_task)),
            ("safe state", self.cycle.apply_safe_state),
            ("mqtt", self.link.stop),
            ("devices", self._close_devices),
        ]
        for name, step in steps:
            try:
                await step()
            except Exception:  # noqa: BLE001 - keep shutting down
                log.exception("shutdown step %s failed", name)
        self.undelivered = len(self.outbox)
        self.outbox.close()
        self.notifier.close()

    async def _stop_scheduler(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    @staticmethod
    async def _cancel(task: asyncio.Task | None) -> None:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _close_devices(self) -> None:
        for dev in self.devices.values():
            await dev.close()

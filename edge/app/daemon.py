"""The supervisor: owns every task of the daemon, starts them in order and stops them in
reverse, leaving devices in their safe state and the platform told we are offline."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from drivers.base import DeviceError
from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.app.fanout import SiteView
from edge.app.notify import Notifier
from edge.app.statedir import state_dir
from edge.config import Config
from edge.control import kernel as dispatch
from edge.control.decide import Decision
from edge.control.instructions import InstructionBook
from edge.cycle import ControlCycle
from edge.image.balance import pv_held_back, site_power
from edge.image.image import ProcessImage
from edge.plan.remote import PlannerWorker
from edge.report import carbon, telemetry
from edge.report.history import Accumulator, History
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox
from edge.report.zonelog import ZoneLog, ZoneRecorder
from edge.vpp import flex
from edge.vpp.cmdstore import CommandStore
from edge.vpp.commands.handler import CommandHandler
from edge.vpp.commands.judge import SEEN_MAX
from edge.vpp.dr.manager import DrManager

log = logging.getLogger(__name__)


class Daemon:
    """`in_process_planner`: the forecaster and the planner in this process, as objects the
    offline tools (demo, simulate) inspect and feed with their own forecasts. Otherwise the
    planner runs in a worker process this daemon starts and restarts (edge/plan/remote.py):
    the control process then never loads pvlib, pandas, scipy or HiGHS, and never waits on
    a forecast or a solve."""

    def __init__(self, config: Config, clock: Clock | None = None,
                 notifier: Notifier | None = None, mqtt_host: str | None = None,
                 mqtt_port: int | None = None, in_process_planner: bool = False) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.notifier = notifier or Notifier()
        self.kernel = dispatch.load_kernel()  # refuse to start without the compiled kernel
        mqtt = config.mqtt.model_copy(update={
            k: v for k, v in (("host", mqtt_host), ("port", mqtt_port)) if v is not None
        })
        if mqtt_host is not None or mqtt_port is not None:
            mqtt = mqtt.model_copy(update={"hosts": []})  # one broker given: that one only
        directory = state_dir(config)
        directory.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(directory / "outbox.sqlite")
        self.link = MqttLink(mqtt, config.site.id, self.outbox)
        self.devices = build_devices(config, self.clock.now)
        self.book = InstructionBook()  # fed by DR, park dispatch and the planner
        self.cycle = ControlCycle(config, self.devices, self.kernel, self.clock, self.book)
        # Services read the last cycle's image and decision from the view, never the cycle.
        self.view = SiteView(self.book, self.cycle.wake)
        self.cycle.subscribe(self.view.publish)
        self.history = History(directory / "history.sqlite")
        max_dt_s = max(60.0, 10 * config.control.cycle_s)
        self.meter = Accumulator(self.history.counters(), max_dt_s=max_dt_s,
                                 co2_kg_per_import_kwh=config.carbon.import_factor)
        # Each HVAC zone's own history: what its model is fitted on (edge/plan/learn.py).
        self.zonelog = ZoneLog(self.history.db)
        self.zones = ZoneRecorder([d.id for d in config.devices if d.role == "hvac"], max_dt_s)
        # DR events: baselines from the history, instructions in the book, M&V reports.
        self.dr = DrManager(config, self.book, self.history, self.meter,
                            directory / "dr.sqlite", self.clock.now())
        self.commands = None
        if config.vpp.commands:
            store = CommandStore(directory / "commands.sqlite", SEEN_MAX)
            self.commands = CommandHandler(config, self.clock, self.view, self.outbox, self.link,
                                           wake=self.view.wake, dr=self.dr, store=store)
            self.commands.restore()
        self._commands_task: asyncio.Task | None = None
        self.ven = None  # OpenADR 2.0b VEN, only with openadr.vtn_url; its events run on self.dr
        if config.openadr.vtn_url:
            from edge.vpp.openadr.ven import Ven  # openleadr takes ~0.5 s to import: only when used

            self.ven = Ven(config, self.view, self.clock, directory, self.dr)
            self.ven.restore()
        self.green_share_today: float | None = None
        self._pvs = config.devices_that("generates")
        self._pv_limits: dict[str, float] = {}  # in force when the next image is read
        self.forecaster = None  # in-process only; the worker has its own
        self.planner = None  # last plan and solve stats: planner.last, planner.stats
        if in_process_planner:
            from edge.forecast import Forecaster  # pvlib + pandas: only in this mode

            self.forecaster = Forecaster(config, self.history)
            if config.planner.enabled:
                from edge.plan.planner import Planner  # HiGHS + scipy.sparse

                self.planner = Planner(config, self.view, self.clock, self.forecaster,
                                       self.history)
        elif config.planner.enabled:
            self.planner = PlannerWorker(config, self.view, self.clock,
                                         directory / "history.sqlite")
        self.api = None  # the operator's HTTP API (edge/api), only with api.enabled
        if config.api.enabled:
            from edge.api.server import Api  # starlette, uvicorn: only when used

            self.api = Api(self)
        self.scheduler: AsyncIOScheduler | None = None
        self.ready = asyncio.Event()
        self.undelivered = 0  # outbox rows left at shutdown; they go out on the next start

    async def _connect_devices(self) -> None:
        async def one(dev_id: str) -> None:
            try:
                await asyncio.wait_for(self.devices[dev_id].connect(), 5.0)
            except (TimeoutError, DeviceError, OSError) as exc:
                self.cycle.poller.failed(dev_id, f"not reachable at start ({exc or 'timed out'})")
        await asyncio.gather(*(one(d) for d in self.devices))

    async def publish_telemetry(self) -> None:
        image = self.view.image
        if image is None:
            return
        payload = telemetry.build(self.config, image, self.view.decision)
        self.history.save_counters(self.meter.counters)  # before anyone sees them
        payload["counters"] = {k: round(v, 4) for k, v in self.meter.counters.items()
                               if k != "co2_kg"}
        payload["co2_kg"] = round(self.meter.counters["co2_kg"], 4)
        payload["green_share"] = self.green_share_today
        self.outbox.enqueue(self.link.topic("telemetry"), payload)

    def _after_cycle(self, image: ProcessImage, decision: Decision) -> None:
        """Runs after every cycle: watchdog, then integrate the image into the history.
        The history never takes the cycle down: a full disk is logged, control goes on."""
        self.notifier.watchdog()
        try:
            power = site_power(self.config, image)
            learner = self.forecaster or self.planner
            if learner is not None:
                learner.observe(image.ts, power, self._pv_curtailed(), image.dt_s)
            self._pv_limits = dict(decision.pv_limit_kw)
            if rows := self.zones.add(image):
                self.zonelog.put(rows)
            closed = self.meter.add(image.ts, image.dt_s, power)
            if closed is not None:
                self.history.put(closed, self.meter.counters, merge=True)
                if self.forecaster is not None:
                    self.forecaster.errors.metered(closed)
                elif self.planner is not None:
                    self.planner.metered(closed)
                tz = ZoneInfo(self.config.site.timezone)
                msg = carbon.report(self.history, self.config.carbon, closed, tz, image.ts)
                self.green_share_today = msg["day"]["green_share"]
                self.outbox.enqueue(self.link.topic("carbon"), msg)
        except Exception:  # noqa: BLE001
            log.exception("recording the site history failed; control continues")

    async def publish_flex(self) -> None:
        image = self.view.image
        if image is None:
            return
        plan = getattr(getattr(self, "planner", None), "plan", None)
        decision = self.view.decision
        payload = flex.build(self.config, image, self.clock.now(), plan,
                             decision.demands if decision is not None else ())
        self.outbox.enqueue(self.link.topic("flex"), payload)
        if self.commands is not None:
            self.commands.declare(payload)

    def publish_plan(self, report: dict) -> None:
        """An adopted plan's report (edge/plan/message.py); a failure costs the report only."""
        try:
            self.outbox.enqueue(self.link.topic("plan"), report)
        except Exception:  # noqa: BLE001
            log.exception("the plan report could not be queued")

    async def dr_tick(self) -> None:
        """DR events: late baselines, expired instructions, and the `dr/<event_id>`
        reports that are due (every dr.report_s, at phase changes, the final one)."""
        for msg in self.dr.tick(self.clock.now(), self.view.image):
            level = topic_level(msg["event_id"], nats=self.config.mqtt.broker == "nats")
            self.outbox.enqueue(self.link.topic(f"dr/{level}"), msg)

    async def publish_devices(self) -> None:
        payload = telemetry.device_health(
            self.config, self.view.image, self.cycle.health, self.devices, self.clock.now(),
            self.clock.speed)
        self.outbox.enqueue(self.link.topic("devices"), payload)

    def _save_open_interval(self) -> None:
        """The quarter hour in progress goes to disk on the way down; the next start adds
        the rest of it (History.put merge), so a restart costs no measured energy."""
        try:
            part = self.meter.current()
            if part is not None:
                self.history.put(part, self.meter.counters, merge=True)
        except Exception:  # noqa: BLE001 - keep shutting down
            log.exception("saving the open history interval failed")

    def _pv_curtailed(self) -> bool:
        image = self.view.image
        return image is not None and pv_held_back(self._pvs, self._pv_limits, image)

    async def housekeeping(self) -> None:
        d = self.cycle.stats.durations_ms
        log.info(
            "cycles=%d crashes=%d last_ms=%.1f outbox=%d mqtt=%s",
            self.cycle.stats.cycles, self.cycle.stats.crashes, d[-1] if d else 0.0,
            len(self.outbox), "up" if self.link.connected else "down",
        )
        # DR baselines look further back than forecasts: keep what either needs.
        keep = timedelta(days=max(self.config.forecast.history_days,
                                  self.config.dr.lookback_days + 2))
        now = self.clock.now()
        self.history.prune(now - keep)
        self.zonelog.prune(now - keep)
        self.dr.prune(now)
        if self.ven is not None:
            self.ven.store.prune(now - keep)

    async def run(self, stop: asyncio.Event) -> None:
        site = self.config.site.id
        log.info("site %s: starting with %d devices", site, len(self.devices))
        short = self.cycle.check_revert_timers()
        if short:
            log.warning("revert_s of %s is shorter than the cycle can re-write at this speed; "
                        "those devices will revert between cycles", ", ".join(short))
        if isinstance(self.planner, PlannerWorker):
            self.planner.start()
        if self.commands is not None:
            self.commands.subscribe()
        await self.link.start()
        cycle_task: asyncio.Task | None = None
        try:
            await self._connect_devices()
            await self.cycle.step()
            # The history integrates from the second image on: the first has no real dt.
            self.cycle.subscribe(self._after_cycle)
            if self.ven is not None:
                await self.ven.start()  # opt decisions need the first image
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
            self.scheduler.add_job(self.publish_flex, "interval",
                                   seconds=max(self.clock.wall_s(self.config.vpp.flex_s), 0.05),
                                   id="flex", max_instances=1, coalesce=True,
                                   next_run_time=datetime.now())
            self.scheduler.add_job(
                self.dr_tick, "interval", id="dr", max_instances=1, coalesce=True,
                seconds=max(self.clock.wall_s(min(10.0, self.config.dr.report_s)), 0.05))
            if self.planner is not None:
                self.planner.on_adopt = self.publish_plan  # each adopted plan, once
                self.planner.attach(self.scheduler)  # re-plans on schedule and on request
            self.scheduler.start()
            if self.commands is not None:  # commands are judged against the first image
                self._commands_task = asyncio.create_task(self.commands.run(), name="commands")
                self._commands_task.add_done_callback(_log_if_failed)
            if self.api is not None:
                await self.api.start()
            cycle_task = asyncio.create_task(
                self.cycle.run(stop), name="control-cycle"
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
            ("operator api", self._stop_api),
            ("commands", lambda: self._cancel(self._commands_task)),
            ("openadr", self._stop_ven),
            ("scheduler", self._stop_scheduler),
            ("planner worker", self._stop_worker),
            ("control cycle", lambda: self._cancel(cycle_task)),
            ("safe state", lambda: self.cycle.apply_safe_state(final=True)),
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
        self._save_open_interval()
        self.history.close()
        self.dr.close()
        if self.commands is not None and self.commands.store is not None:
            self.commands.store.close()
        self.notifier.close()

    async def _stop_worker(self) -> None:
        if isinstance(self.planner, PlannerWorker):
            await self.planner.stop()

    async def _stop_api(self) -> None:
        if self.api is not None:
            await self.api.stop()

    async def _stop_ven(self) -> None:
        if self.ven is not None:
            await self.ven.stop()

    async def _stop_scheduler(self) -> None:
        """Jobs still running (a planning round) are cancelled: that is the stop, not an
        error, so APScheduler's traceback for it is left out of the log."""
        if self.scheduler is not None and self.scheduler.running:
            logging.getLogger("apscheduler.executors.default").addFilter(_not_cancelled)
            self.scheduler.shutdown(wait=False)

    @staticmethod
    async def _cancel(task: asyncio.Task | None) -> None:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _close_devices(self) -> None:
        for dev in self.devices.values():
            await dev.close()


def _log_if_failed(task: asyncio.Task) -> None:
    """A background task that ends other than by cancellation is a bug: say so loudly
    (nothing awaits it until shutdown, so its error would otherwise surface only then)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s ended with an error", task.get_name(), exc_info=task.exception())


def _not_cancelled(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, asyncio.CancelledError)


def topic_level(name: str, nats: bool = False) -> str:
    """One MQTT topic level from an id we did not choose (an OpenADR VTN's event id): no
    level separators, wildcards or NUL (nor NATS's '.', '*', '>'); the payload keeps the
    id as it was."""
    bad = "/+#\0" + (".*>" if nats else "")
    return "".join("_" if c in bad or c.isspace() else c for c in name) or "_"

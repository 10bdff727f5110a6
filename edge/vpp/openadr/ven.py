"""The VEN of one site (openleadr's client): registration and polling, each event from the
VTN to an opt decision and DR execution, TELEMETRY_USAGE reports."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from openleadr import OpenADRClient, enums, objects

from drivers.quietlog import Episode
from edge.app.clock import Clock
from edge.app.fanout import SiteView
from edge.config import Config
from edge.vpp.dr.manager import DrManager
from edge.vpp.eventstore import ENDED, OPT_IN, OPT_OUT, EventStore, StoredEvent
from edge.vpp.openadr.mapping import (
    ID_PREFIX,
    Flexibility,
    active_window,
    decide,
    dr_event_id,
    dr_events,
    flexibility,
    needed_kw,
    normalise,
    signals,
    to_clock,
    wall_now,
)
from edge.vpp.shaping import DrRejected

# openleadr sets its logger to INFO when imported and logs every report sample at INFO;
# the daemon's own lines say what matters (registration, events, opt decisions).
logging.getLogger("openleadr").setLevel(logging.WARNING)

log = logging.getLogger(__name__)

REFUSED_LOG_S = 60.0  # one log line at most this often about opted-out or broken events


class _Client(OpenADRClient):
    """openleadr's client, polling at our configured interval whatever the VTN suggests."""

    def __init__(self, *args: Any, poll_interval_s: float, has_sample: Callable[[], bool],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._poll_interval = timedelta(seconds=poll_interval_s)
        self._has_sample = has_sample

    async def create_party_registration(self, *args: Any, **kwargs: Any):
        result = await super().create_party_registration(*args, **kwargs)
        if self.registration_id:
            if self.poll_frequency != self._poll_interval:
                log.info("VTN asks for polls every %s; polling every %s as configured",
                         self.poll_frequency, self._poll_interval)
            self.poll_frequency = self._poll_interval
        return result

    async def update_report(self, report_request_id: str) -> None:
        """Skip a sample while the PCC meter is not readable: openleadr would send a report
        without intervals, which its VTN rejects, and a stale value must not pass as one."""
        if self._has_sample():
            await super().update_report(report_request_id)
            self.reports_sent += 1

    reports_sent = 0  # TELEMETRY_USAGE reports delivered by this client


class Ven:
    """The VEN of one site, owned by the daemon: `restore()` before the first cycle,
    `start()` once devices are read, `stop()` on the way down."""

    def __init__(self, config: Config, view: SiteView, clock: Clock, directory: Path,
                 dr: DrManager) -> None:
        if config.openadr.vtn_url is None:
            raise ValueError("openadr.vtn_url is not set")
        self.config = config
        self.cfg = config.openadr
        self.view = view
        self.clock = clock
        self.dr = dr
        self.store = EventStore(Path(directory) / "openadr.sqlite")
        self.ven_name = self.cfg.ven_name or config.site.id
        self.client: _Client | None = None
        self.registered = asyncio.Event()
        self.received_at: dict[str, float] = {}  # event id -> time.monotonic() of arrival
        self._task: asyncio.Task[None] | None = None
        self.refused = Episode(
            log, "%(reason)s", "%(more)d more OpenADR events opted out or refused in the last "
            "%(gap)s (%(count)d since the first); last: %(reason)s", every_s=REFUSED_LOG_S)

    # -- DR execution ----------------------------------------------------------------------
    def _take(self, ev: StoredEvent) -> tuple[int, str, set[str]]:
        """Hand an opted-in event to DR execution (new, or an update of what it took before);
        returns (instructions in the book, a note on the baseline, the DR event ids). Raises
        DrRejected, having cancelled what it took, if DR execution refuses any part."""
        now = self.clock.now()
        taken: list[str] = []
        put, note = 0, ""
        try:
            for dev in dr_events(ev.id, ev.requests, self.clock):
                try:
                    put += len(self.dr.add(dev, now))
                except DrRejected as exc:
                    # a new site has no history for dr.baseline yet: use the measured one
                    if "no baseline" not in str(exc) or math.isnan(ev.baseline_kw):
                        raise
                    put += len(self.dr.add(replace(dev, baseline_kw=ev.baseline_kw), now))
                    log.warning("OpenADR event %s: %s; the %.1f kW measured at receipt stands "
                                "in as a flat baseline", ev.id, exc, ev.baseline_kw)
                    note = f"; flat baseline {ev.baseline_kw:.1f} kW (measured; dr.baseline had none)"
                taken.append(dev.id)
        except DrRejected:
            self._cancel(set(taken))
            raise
        return put, note, set(taken)

    def _taken(self, ev: StoredEvent | None) -> set[str]:
        """The DR event ids an opted-in stored event was handed to DR execution as."""
        if ev is None or ev.opt != OPT_IN:
            return set()
        return {dr_event_id(ev.id, r) for r in ev.requests
                if not (math.isnan(r.target_kw) and r.kw <= 0)}

    def _cancel(self, ids: set[str]) -> bool:
        """End these DR events now (one in force restores in steps); True if any was."""
        now = self.clock.now()
        return any([self.dr.cancel(did, now) for did in sorted(ids)])

    def restore(self) -> int:
        """After a restart: events that ended meanwhile are completed; the live ones are
        already back in the book (DR execution resumes its own). Returns how many are live."""
        now = wall_now()
        self._expire(now)
        live = self.store.live(now)
        for ev in live:
            log.info("OpenADR event %s: %s until %s (resumed from %s)", ev.id,
                     "active" if ev.start <= now else f"starts {ev.start.isoformat()},",
                     ev.end.isoformat(), self.store.path)
        return len(live)

    def _expire(self, now: datetime) -> None:
        """Events past their end are completed (their instructions run out by themselves)."""
        for ev in self.store.open():
            if ev.end <= now:
                self.store.set_status(ev.id, "completed", now)
                self.received_at.pop(ev.id, None)
                log.info("OpenADR event %s completed", ev.id)

    # -- what the site can do --------------------------------------------------------------
    def grid_kw(self) -> float:
        """The PCC meter's measured power now (kW, + import); NaN while it is not readable."""
        image, pcc = self.view.image, self.config.grid_meter.id
        if image is None or not image.good(pcc):
            return math.nan
        return image.value(pcc, "power_kw")

    def _committed(self, event_id: str, start: datetime, end: datetime) -> dict[str, float]:
        """kW already promised over an overlapping window: our other opted-in events, and
        grid-operator or park instructions from elsewhere (MQTT) in the book."""
        out = {"reduce": 0.0, "increase": 0.0}
        now = wall_now()
        for ev in self.store.live(now):
            if ev.id == event_id or ev.end <= start or ev.start >= end:
                continue
            for direction in out:
                out[direction] += max((needed_kw(r, ev.baseline_kw) for r in ev.requests
                                       if r.direction == direction), default=0.0)
        base = self.grid_kw()
        if math.isnan(base):
            return out
        c_start, c_end = to_clock(self.clock, start), to_clock(self.clock, end)
        claims: dict[str, dict[str, float]] = {}  # per event: its deepest step (ramp/hold/restore)
        for i in self.view.book.all():
            if i.id.startswith(ID_PREFIX) or i.source == "plan":
                continue
            if i.end <= c_start or i.start >= c_end:
                continue
            c = claims.setdefault(i.id.split("#")[0], {"reduce": 0.0, "increase": 0.0})
            if math.isfinite(i.grid_max_kw):
                c["reduce"] = max(c["reduce"], base - i.grid_max_kw)
            if math.isfinite(i.grid_min_kw):
                c["increase"] = max(c["increase"], i.grid_min_kw - base)
        for c in claims.values():
            for direction in out:
                out[direction] += c[direction]
        return out

    def _delivering(self, ev: StoredEvent | None, now: datetime) -> dict[str, float]:
        """What an opted-in event is delivering right now: the measured flexibility is net of
        it, so an update of that event gets it back."""
        out = {"reduce": 0.0, "increase": 0.0}
        if ev is None or not ev.live(now):
            return out
        for r in ev.requests:
            if r.start <= now < r.end:
                out[r.direction] = max(out[r.direction], needed_kw(r, ev.baseline_kw))
        return out

    # -- openleadr handlers ----------------------------------------------------------------
    async def on_event(self, event: dict[str, Any]) -> str:
        """New or updated event from the VTN; returns the opt. Never raises (openleadr
        would opt out on an exception without saying why)."""
        try:
            return self._on_event(event)
        except Exception as exc:  # noqa: BLE001
            log.debug("OpenADR event could not be handled", exc_info=True)
            self.refused.failed(f"OpenADR event could not be handled ({type(exc).__name__}: "
                                f"{exc}); opting out - ask the VTN operator to check the event")
            return OPT_OUT

    def _on_event(self, event: dict[str, Any]) -> str:
        now = wall_now()
        desc = event["event_descriptor"]
        eid, mod = str(desc["event_id"]), int(desc.get("modification_number") or 0)
        status = str(desc.get("event_status") or "far")
        self.received_at.setdefault(eid, time.monotonic())
        known = self.store.get(eid)
        if status in ENDED:
            if known is not None and known.status not in ENDED:
                if status == "cancelled" and self._cancel(self._taken(known)):
                    self.view.wake()  # start releasing the site now, not at the next period
                self.store.set_status(eid, status, now)
                log.info("OpenADR event %s %s by the VTN", eid, status)
            return known.opt if known is not None else OPT_IN
        if known is not None and known.modification == mod:
            return known.opt  # sent again (after our restart, or a repeated distribute)
        start, end = active_window(event)
        baseline = known.baseline_kw if known is not None else self.grid_kw()
        requests, ignored = normalise(event, self.cfg.simple_levels_kw, baseline, now)
        if ignored:
            log.warning("OpenADR event %s: signals not acted on: %s", eid, ", ".join(ignored))
        image = self.view.image
        if image is None:
            flex = Flexibility(0.0, 0.0, "no process image yet")
        else:
            decision = self.view.decision
            flex = flexibility(self.config, image, (end - start).total_seconds() / 3600,
                               decision.demands if decision is not None else ())
        credit = self._delivering(known, now)
        flex = Flexibility(flex.reduce_kw + credit["reduce"], flex.increase_kw + credit["increase"],
                           flex.detail)
        opt, reason = decide(requests, ignored, baseline, flex, self._committed(eid, start, end),
                             self.config.control, self.config.dr.min_response_ratio)
        ev = StoredEvent(eid, mod, status, opt, reason, start, end, baseline, tuple(requests),
                         signals(event), known.received if known else now)
        n, taken = 0, set()
        if opt == OPT_IN:
            try:
                n, note, taken = self._take(ev)
                reason += note
            except DrRejected as exc:
                opt, reason = OPT_OUT, f"DR execution refused it: {exc}"
            ev = replace(ev, opt=opt, reason=reason)
        released = self._cancel(self._taken(known) - taken)  # what an update no longer asks
        self.store.put(ev, now)
        if (n or released) and start <= now < end:
            self.view.wake()  # in force already: act within one cycle time, not one period
        if opt == OPT_IN:
            log.info("OpenADR event %s (mod %d) %s - %s: optIn, %d instruction(s): %s", eid, mod,
                     start.isoformat(), end.isoformat(), n, reason)
        else:
            self.refused.failed(f"OpenADR event {eid} (mod {mod}) {start.isoformat()} - "
                                f"{end.isoformat()}: optOut: {reason} (the VTN was told)")
        return opt

    def report_sample(self) -> list[tuple[datetime, float]]:
        """TELEMETRY_USAGE sample: the PCC meter's measured power (kW, + import); nothing
        while it is not readable (a stale value must not look like a measurement)."""
        kw = self.grid_kw()
        return [] if math.isnan(kw) else [(wall_now(), round(kw, 3))]

    # -- lifecycle -------------------------------------------------------------------------
    def _new_client(self) -> _Client:
        cfg = self.cfg
        client = _Client(
            ven_name=self.ven_name, vtn_url=cfg.vtn_url, ven_id=cfg.ven_id,
            cert=str(cfg.cert_file) if cfg.cert_file else None,
            key=str(cfg.key_file) if cfg.key_file else None, passphrase=cfg.key_passphrase,
            ca_file=str(cfg.ca_file) if cfg.ca_file else None,
            vtn_fingerprint=cfg.vtn_fingerprint, show_fingerprint=False,
            disable_signature=cfg.cert_file is None, poll_interval_s=cfg.poll_interval_s,
            has_sample=lambda: not math.isnan(self.grid_kw()),
        )
        client.add_handler("on_event", self.on_event)
        client.add_handler("on_update_event", self.on_event)
        site = self.config.site.id
        client.add_report(
            callback=self.report_sample, resource_id=site,
            measurement=objects.Measurement(
                name="powerReal", description="RealPower", unit="W", scale="k",
                power_attributes=objects.PowerAttributes(hertz=50, voltage=230, ac=True)),
            scale="k", report_specifier_id=f"{self.ven_name}-telemetry-usage",
            r_id=f"{site}-grid-kw", report_name=enums.REPORT_NAME.TELEMETRY_USAGE,
            reading_type=enums.READING_TYPE.DIRECT_READ, report_type=enums.REPORT_TYPE.READING,
            report_duration=timedelta(seconds=self.cfg.report_interval_s),
            sampling_rate=timedelta(seconds=self.cfg.report_interval_s),
        )
        return client

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="openadr-ven")
        self._task.add_done_callback(_log_if_failed)

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            try:
                # Inside the try: the constructor opens the cert and key files, and a
                # rotated or missing certificate must mean "retry", not a dead VEN task.
                client = self.client = self._new_client()  # `stop` closes it whatever happens
                await client.run()
            except Exception as exc:  # noqa: BLE001 - the VTN, the network, the certs; retry
                log.warning("OpenADR: registration with %s failed: %s", self.cfg.vtn_url, exc)
                if self.client is None:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
                    continue
                client = self.client
            if client.registration_id is None:
                self.client = None
                await self._close(client)
                log.warning("OpenADR: not registered with %s; retrying in %.0f s",
                            self.cfg.vtn_url, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            self.registered.set()
            log.info("OpenADR: VEN %s registered with %s as %s, polling every %g s",
                     self.ven_name, self.cfg.vtn_url, client.ven_id, self.cfg.poll_interval_s)
            while client.registration_id is not None:  # the VTN may cancel the registration
                self._expire(wall_now())
                await asyncio.sleep(self.cfg.poll_interval_s)
            log.warning("OpenADR: registration cancelled by the VTN; registering again")
            self.registered.clear()
            self.client = None
            await self._close(client)

    @staticmethod
    async def _close(client: _Client) -> None:
        if client.client_session is None:
            return
        try:
            await client.stop()
        except Exception:  # noqa: BLE001 - on the way down
            log.exception("OpenADR: closing the client failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.client is not None:
            await self._close(self.client)
            self.client = None
        self.registered.clear()
        self.refused.flush()
        self.store.close()


def _log_if_failed(task: asyncio.Task) -> None:
    """A background task that ends other than by cancellation is a bug: say so loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s ended with an error; OpenADR is down until restart",
                  task.get_name(), exc_info=task.exception())

"""OpenADR 2.0b VEN (openleadr): registers with the grid operator's VTN, polls it, turns
events into grid-operator DR events, decides optIn/optOut from what the site can really
deliver, and reports the measured grid power (TELEMETRY_USAGE).

Flow of one event: openleadr hands the parsed event to `Ven.on_event` -> its signals are
normalised into protocol-free `DrRequest`s (one per signal interval) -> the site's
flexibility over the event window, less what overlapping commitments already claim, decides
the opt (`dr.min_response_ratio`) -> if opted in, the requests become `DrEvent`s (one per
signal and direction, its intervals as segments) handed to DR execution (edge/vpp/dr.py:
baseline, ramp-in / hold / staggered restore as instructions of source "grid_operator" in
the cycle's book, M&V, its own persistence) -> the event, its signals and the opt decision
are stored in SQLite (edge/vpp/eventstore.py). openleadr keeps events in memory only: after a
restart the stores let the daemon resume the event before it has talked to the VTN again,
and answer a re-sent event with the opt it gave before.

Signals (DOMAIN.md §5):
- SIMPLE level 1-3: shed `openadr.simple_levels_kw[level]` of grid import below the baseline
  (level 0: normal operation, nothing to do).
- LOAD_DISPATCH setpoint: follow that grid power (target, and a bound on the side it moves to);
  delta: change the grid power by that much relative to the baseline (negative = reduce).
- LOAD_CONTROL x-loadControlSetpoint: as a LOAD_DISPATCH setpoint; x-loadControlCapacity:
  import at most that fraction of the baseline; x-loadControlPercentOffset: change by that
  percentage of the baseline.
Power values are kW unless the signal's itemBase says otherwise (W, kW, MW via siScaleCode).
Other signals (prices, bids) are not acted on; an event with nothing actionable is opted out.

Baselines: DR execution uses the configured method (`dr.baseline`); when the history cannot
give one yet (a new site), the grid import measured when the event arrived stands in as a flat
baseline. That measurement is also what the opt decision and the relative LOAD_CONTROL
signals are based on, stored with the event so an update keeps the same reference.

Times: OpenADR runs on the wall clock; the daemon may run on a faster simulated clock (HIL).
Event windows are mapped onto the daemon's clock when they are handed to DR execution.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from openleadr import OpenADRClient, enums, objects

from edge.app.clock import Clock
from edge.config import Config, ControlConfig
from edge.cycle import ControlCycle
from edge.image.image import ProcessImage
from edge.vpp.capability import site_capability
from edge.vpp.dr import DrEvent, DrManager, DrRejected, Segment
from edge.vpp.eventstore import ENDED, OPT_IN, OPT_OUT, DrRequest, EventStore, StoredEvent

# openleadr sets its logger to INFO when imported and logs every report sample at INFO;
# the daemon's own lines say what matters (registration, events, opt decisions).
logging.getLogger("openleadr").setLevel(logging.WARNING)

log = logging.getLogger(__name__)

OPEN_ENDED = timedelta(hours=24)  # an event of duration 0 runs until cancelled; re-sent updates extend it
ID_PREFIX = "oadr:"


def wall_now() -> datetime:
    return datetime.now(UTC)


def to_clock(clock: Clock, wall: datetime) -> datetime:
    """A wall-clock instant on the daemon's clock (identity in real time; under HIL the
    simulated clock runs `speed` times faster from its own start)."""
    if clock.wall:
        return wall  # exactly: two instants converted apart must keep their order
    return clock.now() + (wall - wall_now()) * clock.speed


# -- normalising an openleadr event ---------------------------------------------------------
_SCALE = {"none": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}  # siScaleCode
_UNIT_KW = {"W": 1e-3, "kW": 1.0, "MW": 1e3}


def _kw_factor(signal: dict[str, Any]) -> float:
    """kW per signal unit, from the signal's itemBase; kW when there is none. openleadr 0.5
    parses it as `measurement` {unit, scale}, except in signals after one without an itemBase,
    which keep the raw element (`powerReal` {item_units, si_scale_code})."""
    item = signal.get("measurement")
    if not isinstance(item, dict):
        item = next((v for v in signal.values() if isinstance(v, dict) and "item_units" in v), {})
    unit = _UNIT_KW.get(str(item.get("unit", item.get("item_units"))))
    if unit is None:
        return 1.0  # no itemBase, or not a power unit (a level, a fraction): used as is
    return unit * _SCALE.get(str(item.get("scale", item.get("si_scale_code")) or "none"), 1.0)


def _signals(event: dict[str, Any]) -> list[dict[str, Any]]:
    s = event.get("event_signals") or []
    return s["event_signals"] if isinstance(s, dict) else list(s)


def active_window(event: dict[str, Any]) -> tuple[datetime, datetime]:
    ap = event["active_period"]
    start = ap["dtstart"].astimezone(UTC)
    duration = ap.get("duration") or timedelta(0)
    return start, start + (duration if duration > timedelta(0) else OPEN_ENDED)


def normalise(event: dict[str, Any], levels: dict[int, float], baseline_kw: float,
              received: datetime) -> tuple[list[DrRequest], list[str]]:
    """The event's signal intervals as `DrRequest`s, and the names of signals not acted on."""
    event_id = event["event_descriptor"]["event_id"]
    start, end = active_window(event)
    requests: list[DrRequest] = []
    ignored: list[str] = []
    for si, signal in enumerate(_signals(event)):
        name, typ = str(signal.get("signal_name")), str(signal.get("signal_type"))
        factor = _kw_factor(signal)
        cursor = start
        for ii, interval in enumerate(signal.get("intervals") or []):
            i_start = (interval.get("dtstart") or cursor).astimezone(UTC)
            duration = interval.get("duration") or timedelta(0)
            i_end = i_start + duration if duration > timedelta(0) else end
            cursor = i_end
            mapped = _map(name, typ, float(interval.get("signal_payload", 0.0)), factor, levels,
                          baseline_kw)
            if mapped is None:
                ignored.append(f"{name}/{typ}")
                break
            direction, kw, target = mapped
            notice = max((i_start - received).total_seconds(), 0.0)
            requests.append(DrRequest(event_id, f"{si}.{ii}", direction, kw, target, i_start,
                                      min(i_end, end), notice))
    return requests, sorted(set(ignored))


def _map(name: str, typ: str, value: float, factor: float, levels: dict[int, float],
         baseline: float) -> tuple[str, float, float] | None:
    """(direction, kw relative to baseline or NaN, absolute target or NaN); None: not acted on."""
    nan = math.nan
    name = name.upper()
    if name == "SIMPLE" and typ == "level":
        level = min(max(round(value), 0), 3)
        return ("reduce", levels[level] if level else 0.0, nan)
    if (name, typ) in (("LOAD_DISPATCH", "setpoint"), ("LOAD_CONTROL", "x-loadControlSetpoint")):
        target = value * factor
        return ("increase" if target > baseline else "reduce", nan, target)
    if name == "LOAD_DISPATCH" and typ == "delta":
        delta = value * factor
        return ("increase", delta, nan) if delta > 0 else ("reduce", -delta, nan)
    if name == "LOAD_CONTROL" and typ == "x-loadControlCapacity":
        change = (value - 1.0) * max(baseline, 0.0)
        return ("increase", change, nan) if change > 0 else ("reduce", -change, nan)
    if name == "LOAD_CONTROL" and typ == "x-loadControlPercentOffset":
        change = value / 100.0 * max(baseline, 0.0)
        return ("increase", change, nan) if change > 0 else ("reduce", -change, nan)
    return None


def needed_kw(r: DrRequest, baseline_kw: float) -> float:
    """How far the request moves the grid power from the baseline, in its direction."""
    if not math.isnan(r.kw):
        return r.kw
    return baseline_kw - r.target_kw if r.direction == "reduce" else r.target_kw - baseline_kw


# -- the seam with DR execution (edge/vpp/dr.py) -------------------------------------------
def _notice(seconds: float) -> str:
    """DOMAIN.md §4 notice classes from the time between receipt and start."""
    if seconds >= 6 * 3600:
        return "day_ahead"
    if seconds >= 15 * 60:
        return "hour"
    return "minute" if seconds >= 60 else "second"


def dr_events(event_id: str, requests: list[DrRequest] | tuple[DrRequest, ...],
              clock: Clock) -> list[DrEvent]:
    """One `DrEvent` per signal and direction, its intervals as segments, on the daemon's
    clock; intervals asking for nothing (SIMPLE level 0) are left out."""
    groups: dict[str, list[DrRequest]] = {}
    for r in requests:
        if math.isnan(r.target_kw) and r.kw <= 0:
            continue
        groups.setdefault(dr_event_id(event_id, r), []).append(r)
    out = []
    for did, rs in groups.items():
        rs = sorted(rs, key=lambda r: r.start)
        segments = tuple(Segment(to_clock(clock, r.start), to_clock(clock, r.end),
                                 None if math.isnan(r.kw) else r.kw,
                                 None if math.isnan(r.target_kw) else r.target_kw) for r in rs)
        out.append(DrEvent(did, "grid_operator", rs[0].direction, segments[0].start,
                           segments[-1].end, notice=_notice(rs[0].notice_s),
                           segments=segments))
    return out


def dr_event_id(event_id: str, r: DrRequest) -> str:
    signal = r.key.split(".")[0]
    return f"{ID_PREFIX}{event_id}:{signal}{'-' if r.direction == 'reduce' else '+'}"


# -- flexibility and the opt decision --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Flexibility:
    """What the site can add to a grid-power change, sustained over an event window (kW)."""

    reduce_kw: float
    increase_kw: float
    detail: str


def flexibility(config: Config, image: ProcessImage, hours: float) -> Flexibility:
    """What the site's devices can add from now, held over the event (edge/vpp/capability.py).
    How far the site's import/export limits let the grid move is the caller's cap: it
    depends on the baseline."""
    cap = site_capability(config, image, hours)
    return Flexibility(cap.up_kw, cap.down_kw, cap.detail)


def decide(requests: list[DrRequest], ignored: list[str], baseline_kw: float, flex: Flexibility,
           committed: dict[str, float], control: ControlConfig,
           min_fraction: float) -> tuple[str, str]:
    """optIn when the site can deliver at least `min_fraction` of every direction the event
    asks for; optOut otherwise, with the reason in words."""
    if not requests:
        what = ", ".join(ignored) or "no signal"
        return OPT_OUT, f"nothing the site can act on ({what})"
    if math.isnan(baseline_kw):
        return OPT_OUT, "no valid PCC reading: cannot tell what the site can deliver"
    lines = []
    for direction in ("reduce", "increase"):
        asked = max((needed_kw(r, baseline_kw) for r in requests if r.direction == direction),
                    default=0.0)
        if asked <= 1e-9:
            continue
        if direction == "reduce":
            room = math.inf if control.export_limit_kw is None else baseline_kw + control.export_limit_kw
            avail = flex.reduce_kw
        else:
            room = math.inf if control.import_limit_kw is None else control.import_limit_kw - baseline_kw
            avail = flex.increase_kw
        claimed = committed.get(direction, 0.0)
        can = max(min(avail - claimed, room), 0.0)
        why = f"{direction} {asked:.1f} kW from a {baseline_kw:.1f} kW baseline: can deliver " \
              f"{can:.1f} kW ({flex.detail}"
        why += f"; {claimed:.1f} kW already committed" if claimed else ""
        why += f"; site limits allow {max(room, 0):.1f} kW" if room < avail - claimed else ""
        why += ")"
        if can < min_fraction * asked:
            return OPT_OUT, f"{why}, below {min_fraction:.0%} of the request"
        lines.append(why)
    return OPT_IN, "; ".join(lines) or "normal operation requested (nothing to change)"


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

    def __init__(self, config: Config, cycle: ControlCycle, clock: Clock, directory: Path,
                 dr: DrManager) -> None:
        if config.openadr.vtn_url is None:
            raise ValueError("openadr.vtn_url is not set")
        self.config = config
        self.cfg = config.openadr
        self.cycle = cycle
        self.clock = clock
        self.dr = dr
        self.store = EventStore(Path(directory) / "openadr.sqlite")
        self.ven_name = self.cfg.ven_name or config.site.id
        self.client: _Client | None = None
        self.registered = asyncio.Event()
        self.received_at: dict[str, float] = {}  # event id -> time.monotonic() of arrival
        self._task: asyncio.Task[None] | None = None

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
        image, pcc = self.cycle.image, self.config.grid_meter.id
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
        for i in self.cycle.book.all():
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
        except Exception:  # noqa: BLE001
            log.exception("OpenADR event could not be handled; opting out")
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
                    self.cycle.wake()  # start releasing the site now, not at the next period
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
        image = self.cycle.image
        if image is None:
            flex = Flexibility(0.0, 0.0, "no process image yet")
        else:
            flex = flexibility(self.config, image, (end - start).total_seconds() / 3600)
        credit = self._delivering(known, now)
        flex = Flexibility(flex.reduce_kw + credit["reduce"], flex.increase_kw + credit["increase"],
                           flex.detail)
        opt, reason = decide(requests, ignored, baseline, flex, self._committed(eid, start, end),
                             self.config.control, self.config.dr.min_response_ratio)
        ev = StoredEvent(eid, mod, status, opt, reason, start, end, baseline, tuple(requests),
                         _signals(event), known.received if known else now)
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
            self.cycle.wake()  # in force already: act within one cycle time, not one period
        if opt == OPT_IN:
            log.info("OpenADR event %s (mod %d) %s - %s: optIn, %d instruction(s): %s", eid, mod,
                     start.isoformat(), end.isoformat(), n, reason)
        else:
            log.warning("OpenADR event %s (mod %d) %s - %s: optOut: %s", eid, mod,
                        start.isoformat(), end.isoformat(), reason)
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
        self.store.close()


def _log_if_failed(task: asyncio.Task) -> None:
    """A background task that ends other than by cancellation is a bug: say so loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s ended with an error; OpenADR is down until restart",
                  task.get_name(), exc_info=task.exception())

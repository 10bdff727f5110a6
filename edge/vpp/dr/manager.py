"""The daemon's DR manager: takes events, keeps their instructions in the book, ticks their
M&V and persists them (edge/vpp/dr/store.py)."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from edge.config import Config
from edge.control.instructions import Instruction, InstructionBook
from edge.report.history import History, interval_start
from edge.vpp.baseline import (
    Baseline,
    BaselineError,
    BaselineNotYet,
    Calendar,
    baseline,
    event_intervals,
)
from edge.vpp.capability import site_capability, total
from edge.vpp.dr.assess import Assessment, expected
from edge.vpp.dr.store import DrStore
from edge.vpp.execution import DrExecution, LiveHistory, iso
from edge.vpp.shaping import DrEvent, DrRejected, limit_problems, site_window

log = logging.getLogger(__name__)

_FINAL_GRACE = timedelta(minutes=5)  # final after the last interval closed, or this long after


@dataclass
class _Tracked:
    exe: DrExecution | None  # None while a realtime baseline waits for its reference
    event: DrEvent
    frozen: bool = False  # baseline fixed (the response has begun)
    computed_at: datetime | None = None  # interval the baseline was last computed in
    ids: list[str] = field(default_factory=list)  # instruction ids in the book
    last_report: datetime | None = None
    last_phase: str = ""


class DrManager:
    """The daemon's DR events: baselines, instructions in the book, M&V reports."""

    def __init__(self, config: Config, book: InstructionBook, history: History, meter=None,
                 path: Path | None = None, now: datetime | None = None) -> None:
        self.config, self.cfg, self.book = config, config.dr, book
        self.tz = ZoneInfo(config.site.timezone)
        self.window = site_window(config.control)
        self.view = LiveHistory(history, meter)
        self._store = DrStore(Path(path)) if path is not None else None
        self._events: dict[str, _Tracked] = {}
        self.finals: dict[str, dict] = {}  # event id -> its final report
        self._outgoing: list[dict] = []  # reports made outside a tick, sent by the next one
        self._event_days: set[date] = set()
        if self._store is not None:
            self._resume(now)

    # -- seam --------------------------------------------------------------------------
    def add(self, event: DrEvent, now: datetime) -> list[Instruction]:
        """Take an event (a new one, or an update of one not yet final). Returns the
        instructions put in the book (none yet while a realtime baseline waits for its
        reference interval). Raises DrRejected with the reason."""
        if event.end <= now:
            raise DrRejected(f"event {event.id}: already over (end {iso(event.end)}, now "
                             f"{iso(now)})")
        old = self._events.get(event.id)
        if event.id in self.finals:
            raise DrRejected(f"event {event.id}: already {self.finals[event.id]['status']}; "
                             "use a new event id")
        t = _Tracked(None, event)
        try:
            if old is not None and old.frozen and old.exe is not None:
                t.frozen = True  # the response has begun: an update keeps the reference
                self._set(t, self._refrozen(old.exe.baseline, event, now), now)
            else:
                self._compute(t, now)
        except BaselineError as exc:  # callers handle one kind of refusal, with its reason
            raise DrRejected(f"event {event.id}: {exc}") from exc
        if old is not None:
            self._remove(old)
        self._events[event.id] = t
        self._put(t, now)
        self._save(t)
        log.info("DR event %s (%s, %s %s) accepted: %s", event.id, event.source, event.direction,
                 _amount(event), "waiting for the realtime reference" if t.exe is None
                 else f"baseline {t.exe.baseline.method} mean {np.mean(t.exe.baseline.kw):.1f} kW"
                 + (" (degraded: " + t.exe.baseline.note + ")" if t.exe.baseline.degraded else ""))
        return [i for i in self.book.all() if i.id in t.ids]

    def cancel(self, event_id: str, now: datetime) -> bool:
        """End an event now; mid-event the bound restores in steps. False if unknown."""
        t = self._events.get(event_id)
        if t is None or (t.exe is not None and t.exe.final is not None):
            return False
        self._remove(t)
        if t.exe is None:
            self._drop(t, now, "cancelled before its baseline was known")
            return True
        for i in t.exe.cancel(now):
            self.book.put(i)
            t.ids.append(i.id)
        self._save(t)
        log.info("DR event %s cancelled at %s", event_id, iso(now))
        return True

    def assess(self, event: DrEvent, now: datetime, image=None) -> Assessment:
        """Expected response ratio if the site takes the event, assuming the building draws
        its baseline: `expected` of what the site can deliver over it."""
        try:
            exe = DrExecution(event, self._baseline(event, now, allow_pending=False), self.cfg,
                              self.window)
        except BaselineError as exc:
            return Assessment(0.0, False, f"no baseline: {exc}")
        if exe.declared_mean_kw <= 0:
            return Assessment(1.0, True, "the site is already at the requested level")
        hours = float(np.sum(exe.hours))
        cap = total((), hours) if image is None else site_capability(self.config, image, hours)
        return expected(cap, event.direction, exe.declared_kw, exe.hours,
                        self.cfg.min_response_ratio)

    def tick(self, now: datetime, image=None) -> list[dict]:
        """Advance every event: late baselines, freezing at the ramp start, dropping expired
        instructions; returns the `dr/<event_id>` reports that are due (every
        `dr.report_s`, at each phase change, and the final one once)."""
        out, self._outgoing = self._outgoing, []
        for t in list(self._events.values()):
            try:
                out.extend(self._tick(t, now, image))
            except Exception:  # noqa: BLE001 - one event's fault must not stop the others
                log.exception("DR event %s: tick failed", t.event.id)
        return out

    def events(self) -> list[tuple[DrEvent, DrExecution | None]]:
        """The events in hand, each with its execution (None while a realtime baseline
        waits for its reference), for readers such as the operator API."""
        return [(t.event, t.exe) for t in self._events.values()]

    def get(self, event_id: str) -> DrExecution | None:
        t = self._events.get(event_id)
        return None if t is None else t.exe

    def prune(self, now: datetime) -> int:
        """Housekeeping: events that ended before the baseline lookback (plus two days) can
        no longer exclude a baseline day, so they leave the store and the finals."""
        if self._store is None:
            return 0
        gone = self._store.prune(now - timedelta(days=self.cfg.lookback_days + 2))
        for i in gone:
            self.finals.pop(i, None)
        return len(gone)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # -- internals ---------------------------------------------------------------------
    def _tick(self, t: _Tracked, now: datetime, image) -> list[dict]:
        self._freeze(t, now)
        if not t.frozen and (t.exe is None or interval_start(now) != t.computed_at):
            dropped = self._refresh(t, now)
            if dropped is not None:
                return [dropped]
        if t.exe is None:
            return []
        self._freeze(t, now)
        exe = t.exe
        for iid in [i for i in t.ids if (ins := self.book.get(i)) is None or ins.end <= now]:
            self.book.cancel(iid)
            t.ids.remove(iid)
        phase = exe.phase(now)
        if exe.final is not None:
            if not t.ids:
                del self._events[t.event.id]
            return []
        if exe.end <= exe.event.start:
            final = True  # cancelled before it began: nothing to measure
        else:
            last = interval_start(exe.end - timedelta(microseconds=1))
            final = now >= exe.end and (self.view.closed_after(last)
                                        or now >= exe.end + _FINAL_GRACE)
        due = final or (phase in ("ramp", "hold", "restore") and (
            phase != t.last_phase or t.last_report is None
            or (now - t.last_report).total_seconds() >= self.cfg.report_s))
        t.last_phase = phase
        if not due:
            return []
        m = exe.measure(self.view, now, image, self.config)
        if m.alarm and not exe.alarm:
            log.warning("DR event %s: projected response ratio %.2f below dr.alarm_ratio %.2f "
                        "(delivered so far %.1f of %.1f kWh)", exe.event.id, m.projected_ratio,
                        self.cfg.alarm_ratio, m.delivered_kwh, m.declared_kwh)
        exe.alarm = m.alarm
        msg = exe.report(m, now, final)
        t.last_report = now
        if final:
            exe.final = self.finals[exe.event.id] = msg
            if exe.end > exe.event.start:  # it ran: its days are no baseline days from now on
                self._event_days |= _days(exe.event, self.tz)
            self._save(t)
            log.info("DR event %s %s: response ratio %s (%s), delivered %.1f of %.1f kWh",
                     exe.event.id, msg["status"], msg["response_ratio"], msg["result"],
                     m.delivered_kwh, m.declared_kwh)
        return [msg]

    def _refresh(self, t: _Tracked, now: datetime) -> dict | None:
        """Recompute a baseline that is not frozen yet (new history, a realtime reference
        that has now happened); re-put the instructions if it moved. Returns a final report
        when an event waiting for its baseline turns out impossible."""
        prev = t.exe
        try:
            self._compute(t, now)
        except DrRejected as exc:
            t.exe, t.computed_at = prev, interval_start(now)
            if prev is not None:
                log.warning("%s; keeping the previous baseline", exc)
                return None
            log.error("%s; the event is dropped", exc)
            return self._drop(t, now, str(exc), send=False)
        if t.exe is not None and (prev is None or not np.array_equal(prev.baseline.kw,
                                                                      t.exe.baseline.kw)):
            self._remove(t)
            self._put(t, now)
            self._save(t)
        return None

    def _freeze(self, t: _Tracked, now: datetime) -> None:
        """From the ramp start on the baseline no longer moves (the response has begun)."""
        if t.exe is not None and not t.frozen and now >= t.exe.ramp_start:
            t.frozen = True
            self._save(t)

    def _drop(self, t: _Tracked, now: datetime, reason: str, send: bool = True) -> dict:
        """End an event that never ran: a final `cancelled` report, kept and stored."""
        log.info("DR event %s: %s", t.event.id, reason)
        self._events.pop(t.event.id, None)
        msg = {"ts": iso(now), "event_id": t.event.id, "cmd_id": t.event.cmd_id,
               "source": t.event.source, "direction": t.event.direction, "status": "cancelled",
               "declared_kw": None, "intervals": [], "delivered_kw": None,
               "response_ratio": None, "final": True, "reason": reason}
        self.finals[t.event.id] = msg
        if self._store is not None:
            try:
                self._store.put(t.event, None, now, msg)
            except sqlite3.Error:
                log.exception("DR event %s: could not persist its end", t.event.id)
        if send:
            self._outgoing.append(msg)
        return msg

    def _calendar(self, event: DrEvent) -> Calendar:
        days = set(self._event_days)
        for t in self._events.values():
            if t.event.id != event.id and (t.exe is None or t.exe.end > t.event.start):
                days |= _days(t.event, self.tz)
        return Calendar.of(self.cfg, days)

    def _baseline(self, event: DrEvent, now: datetime, allow_pending: bool = True) -> Baseline:
        starts, _ = event_intervals(event.start, event.end)
        if event.baseline_kw is not None:
            return Baseline(np.full(len(starts), float(event.baseline_kw)), tuple(starts),
                            "operator", note="baseline given with the event")
        cfg = self.cfg
        return baseline(cfg.baseline, self.view, event.start, event.end, self.tz,
                        self._calendar(event), key=cfg.baseline_on, ramp_in_s=cfg.ramp_in_s,
                        avg_days=cfg.avg_days, high_days=cfg.high_days,
                        high_window_days=cfg.high_window_days, lookback_days=cfg.lookback_days,
                        now=now if allow_pending else None)

    def _compute(self, t: _Tracked, now: datetime) -> None:
        try:
            base = self._baseline(t.event, now)
        except BaselineNotYet:
            t.exe = None
            return
        except BaselineError as exc:
            raise DrRejected(f"event {t.event.id}: no baseline ({exc})") from None
        self._set(t, base, now)

    def _set(self, t: _Tracked, base: Baseline, now: datetime) -> None:
        exe = DrExecution(t.event, base, self.cfg, self.window)
        problems = limit_problems(t.event, exe.pieces, self.config.control)
        if problems:
            raise DrRejected(f"event {t.event.id}: " + "; ".join(problems[:3])
                             + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
        if exe.declared_mean_kw <= 0 and t.event.kw is None:
            log.info("DR event %s: the baseline is already beyond the target", t.event.id)
        t.exe, t.computed_at = exe, interval_start(now)

    def _refrozen(self, old: Baseline, event: DrEvent, now: datetime) -> Baseline:
        """An update after the response began: intervals already known keep their value."""
        known = dict(zip(old.starts, old.kw, strict=True))
        starts, _ = event_intervals(event.start, event.end)
        if all(s in known for s in starts):
            kw = np.array([known[s] for s in starts])
            return replace(old, kw=kw, starts=tuple(starts))
        fresh = self._baseline(event, now, allow_pending=False)
        kw = np.array([known.get(s, fresh.kw[i]) for i, s in enumerate(starts)])
        return replace(fresh, kw=kw, note="; ".join(filter(None, [
            old.note, "updated mid-event: earlier intervals keep their baseline"])))

    def _put(self, t: _Tracked, now: datetime) -> None:
        if t.exe is None:
            return
        for i in t.exe.instructions(now):
            self.book.put(i)
            t.ids.append(i.id)

    def _remove(self, t: _Tracked) -> None:
        for iid in t.ids:
            self.book.cancel(iid)
        t.ids = []

    def _save(self, t: _Tracked) -> None:
        if self._store is None:
            return
        exe = t.exe
        try:
            self._store.put(t.event, None if exe is None else exe.baseline,
                            exe.end if exe is not None and exe.cancelled else None,
                            None if exe is None else exe.final)
        except sqlite3.Error:
            log.exception("DR event %s: could not persist its state; it runs on in memory",
                          t.event.id)

    def _resume(self, now: datetime | None) -> None:
        """Events from the store: past ones only exclude their days from baselines; live
        ones go back into the book as they stood (their baseline as frozen)."""
        assert self._store is not None
        for event, base, cancelled_at, final in self._store.rows():
            happened = cancelled_at is None or cancelled_at > event.start
            if final is not None:
                if happened:
                    self._event_days |= _days(event, self.tz)
                self.finals[event.id] = final
                continue
            t = _Tracked(None, event)
            self._events[event.id] = t
            if base is None or now is None:
                continue  # a realtime baseline still waiting: the next tick computes it
            t.exe = DrExecution(event, base, self.cfg, self.window)
            t.computed_at = interval_start(now)
            t.frozen = now >= t.exe.ramp_start
            if cancelled_at is None:
                for i in t.exe.instructions():  # as shaped: a ramp under way goes on
                    if i.end > now:
                        self.book.put(i)
                        t.ids.append(i.id)
            else:
                for i in t.exe.cancel(cancelled_at):
                    if i.end > now:
                        self.book.put(i)
                        t.ids.append(i.id)
            log.info("DR event %s resumed (%s)", event.id, t.exe.phase(now))


def _days(event: DrEvent, tz) -> set[date]:
    d, last = event.start.astimezone(tz).date(), event.end.astimezone(tz).date()
    out = set()
    while d <= last:
        out.add(d)
        d += timedelta(days=1)
    return out


def _amount(event: DrEvent) -> str:
    if event.segments:
        return f"{len(event.segments)} segments"
    return f"{event.kw:g} kW" if event.kw is not None else f"to {event.target_kw:g} kW"

"""DR baselines (docs/domain.md §4): what the site would have drawn without the event, per 15 min.

Three methods, picked by `dr.baseline`:
- avg5: each interval averaged over the 5 most recent normal working days;
- realtime: the mean of the last complete 15 min before the site starts responding (before
  the ramp-in, so our own ramp does not lower it; without ramp-in: the 15 min before start);
- high5of10: of the 10 eligible working days before D-1 (D-2..D-12 counted in working
  days), the 5 with the highest daily maximum, averaged.

A day is eligible when it is a working day of the calendar (Monday-Friday, minus holidays,
plus 调休 working days), had no DR event (not "normal" otherwise) and has complete data
(the event's intervals for avg5, the whole day for high5of10, whose daily maximum needs it).
With fewer eligible days than asked the baseline uses those it found; with none it falls back
to realtime. Either way it is marked `degraded` and `note` says what was done.

The profile methods are pure functions of `{date: kW[96]}`; `baseline` gathers the profiles
from the history and maps the event's intervals onto local days and slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Protocol

import numpy as np

from edge.report.history import INTERVAL_S, PER_DAY, interval_start

QUARTER = timedelta(seconds=INTERVAL_S)
METHODS = ("avg5", "realtime", "high5of10")


class BaselineError(ValueError):
    """No baseline can be computed (no eligible day, no reference interval)."""


class BaselineNotYet(BaselineError):
    """The reference interval of a realtime baseline has not happened yet."""


class Series(Protocol):
    def series(self, key: str, start: datetime, end: datetime) -> np.ndarray: ...
    def day(self, key: str, day: date, tz: tzinfo) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Calendar:
    """Working days: Monday-Friday, minus `holidays`, plus `working_days` (调休). Days in
    `excluded` (DR event days) are working days but not normal ones."""

    holidays: frozenset[date] = frozenset()
    working_days: frozenset[date] = frozenset()
    excluded: frozenset[date] = frozenset()

    @classmethod
    def of(cls, cfg, excluded=()) -> Calendar:
        """From a `DrConfig` and the days of past events."""
        return cls(frozenset(cfg.holidays), frozenset(cfg.working_days), frozenset(excluded))

    def is_working(self, d: date) -> bool:
        if d in self.working_days:
            return True
        return d.weekday() < 5 and d not in self.holidays

    def is_normal(self, d: date) -> bool:
        return self.is_working(d) and d not in self.excluded


@dataclass(frozen=True, slots=True)
class DayPick:
    """A day-profile method's result: the averaged 96 quarter hours and how it got them."""

    profile: np.ndarray
    days: tuple[date, ...]
    degraded: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class Baseline:
    """kW per event interval (`starts`, UTC quarter hours) and where it came from."""

    kw: np.ndarray
    starts: tuple[datetime, ...]
    method: str  # the method actually used (a fallback says so here and in `note`)
    days: tuple[date, ...] = ()
    degraded: bool = False
    note: str = ""
    reference: tuple[datetime, datetime] | None = None  # realtime: the interval used

    @property
    def peak_kw(self) -> float:
        return float(np.max(self.kw))

    def to_json(self) -> dict:
        return {"kw": [round(float(v), 4) for v in self.kw],
                "starts": [t.isoformat() for t in self.starts], "method": self.method,
                "days": [d.isoformat() for d in self.days], "degraded": self.degraded,
                "note": self.note,
                "reference": None if self.reference is None else [t.isoformat() for t in self.reference]}

    @classmethod
    def from_json(cls, d: dict) -> Baseline:
        ref = d.get("reference")
        return cls(np.array(d["kw"], dtype=float), tuple(map(datetime.fromisoformat, d["starts"])),
                   d["method"], tuple(map(date.fromisoformat, d["days"])), d["degraded"],
                   d["note"], None if ref is None else tuple(map(datetime.fromisoformat, ref)))


def event_intervals(start: datetime, end: datetime) -> tuple[list[datetime], np.ndarray]:
    """The UTC quarter hours overlapping [start, end) and the hours of each inside it."""
    if end <= start:
        raise ValueError(f"event end {end.isoformat()} is not after its start {start.isoformat()}")
    t = interval_start(start)
    starts, hours = [], []
    while t < end:
        overlap = (min(end, t + QUARTER) - max(start, t)).total_seconds()
        starts.append(t)
        hours.append(overlap / 3600.0)
        t += QUARTER
    return starts, np.array(hours)


def _complete(profile: np.ndarray | None, slots) -> bool:
    if profile is None or len(profile) != PER_DAY:
        return False  # missing, or a DST change day (92 or 100 quarter hours)
    return not np.isnan(profile if slots is None else profile[list(slots)]).any()


def _short(days: int, wanted: int, what: str, found: tuple[date, ...]) -> str:
    return (f"only {days} of {wanted} {what} found ({', '.join(map(str, found))}); "
            f"averaged {'that day' if days == 1 else 'those'}")


def avg_recent(profiles: dict[date, np.ndarray], day: date, calendar: Calendar, n: int = 5,
               slots=None) -> DayPick:
    """(a) The `n` most recent normal working days before `day`, averaged per interval.
    `slots`: the intervals that must be present (the event's); None = the whole day."""
    found = tuple(d for d in sorted(profiles, reverse=True)
                  if d < day and calendar.is_normal(d) and _complete(profiles[d], slots))[:n]
    if not found:
        raise BaselineError(f"no normal working day with complete data before {day}")
    profile = np.mean([profiles[d] for d in found], axis=0)
    if len(found) < n:
        return DayPick(profile, found, True, _short(len(found), n, "normal working days", found))
    return DayPick(profile, found)


def high_of_window(profiles: dict[date, np.ndarray], day: date, calendar: Calendar, n: int = 5,
                   window: int = 10) -> DayPick:
    """(c) Of the `window` normal working days before D-1 (the most recent working day
    before `day` is skipped: its data is not settled when a day-ahead event is declared),
    the `n` with the highest daily maximum, averaged per interval. Needs whole days."""
    before = sorted((d for d in profiles if d < day), reverse=True)
    last_working = next((d for d in before if calendar.is_working(d)), None)
    pool = tuple(d for d in before if d != last_working and calendar.is_normal(d)
                 and _complete(profiles[d], None))[:window]
    if not pool:
        raise BaselineError(f"no normal working day with complete data before D-1 of {day}")
    found = tuple(sorted(pool, key=lambda d: (float(np.max(profiles[d])), d), reverse=True)[:n])
    profile = np.mean([profiles[d] for d in found], axis=0)
    notes = []
    if len(pool) < window:
        notes.append(f"only {len(pool)} of {window} eligible days in the window")
    if len(found) < n:
        notes.append(f"averaged {len(found)} instead of {n}")
    return DayPick(profile, found, bool(notes), "; ".join(notes))


def realtime_reference(start: datetime, ramp_in_s: float = 0.0) -> tuple[datetime, datetime]:
    """(b) The last complete quarter hour before the response begins (start − ramp-in)."""
    end = interval_start(start - timedelta(seconds=ramp_in_s))
    return end - QUARTER, end


def _slot(t_local: datetime) -> int:
    return (t_local.hour * 60 + t_local.minute) // 15


def _realtime(history: Series, key: str, starts: list[datetime], start: datetime,
              ramp_in_s: float, now: datetime | None, note: str = "") -> Baseline:
    ref = realtime_reference(start, ramp_in_s)
    if now is not None and now < ref[1]:
        raise BaselineNotYet(f"the realtime reference {ref[0]:%H:%M}-{ref[1]:%H:%M} UTC has "
                             "not happened yet")
    value = history.series(key, *ref)
    degraded = bool(note)
    if np.isnan(value).all():
        # The reference is missing (daemon down, meter lost): the latest complete interval
        # within the hour before it stands in, flagged.
        earlier = history.series(key, ref[0] - 4 * QUARTER, ref[0])
        ok = np.flatnonzero(~np.isnan(earlier))
        if not len(ok):
            raise BaselineError(f"no {key} data in the 15 min before the response begins "
                                f"({ref[0].isoformat()}) nor in the hour before")
        i = int(ok[-1])
        ref = (ref[0] - (4 - i) * QUARTER, ref[0] - (3 - i) * QUARTER)
        value = earlier[i:i + 1]
        degraded = True
        note = "; ".join(filter(None, [note, f"reference interval missing; used {ref[0].isoformat()}"]))
    kw = np.full(len(starts), float(value[0]))
    return Baseline(kw, tuple(starts), "realtime", (), degraded, note, ref)


def baseline(method: str, history: Series, start: datetime, end: datetime, tz: tzinfo,
             calendar: Calendar, *, key: str = "import", ramp_in_s: float = 0.0,
             avg_days: int = 5, high_days: int = 5, high_window_days: int = 10,
             lookback_days: int = 45, now: datetime | None = None) -> Baseline:
    """Baseline kW for each quarter hour of the event [start, end) on history series `key`.
    `now` (when given) refuses a realtime reference that has not happened yet
    (`BaselineNotYet`). Raises `BaselineError` when nothing usable is found."""
    if method not in METHODS:
        raise ValueError(f"dr.baseline: unknown method {method!r}; use one of {', '.join(METHODS)}")
    starts, _ = event_intervals(start, end)
    if method == "realtime":
        return _realtime(history, key, starts, start, ramp_in_s, now)
    need: dict[date, list[int]] = {}  # local day -> its slots in the event
    for t in starts:
        local = t.astimezone(tz)
        need.setdefault(local.date(), []).append(_slot(local))
    first = min(need)
    profiles = {first - timedelta(days=k): history.day(key, first - timedelta(days=k), tz)
                for k in range(1, lookback_days + 1)}
    kw, days, notes, degraded = [], set(), [], False
    try:
        for d, slots in need.items():
            if method == "avg5":
                pick = avg_recent(profiles, d, calendar, avg_days, slots)
            else:
                pick = high_of_window(profiles, d, calendar, high_days, high_window_days)
            kw.extend(pick.profile[s] for s in slots)
            days.update(pick.days)
            degraded |= pick.degraded
            if pick.note:
                notes.append(pick.note)
    except BaselineError as exc:
        return _realtime(history, key, starts, start, ramp_in_s, now,
                         f"{method}: {exc} in the last {lookback_days} days; fell back to realtime")
    return Baseline(np.array(kw, dtype=float), tuple(starts), method, tuple(sorted(days)),
                    degraded, "; ".join(notes))

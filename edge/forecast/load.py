"""Load forecast: the mean of the same quarter hours on the most recent similar days
(working days with working days, weekends with weekends) from the local history, shifted
by how today's load has been running against that profile, the shift fading over the
horizon. No history, no invention: the measured load carried forward."""

from __future__ import annotations

import logging
import math
from datetime import date, datetime, timedelta, tzinfo

import numpy as np

from edge.report.history import INTERVAL_S, History
from edge.vpp.baseline import Calendar

log = logging.getLogger(__name__)


class NotMeasured(Exception):
    """Nothing measured yet to forecast from: what a starting site is in for its first
    cycles, not a failure (the planner leaves control to the rule-based functions)."""


class LoadForecaster:
    def __init__(self, history: History, tz: tzinfo, similar_days: int, tau_h: float,
                 lookback_days: int = 28, calendar: Calendar | None = None) -> None:
        self.history = history
        self.tz = tz
        self.similar_days = similar_days
        self.tau_h = tau_h
        self.lookback_days = lookback_days
        self.calendar = calendar or Calendar()  # holidays and 调休 days, from the dr section
        self.recent_kw: float | None = None  # live load, fed by the daemon each cycle
        self.source = "none"
        self._profiles: dict[tuple[date, bool], np.ndarray] = {}

    def observe(self, load_kw: float | None, dt_s: float = 1.0) -> None:
        if load_kw is not None and math.isfinite(load_kw):
            a = min(1.0, max(dt_s, 0.0) / INTERVAL_S)  # a quarter-hour level, not a spike
            self.recent_kw = load_kw if self.recent_kw is None else (1 - a) * self.recent_kw + a * load_kw

    def profile(self, day: date) -> np.ndarray:
        """96 mean kW from the last `similar_days` days of the same kind before `day`
        (NaN where none of them has data); cached per day."""
        key = (day, self.calendar.is_working(day))
        if key not in self._profiles:
            days, d = [], day - timedelta(days=1)
            while len(days) < self.similar_days and (day - d).days <= self.lookback_days:
                if self.calendar.is_working(d) == self.calendar.is_working(day):
                    p = self.history.day("load", d, self.tz)[:96]
                    if p.size == 96 and np.isfinite(p).sum() >= 48:
                        days.append(p)
                d -= timedelta(days=1)
            with np.errstate(all="ignore"):
                prof = np.nanmean(np.vstack(days), axis=0) if days else np.full(96, np.nan)
            if len(self._profiles) > 16:
                self._profiles.clear()
            self._profiles[key] = prof
        return self._profiles[key]

    def forecast(self, start: datetime, n: int, step_s: int) -> np.ndarray:
        out = np.empty(n)
        for i in range(n):
            t = (start + timedelta(seconds=(i + 0.5) * step_s)).astimezone(self.tz)
            q = (t.hour * 3600 + t.minute * 60 + t.second) // INTERVAL_S
            out[i] = self.profile(t.date())[min(q, 95)]
        missing = ~np.isfinite(out)
        if missing.any() and self.recent_kw is None:
            raise NotMeasured("no load measurement yet: " + (
                "no history of similar days" if missing.all() else "gaps in the history of "
                "similar days") + " and no live load reading to carry forward")
        if missing.all():
            self._set_source("persistence")
            return np.full(n, self.recent_kw)
        self._set_source("similar_days" if not missing.any() else "similar_days+persistence")
        if self.recent_kw is not None:
            now_t = start.astimezone(self.tz)
            q0 = (now_t.hour * 3600 + now_t.minute * 60) // INTERVAL_S
            base = self.profile(now_t.date())[q0]
            if math.isfinite(base) and base > 0:
                lead_h = (np.arange(n) + 0.5) * step_s / 3600
                shift = (self.recent_kw - base) * np.exp(-lead_h / self.tau_h)
                out = out + shift
            if missing.any():
                out[missing] = self.recent_kw
        return np.maximum(out, 0.0)

    def _set_source(self, source: str) -> None:
        if source != self.source and source.endswith("persistence"):
            log.warning("load forecast: %s — not enough history of similar days yet; using the "
                        "measured load carried forward where the profile has gaps", source)
        self.source = source

"""Zone models from the site's own history, for the planner: each HVAC zone with
`model.identify` is fitted (edge/plan/identify.py) on the last `FIT_DAYS` of its zone log
(edge/report/zonelog.py) every `model.refit_h`, and every `RETRY_H` while its configured
model still stands (the history grows). The fit replaces the configured R, C and gains only
when its one-step RMS error is within `model.max_rms_k`: a model that predicts the zone
worse than that would steer pre-cooling on noise. Each zone's status says which model the
plan uses, its figures and why."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from edge.plan.identify import fit
from edge.report.history import INTERVAL_S
from edge.report.zonelog import ZoneLog

FIT_DAYS = 14  # the newest history only: a building changes (fit-outs, seasons)
RETRY_H = 1.0


@dataclass(frozen=True)
class ZoneModelStatus:
    device: str
    source: str  # "configured" or "fitted": the model the plan uses
    r_k_per_kw: float
    c_kwh_per_k: float
    gains_kw: float
    rms_k: float | None  # the fit's one-step error, K (None: no fit yet)
    days: float  # days of usable history the fit saw
    reason: str

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("r_k_per_kw", "c_kwh_per_k", "gains_kw", "rms_k", "days"):
            if d[k] is not None:
                d[k] = round(d[k], 4)
        return d


def configured(d, reason: str, rms_k: float | None = None, days: float = 0.0) -> ZoneModelStatus:
    m = d.model
    return ZoneModelStatus(d.id, "configured", m.r_k_per_kw, m.c_kwh_per_k, m.gains_kw,
                           rms_k, days, reason)


class Learner:
    """`history` (edge/report/history.py, or None) holds the zone log."""

    def __init__(self, config, history=None) -> None:
        self.devs = [d for d in config.devices if d.role == "hvac"]
        self.tz = ZoneInfo(config.site.timezone)
        self.log = ZoneLog(history.db, create=False) if history is not None else None
        why = ("no site history here: configured model" if self.log is None
               else "not fitted yet: configured model")
        self.status = {d.id: configured(d, why if d.model.identify else
                                        "model.identify is off: configured model")
                       for d in self.devs}
        self._next: dict[str, datetime] = {}

    def models(self, now: datetime, stats=None) -> dict[str, tuple[float, float, float]]:
        """(R, C, gains) per zone for a plan made now, refitting the zones that are due;
        `stats` (PlannerStats) gets the zones' status."""
        for d in self.devs:
            if self.log is not None and d.model.identify and now >= self._next.get(
                    d.id, datetime.min.replace(tzinfo=now.tzinfo)):
                self.status[d.id] = s = self.fit(d, now)
                wait = d.model.refit_h if s.source == "fitted" else min(RETRY_H, d.model.refit_h)
                self._next[d.id] = now + timedelta(hours=wait)
        if stats is not None:
            stats.zones = self.report()
        return {i: (s.r_k_per_kw, s.c_kwh_per_k, s.gains_kw) for i, s in self.status.items()}

    def fit(self, d, now: datetime) -> ZoneModelStatus:
        times, zone, outdoor, power = self.log.series(d.id, now - timedelta(days=FIT_DAYS), now)
        cop = np.array([d.cop_at(t) if math.isfinite(t) else math.nan for t in outdoor])
        m = d.model
        f = fit([t.astimezone(self.tz) for t in times], zone, outdoor, power, cop, INTERVAL_S,
                (m.r_k_per_kw, m.c_kwh_per_k, m.gains_kw), d.sign)
        days = f.samples * INTERVAL_S / 86400
        rms = f.rms_k if math.isfinite(f.rms_k) else None
        if not f.fitted:
            return configured(d, f.reason, rms, days)
        if f.rms_k > m.max_rms_k:
            return configured(d, f"fit on {days:.1f} days has RMS {f.rms_k:.3f} K, above "
                              f"max_rms_k {m.max_rms_k:g} K: configured model", rms, days)
        return ZoneModelStatus(d.id, "fitted", f.r_k_per_kw, f.c_kwh_per_k, f.gains_kw, rms,
                               days, f.reason)

    def report(self) -> list[dict]:
        return [s.as_dict() for s in self.status.values()]


"""Carbon accounting from the site's own metered intervals (docs/domain.md §6).

Emissions = grid import × the configured factor; PV used on site counts zero, exported PV is
simply not part of the site's consumption (never also claimed), bought green power is taken
out of the import at its share and the rest uses the residual factor. The green share is
the part of the site's consumption that did not come from grey grid import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

from edge.config import CarbonConfig
from edge.report.history import INTERVAL_S, Interval


@dataclass(frozen=True, slots=True)
class Carbon:
    start: datetime
    end: datetime
    import_kwh: float
    load_kwh: float
    co2_kg: float
    green_share: float | None  # None when nothing was consumed

    def as_dict(self) -> dict:
        return {
            "start": _iso(self.start), "end": _iso(self.end),
            "import_kwh": round(self.import_kwh, 4), "load_kwh": round(self.load_kwh, 4),
            "co2_kg": round(self.co2_kg, 4),
            "green_share": None if self.green_share is None else round(self.green_share, 4),
        }


def account(intervals: list[Interval], cfg: CarbonConfig, start: datetime,
            end: datetime) -> Carbon:
    imp = sum(iv.import_kwh for iv in intervals)
    load = sum(iv.consumed_kwh for iv in intervals)
    grey = imp * (1 - cfg.green_import_share)
    share = None if load <= 0 else min(max(1 - grey / load, 0.0), 1.0)
    return Carbon(start, end, imp, load, imp * cfg.import_factor, share)


def day_bounds(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    start = datetime.combine(day, datetime.min.time(), tz)
    return start, datetime.combine(day + timedelta(days=1), datetime.min.time(), tz)


def month_bounds(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    first = day.replace(day=1)
    nxt = (first.replace(year=first.year + 1, month=1) if first.month == 12
           else first.replace(month=first.month + 1))
    return (datetime.combine(first, datetime.min.time(), tz),
            datetime.combine(nxt, datetime.min.time(), tz))


def report(history, cfg: CarbonConfig, iv: Interval, tz: tzinfo,
           now: datetime | None = None) -> dict:
    """The `carbon` message for a just-closed interval: that interval, its local day and its
    local month so far, each from the stored intervals (so a restart loses nothing). `ts`
    is `now` (when it was accounted), by default the interval's end."""
    iv_end = iv.start + timedelta(seconds=INTERVAL_S)
    local_day = iv.start.astimezone(tz).date()
    d0, d1 = day_bounds(local_day, tz)
    m0, m1 = month_bounds(local_day, tz)
    return {
        "ts": _iso(now or iv_end),
        "factor": {"kg_per_kwh": cfg.factor_kg_per_kwh, "year": cfg.factor_year,
                   "version": cfg.factor_version, "region": cfg.factor_region,
                   "green_import_share": cfg.green_import_share,
                   "import_factor_kg_per_kwh": round(cfg.import_factor, 6)},
        "interval": account([iv], cfg, iv.start, iv_end).as_dict(),
        "day": account(history.intervals(d0, iv_end), cfg, d0, d1).as_dict(),
        "month": account(history.intervals(m0, iv_end), cfg, m0, m1).as_dict(),
    }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

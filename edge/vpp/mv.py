"""Measurement and verification of a DR event (docs/domain.md §4, GB/T 32127 / 37016 in spirit).

Per 15-min interval: delivered = baseline − actual for a reduction (actual − baseline for an
increase), in kW. The response ratio is delivered energy over declared energy, so intervals
weigh by the hours of the event they cover (a partial first or last quarter hour weighs
less); live it runs over the part of the event measured so far, final over the whole event.
Data has the meter's 15-min resolution: an interval only partly inside the event (an
unaligned start, a cancellation mid-quarter) counts with its whole-interval mean.

The projection asks whether the event will end above the alarm threshold: what was delivered
so far plus the rest of the event at the most recent response ratio, minus what the battery
cannot keep up once its energy runs out. Settlement bands: below `penalty_below` of the
declared amount is penalised, above `pay_cap` is not paid (unconfirmed figures, in config).

Pure numpy: the caller supplies baseline, actual and declared kW per interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_RECENT_S = 300.0  # an open interval counts as "recent" once this much of it is measured


@dataclass(frozen=True, slots=True)
class Measurement:
    delivered_kw: np.ndarray  # per interval; NaN where nothing is measured yet or data is missing
    interval_ratio: np.ndarray  # delivered / declared per interval (NaN likewise)
    delivered_kwh: float  # over the measured part
    declared_kwh: float  # over the whole event (intervals with missing data left out)
    measured_h: float
    response_ratio: float | None  # live: over the measured part; None before any measurement
    projected_ratio: float | None
    band: str | None  # penalised | paid | capped, of the response ratio
    payable_ratio: float | None  # what settlement would pay on: 0 if penalised, capped above
    alarm: bool
    missing: int  # past intervals without data


def delivered(baseline_kw: np.ndarray, actual_kw: np.ndarray, direction: str) -> np.ndarray:
    """kW delivered per interval: a reduction below the baseline, or an increase above it."""
    d = np.asarray(baseline_kw, float) - np.asarray(actual_kw, float)
    return d if direction == "reduce" else -d


def band(ratio: float, penalty_below: float = 0.5, pay_cap: float = 1.2) -> str:
    if ratio < penalty_below:
        return "penalised"
    return "capped" if ratio > pay_cap else "paid"


def payable(ratio: float, penalty_below: float = 0.5, pay_cap: float = 1.2) -> float:
    return 0.0 if ratio < penalty_below else min(ratio, pay_cap)


def project(delivered_kwh: float, declared_kwh: float, remaining_declared_kwh: float,
            remaining_h: float, rate_ratio: float, battery_kw: float = 0.0,
            battery_kwh: float = math.inf) -> float:
    """Final ratio if the rest of the event goes at `rate_ratio` of the declared amount,
    except that a battery now delivering `battery_kw` stops doing so when its `battery_kwh`
    are spent: from then on the delivery is short by `battery_kw`."""
    rest = rate_ratio * remaining_declared_kwh
    if battery_kw > 0 and remaining_h > 0:
        lasts_h = battery_kwh / battery_kw
        rest -= battery_kw * max(0.0, remaining_h - lasts_h)
    return (delivered_kwh + max(rest, 0.0)) / declared_kwh


def measure(baseline_kw, actual_kw, declared_kw, hours, elapsed_h, direction: str, *,
            planned_ratio: float = 1.0, battery_kw: float = 0.0, battery_kwh: float = math.inf,
            alarm_ratio: float = 0.8, penalty_below: float = 0.5, pay_cap: float = 1.2
            ) -> Measurement:
    """M&V of one event so far.

    baseline_kw, declared_kw: per interval of the event; actual_kw: measured mean per interval
    (NaN: not measured); hours: hours of each interval inside the event; elapsed_h: hours of
    each measured so far (== hours once it is past, less for the open interval, 0 ahead).
    `planned_ratio` is the rate assumed for the rest before anything is measured; the battery
    terms feed the projection (see `project`)."""
    base = np.asarray(baseline_kw, float)
    actual = np.asarray(actual_kw, float)
    declared = np.asarray(declared_kw, float)
    h = np.asarray(hours, float)
    e = np.minimum(np.asarray(elapsed_h, float), h)
    d = delivered(base, actual, direction)
    seen = (e > 0) & ~np.isnan(actual)
    past = e >= h - 1e-9
    missing = past & np.isnan(actual)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_i = np.where(seen & (declared > 0), d / declared, np.nan)
    d = np.where(seen, d, np.nan)
    delivered_kwh = float(np.sum(np.where(seen, d, 0.0) * e))
    measured_declared = float(np.sum(np.where(seen, declared, 0.0) * e))
    declared_kwh = float(np.sum(np.where(missing, 0.0, declared) * h))
    measured_h = float(np.sum(np.where(seen, e, 0.0)))
    live = delivered_kwh / measured_declared if measured_declared > 0 else None
    rate = planned_ratio
    recent = [i for i in np.flatnonzero(seen) if e[i] >= min(h[i], _RECENT_S / 3600) - 1e-9]
    if recent and not math.isnan(ratio_i[recent[-1]]):
        rate = float(ratio_i[recent[-1]])
    remaining = np.where(missing, 0.0, h - np.where(seen, e, 0.0))
    remaining = np.where(past & seen, 0.0, remaining)
    projected = None
    if declared_kwh > 0:
        projected = project(delivered_kwh, declared_kwh, float(np.sum(declared * remaining)),
                            float(np.sum(remaining)), rate, battery_kw, battery_kwh)
    return Measurement(
        delivered_kw=d, interval_ratio=ratio_i, delivered_kwh=delivered_kwh,
        declared_kwh=declared_kwh, measured_h=measured_h, response_ratio=live,
        projected_ratio=projected,
        band=None if live is None else band(live, penalty_below, pay_cap),
        payable_ratio=None if live is None else payable(live, penalty_below, pay_cap),
        alarm=projected is not None and projected < alarm_ratio, missing=int(missing.sum()),
    )

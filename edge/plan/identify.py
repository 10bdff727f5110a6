"""A zone's RC model from the site's own history: least squares on measured zone and
outdoor temperatures and HVAC electric power, one sample per step (the temperatures at the
step's start, the power its mean). The exact RC step, with the outdoor temperature moved to
the left,

    T[k+1] - To[k] = a (T[k] - To[k]) - (1 - a) R sign COP[k] P[k] + g[hour, weekday]

is linear in a, (1 - a) R and one gain term per hour of the day (weekdays and weekends
apart: the sun and the occupancy repeat by the clock). Then R and C = dt / (R ln(1/a)). The
fit error is the RMS of the one-step residuals; until there are `MIN_DAYS` of usable
samples (gaps do not count), or when the fit is not physical, the configured model stands
and the reason says why."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

MIN_DAYS = 2.0


@dataclass(frozen=True)
class Fit:
    r_k_per_kw: float
    c_kwh_per_k: float
    gains_kw: float  # mean thermal gains over the samples
    rms_k: float  # one-step prediction error
    samples: int
    fitted: bool  # False: the defaults stand (see reason)
    reason: str = ""


def fit(times: list[datetime], zone_c: np.ndarray, outdoor_c: np.ndarray, power_kw: np.ndarray,
        cop: np.ndarray, step_s: float, default: tuple[float, float, float],
        sign: float = 1.0) -> Fit:
    """`times` local, one per sample at `step_s` spacing; `default` (R, C, gains)."""
    n = max(len(zone_c) - 1, 0)
    r0, c0, g0 = default
    t, to = np.asarray(zone_c, float), np.asarray(outdoor_c, float)
    q = sign * np.asarray(cop, float)[:n] * np.asarray(power_kw, float)[:n]
    slot = np.array([(tm.weekday() >= 5) * 24 + tm.hour for tm in times[:n]], dtype=int)
    used = np.unique(slot)
    dummies = (slot[:, None] == used[None, :]).astype(float)
    x = np.column_stack([t[:-1] - to[:n], -q, dummies])
    y = t[1:] - to[:n]
    ok = np.all(np.isfinite(x), axis=1) & np.isfinite(y)
    days = int(ok.sum()) * step_s / 86400  # gaps in the history do not count
    if days < MIN_DAYS:
        return Fit(r0, c0, g0, math.nan, int(ok.sum()), False,
                   f"{days:.1f} days of history, {MIN_DAYS:g} needed: configured model")
    coef, *_ = np.linalg.lstsq(x[ok], y[ok], rcond=None)
    a, b = coef[0], coef[1]
    rms = float(np.sqrt(np.mean((x[ok] @ coef - y[ok]) ** 2)))
    if not (0 < a < 1 and b > 0):
        return Fit(r0, c0, g0, rms, int(ok.sum()), False,
                   f"fit not physical (a={a:.4f}, b={b:.4g}): configured model")
    r = b / (1 - a)
    c = step_s / 3600 / (r * math.log(1 / a))
    gains = float(np.mean(dummies[ok] @ coef[2:]) / ((1 - a) * r))
    return Fit(float(r), float(c), gains, rms, int(ok.sum()), True,
               f"fitted on {days:.1f} days: R {r:.3g} K/kW, C {c:.3g} kWh/K, RMS {rms:.3f} K")

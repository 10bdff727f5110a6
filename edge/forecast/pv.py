"""PV forecast: pvlib clear-sky irradiance on each configured array, scaled by how the
arrays actually performed in the last hours (clouds, soiling, haze) — a correction that
fades over the horizon towards the clear-sky shape."""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pvlib

_SUBSTEPS = 3  # irradiance sampled at 3 points per step, averaged: a 15-min mean, not a spot
_MIN_CLEAR_FRAC = 0.1
INTERVAL_S = 900  # below 10 % of rated the ratio measured/clear-sky is mostly noise


@dataclass(frozen=True, slots=True)
class Array:
    rated_kw: float
    tilt_deg: float
    azimuth_deg: float


class PvForecaster:
    def __init__(self, lat: float, lon: float, arrays: list[Array], derate: float,
                 linke_turbidity: float, tau_h: float, window_h: float = 2.0) -> None:
        self.location = pvlib.location.Location(lat, lon, tz="UTC")
        self.arrays = arrays
        self.rated_kw = sum(a.rated_kw for a in arrays)
        self.derate = derate
        self.turbidity = linke_turbidity
        self.tau_h = tau_h
        self.window = timedelta(hours=window_h)
        self._obs: deque[tuple[datetime, float, float, bool]] = deque()  # ts, kW, clear, held
        self._minute_day: datetime | None = None
        self._minute_kw = np.zeros(0)

    def clear_sky_kw(self, start: datetime, n: int, step_s: int) -> np.ndarray:
        """Mean clear-sky AC output per step, all arrays, capped at their rating."""
        if n <= 0 or not self.arrays:
            return np.zeros(max(n, 0))
        sub = step_s / _SUBSTEPS
        first = pd.Timestamp(start).tz_convert("UTC") + pd.Timedelta(seconds=sub / 2)
        times = pd.date_range(first, periods=n * _SUBSTEPS, freq=pd.Timedelta(seconds=sub))
        with warnings.catch_warnings():  # pvlib on pandas 3 warns about its own internals
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            sky = self.location.get_clearsky(times, model="ineichen",
                                             linke_turbidity=self.turbidity)
            sun = self.location.get_solarposition(times)
        total = np.zeros(len(times))
        for a in self.arrays:
            poa = pvlib.irradiance.get_total_irradiance(
                a.tilt_deg, a.azimuth_deg, sun["apparent_zenith"], sun["azimuth"],
                sky["dni"], sky["ghi"], sky["dhi"])["poa_global"].to_numpy()
            total += np.minimum(a.rated_kw, a.rated_kw * np.nan_to_num(poa) / 1000 * self.derate)
        return total.reshape(n, _SUBSTEPS).mean(axis=1)

    def observe(self, ts: datetime, pv_kw: float, curtailed: bool) -> None:
        """A live measurement. Curtailed output says nothing about clouds, only that the
        sky offers at least that much: it is kept as a lower bound."""
        while self._obs and ts - self._obs[0][0] > self.window:
            self._obs.popleft()
        if not math.isfinite(pv_kw) or self.rated_kw <= 0:
            return
        clear = self._clear_at_minute(ts)
        if clear >= _MIN_CLEAR_FRAC * self.rated_kw:
            self._obs.append((ts, pv_kw, clear, curtailed))

    def _clear_at_minute(self, ts: datetime) -> float:
        """Clear-sky output of the minute ending at `ts`, from a per-day table: `observe`
        runs every cycle and must not call pvlib each time."""
        t = ts.astimezone(UTC)
        day = t.replace(hour=0, minute=0, second=0, microsecond=0)
        if day != self._minute_day:
            self._minute_kw = self.clear_sky_kw(day, 1440, 60)
            self._minute_day = day
        m = (t - day).total_seconds() / 60 - 1
        return float(self._minute_kw[min(max(int(m), 0), 1439)])

    def ratio(self) -> float | None:
        """Measured / clear-sky energy over the recent window; None when the sun was too low
        or nothing says more than the prior (then the clear-sky shape times the prior
        stands). Held (curtailed) minutes only raise the estimate: on an export-limited site
        PV is held back for hours, and output at a limit proves at least that much sun, so
        the window pooled with them is a lower bound."""
        free = [o for o in self._obs if not o[3]]
        r = None
        if len(free) >= 3:
            r = sum(o[1] for o in free) / sum(o[2] for o in free)
        if len(self._obs) - len(free) >= 3:
            floor = sum(o[1] for o in self._obs) / sum(o[2] for o in self._obs)
            if floor > (self.prior if r is None else r):
                r = floor
        return None if r is None else min(max(r, 0.0), 1.3)

    def calibrate(self, measured_kw: np.ndarray, start: datetime) -> float | None:
        """The site's typical share of clear sky from its recent history (15-min PV means
        from `start`, NaN where unmeasured): the mean over days of measured / clear-sky
        energy. It captures what the model cannot know (derating, shading, the season's
        haze and clouds) and is where the forecast settles beyond the near term. Curtailed
        days read low: on an export-limited site it errs towards less PV, the safe side."""
        n = len(measured_kw)
        if n < 96:
            return None
        clear = self.clear_sky_kw(start, n, INTERVAL_S)
        ok = np.isfinite(measured_kw) & (clear >= _MIN_CLEAR_FRAC * self.rated_kw)
        ratios = []
        for d in range(n // 96):
            day = slice(d * 96, (d + 1) * 96)
            c = clear[day][ok[day]]
            if c.size >= 16:  # at least 4 h of daylight measured
                ratios.append(float(measured_kw[day][ok[day]].sum() / c.sum()))
        if not ratios:
            return None
        self.prior = min(max(float(np.mean(ratios)), 0.1), 1.3)
        return self.prior

    prior = 1.0  # typical measured / clear-sky; 1 until history says otherwise

    def forecast(self, start: datetime, n: int, step_s: int) -> np.ndarray:
        clear = self.clear_sky_kw(start, n, step_s)
        r = self.ratio()
        if r is None:
            return clear * self.prior
        lead_h = (np.arange(n) + 0.5) * step_s / 3600
        fade = np.exp(-lead_h / self.tau_h)
        return clear * (self.prior + (r - self.prior) * fade)

"""The forecaster the daemon owns: PV and load forecasts from config and history, fed with
live measurements every cycle, with its errors tracked."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from edge.config import Config
from edge.forecast.error import ForecastErrors
from edge.forecast.load import LoadForecaster
from edge.forecast.pv import Array, PvForecaster
from edge.image.balance import SitePower
from edge.report.history import History
from edge.vpp.baseline import Calendar

log = logging.getLogger(__name__)


class Forecaster:
    def __init__(self, config: Config, history: History) -> None:
        f = config.forecast
        self.pvs = pvs = config.devices_that("generates")
        self.pv = PvForecaster(
            config.site.latitude, config.site.longitude,
            [Array(p.rated_kw, p.tilt_deg, p.azimuth_deg) for p in pvs],
            f.pv_derate, f.linke_turbidity, f.correction_tau_h)
        self.load = LoadForecaster(history, ZoneInfo(config.site.timezone), f.similar_days,
                                   f.correction_tau_h, lookback_days=f.history_days,
                                   calendar=Calendar.of(config.dr))
        self.errors = ForecastErrors()
        self.history = history
        self.tz = ZoneInfo(config.site.timezone)
        self.calibration_days = min(7, f.history_days)
        self._calibrated: date | None = None

    def observe(self, ts: datetime, p: SitePower, pv_curtailed: bool, dt_s: float = 1.0) -> None:
        self.load.observe(p.load_kw, dt_s)
        if p.pv_kw is not None:
            self.pv.observe(ts, p.pv_kw, pv_curtailed)

    def _calibrate(self, start: datetime) -> None:
        """Once a day: the PV prior from the last `calibration_days` of history."""
        day = start.astimezone(self.tz).date()
        if day == self._calibrated:
            return
        self._calibrated = day
        first = datetime.combine(day - timedelta(days=self.calibration_days), datetime.min.time(),
                                 self.tz)
        until = datetime.combine(day, datetime.min.time(), self.tz)
        prior = self.pv.calibrate(self.history.series("pv", first, until), first)
        if prior is not None:
            log.info("PV forecast: the last %d days gave %.0f %% of clear sky", self.calibration_days,
                     100 * prior)

    def __call__(self, start: datetime, n: int, step_s: int) -> tuple[np.ndarray, np.ndarray]:
        self._calibrate(start)
        load = self.load.forecast(start, n, step_s)
        pv = self.pv.forecast(start, n, step_s)
        self.errors.issued(start, step_s, load, pv)
        return load, pv

    @property
    def source(self) -> dict:
        pv = "clear_sky" + ("+history" if self.pv.prior != 1.0 else "")
        return {"load": self.load.source,
                "pv": pv + ("+measured" if self.pv.ratio() is not None else "")}

"""The forecaster the daemon owns: PV and load forecasts from config and history, fed with
live measurements every cycle, with its errors tracked."""

from __future__ import annotations

import logging
import math
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from edge.config import Config, PvDevice
from edge.forecast.error import ForecastErrors
from edge.forecast.load import LoadForecaster
from edge.forecast.pv import Array, PvForecaster
from edge.image.balance import SitePower
from edge.image.image import ProcessImage, Quality
from edge.report.history import History
from edge.vpp.baseline import Calendar

log = logging.getLogger(__name__)


def pv_held_back(pvs: list[PvDevice], limits: dict[str, float], image: ProcessImage) -> bool:
    """An inverter ran at its limit when `image` was read, so the output was held below
    what the sun offered. A limit above the output holds nothing back (the inverter tracks
    its MPP): an export-limited site keeps limits set all day, and treating those as
    curtailment would keep the forecast from ever learning the sky. The limit is the one the
    inverter reports in the same image, else `limits` (the previous cycle's commands); an
    unknown one counts as 0 kW."""
    for p in pvs:
        state = image.devices[p.id]
        if state.quality is not Quality.GOOD or state.reading is None:
            return True
        limit = state.reading.values.get("limit_kw")
        if limit is None or not math.isfinite(limit) or state.value_quality("limit_kw") \
                is not Quality.GOOD:
            limit = limits.get(p.id, 0.0)
        if limit >= 0.98 * p.rated_kw:
            continue
        if state.reading.values.get("power_kw", 0.0) >= limit - max(1.0, 0.03 * p.rated_kw):
            return True
    return False


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

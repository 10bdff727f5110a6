"""Forecast error over the horizon, by hand."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge.forecast.error import ForecastErrors
from edge.report.history import INTERVAL_S, Interval

T0 = datetime(2026, 6, 22, tzinfo=UTC)


def test_mae_and_nmae_count_every_forecast_that_covered_the_interval():
    e = ForecastErrors()
    e.issued(T0, 900, np.array([10.0, 20.0]), np.array([0.0, 5.0]))
    e.issued(T0 + timedelta(seconds=900), 300, np.array([24.0, 24.0, 27.0]), np.array([5.0] * 3))
    e.metered(Interval(T0, load_kwh=3.0, pv_kwh=0.0, covered_s=INTERVAL_S))  # actual 12 kW load, 0 PV
    e.metered(Interval(T0 + timedelta(seconds=INTERVAL_S), load_kwh=5.0, pv_kwh=1.0,
                       covered_s=INTERVAL_S))  # 20, 4
    fig = e.figures()
    # load errors: |10-12|=2, |20-20|=0, |25-20|=5 -> MAE 7/3; mean actual (12+20+20)/3
    assert fig["load"]["n"] == 3
    assert fig["load"]["mae_kw"] == pytest.approx(7 / 3, abs=1e-3)
    assert fig["load"]["nmae"] == pytest.approx((7 / 3) / (52 / 3), abs=1e-4)
    assert fig["pv"]["mae_kw"] == pytest.approx((0 + 1 + 1) / 3, abs=1e-3)

"""Load forecast from similar days of the site's own history; no invented data."""

import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge.forecast.load import LoadForecaster, NotMeasured
from edge.report.history import INTERVAL_S, History, Interval

TZ = ZoneInfo("Asia/Shanghai")


def _fill(h: History, day: date, kw_per_quarter):
    start = datetime(day.year, day.month, day.day, tzinfo=TZ)
    for q, kw in enumerate(kw_per_quarter):
        h.put(Interval(start + timedelta(seconds=q * INTERVAL_S), load_kwh=kw / 4,
                       covered_s=INTERVAL_S))


def test_working_day_forecast_is_the_mean_of_recent_working_days(tmp_path):
    h = History(tmp_path / "h.sqlite")
    weekday_shape = np.where((np.arange(96) >= 32) & (np.arange(96) < 72), 100.0, 30.0)
    for back, scale in ((3, 1.0), (4, 1.2), (5, 0.8), (6, 1.0), (7, 1.0)):  # Mon 22 Jun 2026
        _fill(h, date(2026, 6, 22) - timedelta(days=back), weekday_shape * scale)
    for back in (1, 2):  # the weekend before: flat
        _fill(h, date(2026, 6, 22) - timedelta(days=back), np.full(96, 40.0))
    fc = LoadForecaster(h, TZ, similar_days=5, tau_h=2.0)
    start = datetime(2026, 6, 22, tzinfo=TZ)
    f = fc.forecast(start, 96, 900)
    assert f[40] == pytest.approx(100.0) and f[10] == pytest.approx(30.0)
    assert fc.source == "similar_days"
    saturday = fc.forecast(datetime(2026, 6, 27, tzinfo=TZ), 4, 900)
    assert saturday == pytest.approx([40.0] * 4)


def test_running_above_profile_shifts_the_near_term_only(tmp_path):
    h = History(tmp_path / "h.sqlite")
    for back in range(1, 8):
        d = date(2026, 6, 22) - timedelta(days=back)
        if d.weekday() < 5:
            _fill(h, d, np.full(96, 50.0))
    fc = LoadForecaster(h, TZ, similar_days=5, tau_h=1.0)
    for _ in range(45):  # 45 min at 70 kW against a 50 kW profile
        fc.observe(70.0, dt_s=60)
    f = fc.forecast(datetime(2026, 6, 22, 10, tzinfo=TZ), 48, 900)
    assert 65 < f[0] <= 70 and f[-1] == pytest.approx(50.0, abs=0.1)


def test_without_history_it_carries_the_measured_load_forward_and_says_so(tmp_path, caplog):
    fc = LoadForecaster(History(tmp_path / "h.sqlite"), TZ, similar_days=5, tau_h=2.0)
    fc.observe(42.0, dt_s=1.0)
    with caplog.at_level(logging.WARNING):
        f = fc.forecast(datetime(2026, 6, 22, 10, tzinfo=TZ), 8, 900)
    assert f == pytest.approx([42.0] * 8)
    assert fc.source == "persistence"
    assert "not enough history" in caplog.text


def test_before_any_measurement_it_says_so_instead_of_forecasting_nan(tmp_path, caplog):
    fc = LoadForecaster(History(tmp_path / "h.sqlite"), TZ, similar_days=5, tau_h=2.0)
    with caplog.at_level(logging.WARNING), pytest.raises(NotMeasured, match="^no load "
                                                         "measurement yet: no history"):
        fc.forecast(datetime(2026, 6, 22, 10, tzinfo=TZ), 8, 900)
    assert fc.source == "none" and not caplog.records


def test_a_holiday_is_forecast_from_non_working_days(tmp_path):
    from edge.vpp.baseline import Calendar

    h = History(tmp_path / "h.sqlite")
    for back in range(1, 8):
        d = date(2026, 10, 1) - timedelta(days=back)
        _fill(h, d, np.full(96, 90.0 if d.weekday() < 5 else 35.0))
    fc = LoadForecaster(h, TZ, similar_days=2, tau_h=2.0,
                        calendar=Calendar(holidays=frozenset({date(2026, 10, 1)})))
    national_day = fc.forecast(datetime(2026, 10, 1, tzinfo=TZ), 4, 900)  # a Thursday
    assert national_day == pytest.approx([35.0] * 4)

"""PV forecast: pvlib clear-sky on the arrays, corrected by recent measurements."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
import pytest

from edge.forecast.pv import Array, PvForecaster

SHANGHAI = (31.23, 121.47)


def _fc(lat_lon=SHANGHAI, rated=100.0, tau_h=2.0):
    return PvForecaster(*lat_lon, [Array(rated, 20, 180)], 0.85, 3.0, tau_h)


def test_clear_sky_is_zero_at_night_and_peaks_near_solar_noon():
    fc = _fc()
    day = datetime(2026, 6, 21, 16, 0, tzinfo=UTC)  # 00:00 in Shanghai
    p = fc.clear_sky_kw(day, 96, 900)
    assert p[:16].max() == 0 and p[-12:].max() == 0  # 00:00-04:00 and 21:00-24:00 local
    peak_local_h = np.argmax(p) / 4 + 0.125
    assert 11.0 <= peak_local_h <= 12.5  # solar noon at 121.47 E is ~11:55 local
    assert 70 < p.max() <= 100


def test_measured_output_scales_the_near_term_and_fades_to_clear_sky():
    fc = _fc(tau_h=2.0)
    t = datetime(2026, 6, 22, 2, 0, tzinfo=UTC)  # 10:00 local
    for i in range(60):
        ts = t + timedelta(minutes=i)
        clear = fc._clear_at_minute(ts)
        fc.observe(ts, 0.5 * clear, curtailed=False)  # a cloudy hour: half of clear sky
    assert fc.ratio() == pytest.approx(0.5, abs=0.02)
    start = t + timedelta(hours=1)
    f = fc.forecast(start, 24, 900)
    clear = fc.clear_sky_kw(start, 24, 900)
    assert f[0] / clear[0] == pytest.approx(0.5 + 0.5 * (1 - np.exp(-0.125 / 2)), abs=0.02)
    assert f[-1] / clear[-1] > 0.9 or clear[-1] == 0


def test_curtailed_output_does_not_teach_the_forecast_clouds():
    fc = _fc()
    t = datetime(2026, 6, 22, 2, 0, tzinfo=UTC)
    for i in range(30):
        fc.observe(t + timedelta(minutes=i), 5.0, curtailed=True)
    assert fc.ratio() is None
    f = fc.forecast(t, 4, 900)
    assert np.allclose(f, fc.clear_sky_kw(t, 4, 900))


def test_output_held_at_a_limit_above_the_prior_raises_the_forecast():
    """An export-limited site holds PV back for hours; output at the limit still proves at
    least that much sun, so a too-low history prior is corrected upwards, never down."""
    fc = _fc()
    fc.prior = 0.6  # a cloudy week in the history
    t = datetime(2026, 6, 22, 2, 0, tzinfo=UTC)
    for i in range(30):
        ts = t + timedelta(minutes=i)
        fc.observe(ts, 0.8 * fc._clear_at_minute(ts), curtailed=True)
    assert fc.ratio() == pytest.approx(0.8, abs=0.01)
    for i in range(30, 60):  # free minutes at 0.7: the window holds at least (0.8 + 0.7) / 2
        ts = t + timedelta(minutes=i)
        fc.observe(ts, 0.7 * fc._clear_at_minute(ts), curtailed=False)
    assert fc.ratio() == pytest.approx(0.75, abs=0.01)


def test_on_a_bundled_tmy_year_the_measured_correction_beats_plain_clear_sky():
    """Weather data pvlib ships (TMY3, Greensboro NC): 'actual' PV from the measured
    irradiance; the 1-hour-ahead forecast with the correction must err less than the plain
    clear-sky shape over a month with clouds."""
    tmy_file = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"
    data, meta = pvlib.iotools.read_tmy3(tmy_file, coerce_year=2026, map_variables=True)
    lat, lon = meta["latitude"], meta["longitude"]
    fc = _fc((lat, lon), rated=100.0)
    loc = pvlib.location.Location(lat, lon)
    month = data.loc["2026-04-01":"2026-04-21"].tz_convert("UTC")
    sun = loc.get_solarposition(month.index - pd.Timedelta(minutes=30))  # TMY: hour-ending
    poa = pvlib.irradiance.get_total_irradiance(
        20, 180, sun["apparent_zenith"], sun["azimuth"], month["dni"], month["ghi"],
        month["dhi"])["poa_global"].fillna(0).to_numpy()
    actual = np.minimum(100.0, 100.0 * poa / 1000 * 0.85)
    times = list(month.index - pd.Timedelta(hours=1))  # start of each hour
    err_corrected, err_clear = [], []
    for i in range(len(times) - 1):
        start = times[i].to_pydatetime()
        for k in range(4):  # four 15-min observations of the hour just ended
            fc.observe(start + timedelta(minutes=15 * k + 7), actual[i], curtailed=False)
        nxt = times[i + 1].to_pydatetime()
        clear = fc.clear_sky_kw(nxt, 1, 3600)[0]
        if clear < 10:
            continue
        err_corrected.append(abs(fc.forecast(nxt, 1, 3600)[0] - actual[i + 1]))
        err_clear.append(abs(clear - actual[i + 1]))
    assert len(err_clear) > 200
    assert np.mean(err_corrected) < 0.8 * np.mean(err_clear), (np.mean(err_corrected), np.mean(err_clear))


def test_history_sets_where_the_forecast_settles_beyond_the_near_term():
    """A site that made 80 % of clear sky all last week (derating, haze) is forecast at
    80 % tomorrow, and a cloudy hour now still pulls only the near term down."""
    fc = _fc(tau_h=1.0)
    week = datetime(2026, 6, 14, 16, tzinfo=UTC)  # local midnight, 7 days before the 21st
    measured = 0.8 * fc.clear_sky_kw(week, 7 * 96, 900)
    measured[96:192] = np.nan  # a day the meter was down does not count
    assert fc.calibrate(measured, week) == pytest.approx(0.8)
    day = datetime(2026, 6, 21, 16, tzinfo=UTC)
    f = fc.forecast(day, 96, 900)
    assert f.sum() == pytest.approx(0.8 * fc.clear_sky_kw(day, 96, 900).sum())
    t = datetime(2026, 6, 22, 2, 0, tzinfo=UTC)
    for i in range(60):
        ts = t + timedelta(minutes=i)
        fc.observe(ts, 0.4 * fc._clear_at_minute(ts), curtailed=False)
    f = fc.forecast(t + timedelta(hours=1), 16, 900)
    clear = fc.clear_sky_kw(t + timedelta(hours=1), 16, 900)
    assert f[0] / clear[0] < 0.5 and f[-1] / clear[-1] == pytest.approx(0.8, abs=0.02)


def test_too_little_history_leaves_the_prior_alone():
    fc = _fc()
    assert fc.calibrate(np.full(50, 10.0), datetime(2026, 6, 14, 16, tzinfo=UTC)) is None
    assert fc.prior == 1.0

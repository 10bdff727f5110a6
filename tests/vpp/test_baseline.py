"""DR baselines against hand-computed fixtures: the three methods of docs/domain.md §4, the
working-day calendar (weekends, holidays, 调休, event days), incomplete data, the D-2..D-12
window, fallbacks marked degraded, and the mapping of an event onto a real SQLite history."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge.report.history import History, Interval
from edge.vpp.baseline import (
    BaselineError,
    BaselineNotYet,
    Calendar,
    avg_recent,
    baseline,
    event_intervals,
    high_of_window,
    realtime_reference,
)

SH = ZoneInfo("Asia/Shanghai")
D = date(2026, 6, 22)  # a Monday; 20/21 June are the weekend before


def flat(v: float) -> np.ndarray:
    return np.full(96, float(v))


def june(*days: int) -> list[date]:
    return [date(2026, 6, d) for d in days]


def weekday_profiles(first: int = 1, last: int = 21) -> dict[date, np.ndarray]:
    """Each weekday of June is worth its day of month; weekends 1000 (would show at once)."""
    out = {}
    for d in june(*range(first, last + 1)):
        out[d] = flat(1000 if d.weekday() >= 5 else d.day)
    return out


# -- (a) avg5 --------------------------------------------------------------------------------
def test_avg5_averages_the_five_most_recent_working_days_skipping_the_weekend():
    pick = avg_recent(weekday_profiles(), D, Calendar())
    assert pick.days == tuple(june(19, 18, 17, 16, 15))
    assert pick.profile[0] == pytest.approx((19 + 18 + 17 + 16 + 15) / 5)  # 17.0
    assert not pick.degraded


def test_avg5_skips_holidays_and_counts_a_worked_saturday():
    profiles = weekday_profiles()
    profiles[date(2026, 6, 20)] = flat(20)  # Saturday worked in exchange (调休)
    cal = Calendar(holidays=frozenset(june(19)), working_days=frozenset(june(20)))
    pick = avg_recent(profiles, D, cal)
    assert pick.days == tuple(june(20, 18, 17, 16, 15))
    assert pick.profile[50] == pytest.approx((20 + 18 + 17 + 16 + 15) / 5)  # 17.2


def test_avg5_leaves_out_event_days_as_not_normal():
    cal = Calendar(excluded=frozenset(june(17)))
    pick = avg_recent(weekday_profiles(), D, cal)
    assert pick.days == tuple(june(19, 18, 16, 15, 12))
    assert pick.profile[0] == pytest.approx((19 + 18 + 16 + 15 + 12) / 5)  # 16.0


def test_avg5_skips_a_day_missing_an_event_interval_but_not_one_missing_elsewhere():
    profiles = weekday_profiles()
    profiles[date(2026, 6, 18)][67] = np.nan  # inside the event (slots 67, 68)
    profiles[date(2026, 6, 17)][10] = np.nan  # outside it: the day still counts
    pick = avg_recent(profiles, D, Calendar(), slots=[67, 68])
    assert pick.days == tuple(june(19, 17, 16, 15, 12))
    assert pick.profile[67] == pytest.approx((19 + 17 + 16 + 15 + 12) / 5)  # 15.8


def test_avg5_profiles_average_per_interval():
    profiles = {d: np.arange(96, dtype=float) * (i + 1) for i, d in enumerate(june(15, 16, 17, 18, 19))}
    pick = avg_recent(profiles, D, Calendar())
    # interval k: k * (1 + 2 + 3 + 4 + 5) / 5 = 3k
    np.testing.assert_allclose(pick.profile, 3.0 * np.arange(96))


def test_avg5_with_fewer_days_uses_them_and_says_degraded():
    profiles = {d: p for d, p in weekday_profiles().items() if d >= date(2026, 6, 17)}
    pick = avg_recent(profiles, D, Calendar())
    assert pick.days == tuple(june(19, 18, 17))
    assert pick.profile[0] == pytest.approx(18.0)
    assert pick.degraded
    assert "only 3 of 5" in pick.note


def test_avg5_without_any_eligible_day_raises():
    weekend_only = {date(2026, 6, 20): flat(5), date(2026, 6, 21): flat(5)}
    with pytest.raises(BaselineError, match="no normal working day"):
        avg_recent(weekend_only, D, Calendar())


# -- (c) high5of10 -----------------------------------------------------------------------------
PEAKS = {19: 500, 18: 100, 17: 50, 16: 90, 15: 40, 12: 80, 11: 30, 10: 70, 9: 20, 8: 10,
         5: 60, 4: 400}


def peak_profiles() -> dict[date, np.ndarray]:
    """Base level = day of month, one peak interval (slot 60) of PEAKS[day]."""
    out = weekday_profiles()
    for day, peak in PEAKS.items():
        p = flat(day)
        p[60] = peak
        out[date(2026, 6, day)] = p
    return out


def test_high5of10_takes_the_five_highest_peaks_of_the_ten_days_before_d_minus_1():
    pick = high_of_window(peak_profiles(), D, Calendar())
    # window: 18 17 16 15 12 11 10 9 8 5 (19 June is D-1 and skipped; 4 June is D-12 and out)
    assert set(pick.days) == set(june(18, 16, 12, 10, 5))
    assert pick.profile[60] == pytest.approx((100 + 90 + 80 + 70 + 60) / 5)  # 80
    assert pick.profile[0] == pytest.approx((18 + 16 + 12 + 10 + 5) / 5)  # 12.2
    assert not pick.degraded


def test_high5of10_window_moves_back_past_a_holiday():
    pick = high_of_window(peak_profiles(), D, Calendar(holidays=frozenset(june(12))))
    # window: 18 17 16 15 11 10 9 8 5 4 -> highest: 4 (400), 18, 16, 10, 5
    assert set(pick.days) == set(june(4, 18, 16, 10, 5))
    assert pick.profile[60] == pytest.approx((400 + 100 + 90 + 70 + 60) / 5)  # 144
    assert pick.profile[1] == pytest.approx((4 + 18 + 16 + 10 + 5) / 5)  # 10.6


def test_high5of10_needs_whole_days_and_flags_a_short_window():
    profiles = {d: p for d, p in peak_profiles().items() if d >= date(2026, 6, 15)}
    profiles[date(2026, 6, 17)][3] = np.nan  # daily maximum unknown: not eligible
    pick = high_of_window(profiles, D, Calendar())
    assert set(pick.days) == set(june(18, 16, 15))
    assert pick.profile[60] == pytest.approx((100 + 90 + 40) / 3)
    assert pick.degraded
    assert "only 3 of 10" in pick.note and "averaged 3 instead of 5" in pick.note


# -- (b) realtime and the history ---------------------------------------------------------------
def local(day: date, hh: int, mm: int) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=SH)


def put(h: History, t: datetime, kw: float) -> None:
    h.put(Interval(t.astimezone(UTC), import_kwh=kw * 0.25, covered_s=900))


def test_realtime_reference_is_the_quarter_hour_before_the_response():
    start = local(D, 16, 45)
    assert realtime_reference(start) == (local(D, 16, 30), local(D, 16, 45))
    # with a 10-min ramp-in the response begins 16:35: the last complete quarter is 16:15-16:30
    assert realtime_reference(start, 600) == (local(D, 16, 15), local(D, 16, 30))


@pytest.fixture
def history(tmp_path):
    h = History(tmp_path / "history.sqlite")
    yield h
    h.close()


def test_realtime_baseline_from_the_history(history):
    put(history, local(D, 16, 15), 48.0)
    put(history, local(D, 16, 30), 52.0)
    b = baseline("realtime", history, local(D, 16, 45), local(D, 17, 30), SH, Calendar())
    assert b.method == "realtime" and not b.degraded
    np.testing.assert_allclose(b.kw, [52.0, 52.0, 52.0])
    assert b.reference == (local(D, 16, 30), local(D, 16, 45))
    ramped = baseline("realtime", history, local(D, 16, 45), local(D, 17, 30), SH, Calendar(),
                      ramp_in_s=600)
    np.testing.assert_allclose(ramped.kw, [48.0, 48.0, 48.0])


def test_realtime_reference_missing_uses_an_earlier_interval_and_says_so(history):
    put(history, local(D, 16, 0), 47.0)
    b = baseline("realtime", history, local(D, 16, 45), local(D, 17, 0), SH, Calendar())
    assert b.kw.tolist() == [47.0]
    assert b.degraded and "reference interval missing" in b.note
    with pytest.raises(BaselineError, match="no import data"):
        baseline("realtime", history, local(D, 20, 0), local(D, 20, 15), SH, Calendar())


def test_realtime_reference_in_the_future_is_not_yet(history):
    with pytest.raises(BaselineNotYet):
        baseline("realtime", history, local(D, 16, 45), local(D, 17, 0), SH, Calendar(),
                 now=local(D, 16, 40))


def test_avg5_from_the_history_maps_the_event_onto_local_intervals(history):
    for d in june(*range(8, 22)):
        for hh, mm in ((16, 45), (17, 0)):
            level = 1000 if d.weekday() >= 5 else d.day + (0.5 if mm == 0 else 0.0)
            put(history, local(d, hh, mm), level)
    b = baseline("avg5", history, local(D, 16, 45), local(D, 17, 15), SH, Calendar())
    assert b.method == "avg5" and b.days == tuple(sorted(june(15, 16, 17, 18, 19)))
    np.testing.assert_allclose(b.kw, [17.0, 17.5])
    assert b.starts == (local(D, 16, 45).astimezone(UTC), local(D, 17, 0).astimezone(UTC))


def test_profile_method_without_days_falls_back_to_realtime_marked_degraded(history):
    put(history, local(D, 16, 30), 55.0)  # only today's data exists
    b = baseline("high5of10", history, local(D, 16, 45), local(D, 17, 0), SH, Calendar())
    assert b.method == "realtime" and b.kw.tolist() == [55.0]
    assert b.degraded and "fell back to realtime" in b.note


def test_unknown_method_names_the_setting(history):
    with pytest.raises(ValueError, match="dr.baseline"):
        baseline("avg10", history, local(D, 16, 45), local(D, 17, 0), SH, Calendar())


def test_event_intervals_weigh_partial_quarter_hours():
    starts, hours = event_intervals(local(D, 16, 50), local(D, 17, 20))
    assert starts == [local(D, 16, 45).astimezone(UTC), local(D, 17, 0).astimezone(UTC),
                      local(D, 17, 15).astimezone(UTC)]
    np.testing.assert_allclose(hours, [10 / 60, 15 / 60, 5 / 60])
    with pytest.raises(ValueError, match="not after its start"):
        event_intervals(local(D, 17, 0), local(D, 17, 0) - timedelta(minutes=1))


def test_calendar_from_config():
    from edge.config import DrConfig

    cal = Calendar.of(DrConfig(holidays=[date(2026, 10, 1)], working_days=[date(2026, 9, 27)]),
                      excluded=[date(2026, 9, 28)])
    assert not cal.is_working(date(2026, 10, 1))  # a Thursday holiday
    assert cal.is_working(date(2026, 9, 27))  # a Sunday worked
    assert cal.is_working(date(2026, 9, 28)) and not cal.is_normal(date(2026, 9, 28))

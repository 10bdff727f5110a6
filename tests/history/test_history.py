"""The 15-min history: energy integrated from cycles, stored in SQLite, read back as series."""

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge.image.balance import SitePower
from edge.report.history import INTERVAL_S, Accumulator, History, Interval, interval_start

T0 = datetime(2026, 6, 22, 0, 0, tzinfo=UTC)


def _run(acc, start, seconds, step, power):
    closed = []
    t = start
    while t < start + timedelta(seconds=seconds):
        t += timedelta(seconds=step)
        iv = acc.add(t, step, power)
        if iv:
            closed.append(iv)
    return closed


def test_constant_import_integrates_to_kwh_per_quarter_hour():
    acc = Accumulator(co2_kg_per_import_kwh=0.5)
    closed = _run(acc, T0, 2 * INTERVAL_S + 10, 1.0, SitePower(40.0, 0.0, 0.0, 40.0))
    assert len(closed) == 2
    # 40 kW for 15 min = 10 kWh
    assert closed[0].import_kwh == pytest.approx(10.0)
    assert closed[1].import_kwh == pytest.approx(10.0)
    assert closed[1].load_kwh == pytest.approx(10.0)
    assert closed[1].covered_s == INTERVAL_S
    assert acc.counters["import_kwh"] == pytest.approx(40 * (2 * INTERVAL_S + 10) / 3600)
    assert acc.counters["co2_kg"] == pytest.approx(0.5 * acc.counters["import_kwh"])


def test_export_and_battery_split_by_sign():
    acc = Accumulator()
    closed = _run(acc, T0, INTERVAL_S + 1, 1.0, SitePower(-20.0, 60.0, -15.0, 25.0))
    iv = closed[0]
    assert iv.export_kwh == pytest.approx(5.0) and iv.import_kwh == 0
    assert iv.charge_kwh == pytest.approx(3.75) and iv.discharge_kwh == 0
    assert iv.mean_kw("grid") == pytest.approx(-20.0)


def test_stale_values_and_gaps_are_not_integrated():
    acc = Accumulator(max_dt_s=60)
    acc.add(T0 + timedelta(seconds=1), 1.0, SitePower(10.0, 0, 0, 10))
    acc.add(T0 + timedelta(seconds=61), 60.0, SitePower(None, None, None, None))
    acc.add(T0 + timedelta(seconds=500), 440.0, SitePower(10.0, 0, 0, 10))  # a gap: left out
    iv = acc.add(T0 + timedelta(seconds=INTERVAL_S + 2), 1.0, SitePower(10.0, 0, 0, 10))
    assert iv.covered_s == pytest.approx(1.0)  # only the first second was measured
    assert iv.import_kwh == pytest.approx(10 / 3600)


def test_history_round_trips_intervals_and_counters(tmp_path):
    h = History(tmp_path / "h.sqlite")
    for i in range(4):
        h.put(Interval(T0 + timedelta(seconds=i * INTERVAL_S), import_kwh=i + 1.0,
                       covered_s=INTERVAL_S), {"import_kwh": 10.0 + i})
    h.close()
    h = History(tmp_path / "h.sqlite")
    s = h.series("import", T0, T0 + timedelta(hours=1, minutes=15))
    assert np.allclose(s[:4], [4.0, 8.0, 12.0, 16.0]) and math.isnan(s[4])
    assert h.counters() == {"import_kwh": 13.0}
    assert h.prune(T0 + timedelta(minutes=30)) == 2
    assert len(h.intervals(T0, T0 + timedelta(hours=2))) == 2


def test_poorly_covered_interval_reads_as_missing(tmp_path):
    h = History(tmp_path / "h.sqlite")
    h.put(Interval(T0, import_kwh=1.0, covered_s=100))
    assert math.isnan(h.series("import", T0, T0 + timedelta(minutes=15))[0])


def test_local_day_has_96_quarters_starting_at_local_midnight(tmp_path):
    tz = ZoneInfo("Asia/Shanghai")
    h = History(tmp_path / "h.sqlite")
    local_midnight = datetime(2026, 6, 22, tzinfo=tz)
    h.put(Interval(local_midnight, load_kwh=5.0, covered_s=INTERVAL_S))
    day = h.day("load", date(2026, 6, 22), tz)
    assert day.shape == (96,) and day[0] == pytest.approx(20.0)
    assert interval_start(local_midnight) == datetime(2026, 6, 21, 16, tzinfo=UTC)


def test_a_gap_inside_an_interval_is_not_a_reduction():
    iv = Interval(T0, import_kwh=12.5, covered_s=450)  # 100 kW for the 7.5 min measured
    assert iv.mean_kw("import") == pytest.approx(100.0)
    assert math.isnan(Interval(T0).mean_kw("load"))


def test_a_stale_inverter_leaves_pv_and_load_unmeasured_while_the_grid_is_counted():
    acc = Accumulator()
    _run(acc, T0, 450, 1.0, SitePower(40.0, 20.0, 0.0, 60.0))
    iv = _run(acc, T0 + timedelta(seconds=450), 451, 1.0, SitePower(40.0, None, 0.0, None))[0]
    assert iv.covered_s == INTERVAL_S and iv.covered_pv_s == pytest.approx(450)
    assert iv.mean_kw("pv") == pytest.approx(20.0) and iv.mean_kw("load") == pytest.approx(60.0)
    assert iv.mean_kw("import") == pytest.approx(40.0)


def test_a_restart_mid_interval_adds_the_rest_to_the_part_saved_on_the_way_down(tmp_path):
    h = History(tmp_path / "h.sqlite")
    first = Accumulator()
    _run(first, T0, 300, 1.0, SitePower(60.0, 0, 0, 60))
    h.put(first.current(), first.counters, merge=True)  # daemon stops at 00:05
    second = Accumulator(h.counters())
    closed = _run(second, T0 + timedelta(seconds=300), 601, 1.0, SitePower(60.0, 0, 0, 60))
    h.put(closed[0], second.counters, merge=True)
    (iv,) = h.intervals(T0, T0 + timedelta(minutes=15))
    assert iv.import_kwh == pytest.approx(15.0) and iv.covered_s == INTERVAL_S
    assert h.counters()["import_kwh"] >= 15.0


def test_saved_counters_resume_at_or_above_what_was_published(tmp_path):
    h = History(tmp_path / "h.sqlite")
    acc = Accumulator()
    _run(acc, T0, 100, 1.0, SitePower(36.0, 0, 0, 36))
    h.save_counters(acc.counters)  # saved before each telemetry publish
    published = acc.counters["import_kwh"]
    h.close()
    again = Accumulator(History(tmp_path / "h.sqlite").counters())
    assert again.counters["import_kwh"] == pytest.approx(published) and published > 0.99


def test_a_file_from_before_the_ev_term_gains_it_and_keeps_its_intervals(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE interval (start TEXT PRIMARY KEY, import_kwh REAL NOT NULL, "
               "export_kwh REAL NOT NULL, pv_kwh REAL NOT NULL, load_kwh REAL NOT NULL, "
               "charge_kwh REAL NOT NULL, discharge_kwh REAL NOT NULL, covered_s REAL NOT NULL, "
               "covered_load_s REAL, covered_pv_s REAL, covered_bess_s REAL)")
    db.execute("INSERT INTO interval VALUES (?, 1, 0, 0, 1, 0, 0, 900, NULL, NULL, NULL)",
               (T0.isoformat(),))
    db.commit()
    db.close()
    h = History(path)
    (iv,) = h.intervals(T0, T0 + timedelta(hours=1))
    assert (iv.import_kwh, iv.ev_kwh) == (1.0, 0.0)
    h.put(Interval(T0 + timedelta(seconds=INTERVAL_S), import_kwh=2.0, ev_kwh=1.5, covered_s=900))
    assert h.intervals(T0, T0 + timedelta(hours=1))[1].ev_kwh == 1.5

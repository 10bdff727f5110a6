"""The zone log the model fit learns from: per HVAC unit and quarter hour, the zone
temperature read at the start and the outdoor temperature and electric power averaged over
the interval; what was not measured is stored empty, never guessed; rows survive in the
history file and are pruned with it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from drivers.base import Quality, Reading
from edge.image.image import DeviceState, ProcessImage
from edge.report.history import History
from edge.report.zonelog import ZoneLog, ZoneRecorder

T0 = datetime(2026, 7, 1, 6, 0, tzinfo=UTC)


def image(t: datetime, zone: float, kw: float, out: float = 30.0, dt: float = 10.0,
          quality: Quality = Quality.GOOD) -> ProcessImage:
    values = {"power_kw": kw, "zone_temp_c": zone, "outdoor_temp_c": out, "rated_kw": 20.0}
    return ProcessImage(t, dt, {"ahu": DeviceState(Reading("ahu", values), quality, 0)})


def run(recorder, start: datetime, seconds: int, zone=lambda s: 24.0, kw=lambda s: 10.0,
        quality=lambda s: Quality.GOOD) -> list:
    rows = []
    for s in range(10, seconds + 1, 10):
        rows += recorder.add(image(start + timedelta(seconds=s), zone(s), kw(s),
                                   quality=quality(s)))
    return rows


def test_an_interval_holds_the_zone_at_its_start_and_the_means_over_it():
    rec = ZoneRecorder(["ahu"])
    rec.add(image(T0, 24.0, 0.0, dt=0.0))  # the first image: nothing to integrate yet
    rows = run(rec, T0, 1800, zone=lambda s: 24.0 + s / 900, kw=lambda s: 5.0 if s <= 450 else 15.0)
    assert [r.start for r in rows] == [T0, T0 + timedelta(minutes=15)]
    first, second = rows
    assert first.zone_c == 24.0 and second.zone_c == pytest.approx(25.0)
    assert first.power_kw == pytest.approx(10.0) and first.outdoor_c == pytest.approx(30.0)
    assert first.covered_s == 900


def test_what_was_not_measured_is_stored_empty():
    rec = ZoneRecorder(["ahu"])
    # Stale for the first 5 minutes: no zone reading at the start, two thirds covered.
    rows = run(rec, T0, 910, quality=lambda s: Quality.STALE if s <= 300 else Quality.GOOD)
    assert len(rows) == 1 and math.isnan(rows[0].zone_c)
    assert math.isnan(rows[0].power_kw) and math.isnan(rows[0].outdoor_c)
    assert rows[0].covered_s == pytest.approx(600)


def test_rows_go_to_the_history_file_and_are_pruned_with_it(tmp_path):
    history = History(tmp_path / "h.sqlite")
    log = ZoneLog(history.db)
    rec = ZoneRecorder(["ahu"])
    rec.add(image(T0, 24.0, 0.0, dt=0.0))
    log.put(run(rec, T0, 3 * 900 + 10))
    history.close()
    times, zone, out, kw = ZoneLog(History.reader(tmp_path / "h.sqlite").db).series(
        "ahu", T0 - timedelta(minutes=15), T0 + timedelta(hours=1))
    assert times[0] == T0 - timedelta(minutes=15) and len(times) == 5
    assert math.isnan(zone[0]) and list(zone[1:4]) == [24.0] * 3 and math.isnan(zone[4])
    assert list(kw[1:4]) == pytest.approx([10.0] * 3)
    history = History(tmp_path / "h.sqlite")
    assert ZoneLog(history.db).prune(T0 + timedelta(minutes=15)) == 1


def test_a_file_from_before_the_zone_log_reads_as_empty(tmp_path):
    History(tmp_path / "h.sqlite").close()
    _, zone, *_ = ZoneLog(History.reader(tmp_path / "h.sqlite").db, create=False).series(
        "ahu", T0, T0 + timedelta(hours=1))
    assert len(zone) == 4 and all(math.isnan(z) for z in zone)

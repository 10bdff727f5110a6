"""The day so far at the configured tariff (the dashboard's tiles) and the tariff's periods
as absolute spans (the chart's shading)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from edge import config as config_mod
from edge.report.bill import day_so_far, tariff_spans
from edge.report.history import Interval

ROOT = Path(__file__).resolve().parents[2]
SH = ZoneInfo("Asia/Shanghai")


def demo(**tariff) -> config_mod.Config:
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    data["tariff"].update(tariff)
    data["carbon"] = {"factor_kg_per_kwh": 0.5}
    return config_mod.parse(data)


def test_each_quarter_hour_is_billed_at_its_own_period_and_the_shares_follow():
    cfg = demo()
    day = datetime(2026, 6, 22, tzinfo=SH)
    valley = Interval(day.replace(hour=7, minute=45).astimezone(UTC), import_kwh=10.0,
                      load_kwh=10.0, covered_s=900)
    peak = Interval(day.replace(hour=12).astimezone(UTC), import_kwh=2.0, export_kwh=4.0,
                    pv_kwh=20.0, load_kwh=14.0, ev_kwh=4.0, covered_s=600)
    doc = day_so_far(cfg, [valley, peak], SH, day, day + timedelta(days=1))
    assert doc["import_cost"] == pytest.approx(10 * 0.31 + 2 * 1.12)
    assert doc["export_revenue"] == pytest.approx(4 * 0.39)
    assert doc["bill"] == pytest.approx(10 * 0.31 + 2 * 1.12 - 4 * 0.39)
    assert (doc["import_kwh"], doc["export_kwh"], doc["pv_kwh"]) == (12.0, 4.0, 20.0)
    assert doc["consumed_kwh"] == 28.0, "the building and its EVs"
    assert doc["self_consumption_pct"] == 80.0, "16 of the 20 PV kWh stayed on site"
    assert doc["co2_kg"] == pytest.approx(12 * 0.5), "grid import at the factor"
    assert doc["green_share"] == pytest.approx(1 - 12 / 28, abs=1e-4)
    assert doc["covered_s"] == 1500.0


def test_a_day_with_nothing_measured_has_no_shares_rather_than_zero_percent():
    cfg = demo()
    day = datetime(2026, 6, 22, tzinfo=SH)
    doc = day_so_far(cfg, [], SH, day, day + timedelta(days=1))
    assert doc["self_consumption_pct"] is None and doc["green_share"] is None
    assert doc["bill"] == 0.0 and doc["import_kwh"] == 0.0


def test_spans_cover_the_window_merge_across_midnight_and_start_at_its_edge():
    cfg = demo()  # valley 00-08, flat 08-10, peak 10-15, flat 15-18, peak 18-21, flat 21-24
    start = datetime(2026, 6, 22, 9, 30, tzinfo=SH)
    spans = tariff_spans(cfg.tariff, SH, start, start + timedelta(days=1))
    local = [(datetime.fromisoformat(s["start"]).astimezone(SH).strftime("%d %H:%M"),
              datetime.fromisoformat(s["end"]).astimezone(SH).strftime("%d %H:%M"), s["name"])
             for s in spans]
    assert local == [
        ("22 09:30", "22 10:00", "flat"), ("22 10:00", "22 15:00", "peak"),
        ("22 15:00", "22 18:00", "flat"), ("22 18:00", "22 21:00", "peak"),
        ("22 21:00", "23 00:00", "flat"), ("23 00:00", "23 08:00", "valley"),
        ("23 08:00", "23 09:30", "flat")]
    assert all(a["end"] == b["start"] for a, b in zip(spans, spans[1:])), "no gap, no overlap"


def test_a_period_across_midnight_is_one_span_and_a_dst_day_keeps_wall_clock_hours():
    periods = [{"name": "night", "start": "22:00", "end": "06:00", "price": 0.2},
               {"name": "day", "start": "06:00", "end": "22:00", "price": 0.5}]
    cfg = demo(periods=periods)
    berlin = ZoneInfo("Europe/Berlin")  # clocks go forward on 29 March 2026 at 02:00
    start = datetime(2026, 3, 28, 12, 0, tzinfo=berlin)
    spans = tariff_spans(cfg.tariff, berlin, start, start + timedelta(hours=24))
    night = next(s for s in spans if s["name"] == "night")
    a = datetime.fromisoformat(night["start"]).astimezone(berlin)
    b = datetime.fromisoformat(night["end"]).astimezone(berlin)
    assert (a.hour, b.hour, b.day) == (22, 6, 29)
    assert b.astimezone(UTC) - a.astimezone(UTC) == timedelta(hours=7), "a short night"
    assert spans[-1]["end"] == "2026-03-29T10:00:00Z"  # 12:00 summer time, the window end

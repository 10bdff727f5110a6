"""Carbon accounting against a hand calculation (docs/domain.md §6)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge.config import CarbonConfig
from edge.report import carbon
from edge.report.history import INTERVAL_S, History, Interval

T0 = datetime(2026, 6, 22, 0, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_emissions_count_grid_import_only_and_pv_self_consumption_is_green():
    cfg = CarbonConfig(factor_kg_per_kwh=0.5366)
    # 10 kWh imported, 30 kWh consumed (the rest from PV); 5 kWh exported is not claimed.
    iv = Interval(T0, import_kwh=10.0, export_kwh=5.0, pv_kwh=25.0, load_kwh=30.0)
    c = carbon.account([iv], cfg, T0, T0)
    assert c.co2_kg == pytest.approx(5.366)
    assert c.green_share == pytest.approx(1 - 10 / 30)


def test_bought_green_power_uses_the_residual_factor_for_the_rest():
    cfg = CarbonConfig(green_import_share=0.3, residual_factor_kg_per_kwh=0.6)
    iv = Interval(T0, import_kwh=100.0, load_kwh=100.0)
    c = carbon.account([iv], cfg, T0, T0)
    assert c.co2_kg == pytest.approx(100 * 0.7 * 0.6)  # 42 kg, not 53.66 and not 60
    assert c.green_share == pytest.approx(0.3)


def test_green_share_without_residual_factor_is_a_config_error():
    with pytest.raises(ValueError, match="residual_factor_kg_per_kwh"):
        CarbonConfig(green_import_share=0.2)


def test_report_gives_interval_day_and_month_from_stored_intervals(tmp_path):
    tz = ZoneInfo("Asia/Shanghai")
    h = History(tmp_path / "h.sqlite")
    yesterday = T0 - timedelta(days=1)
    h.put(Interval(yesterday, import_kwh=8.0, load_kwh=8.0, covered_s=INTERVAL_S))
    for i in range(3):
        h.put(Interval(T0 + timedelta(seconds=i * INTERVAL_S), import_kwh=2.0, load_kwh=4.0,
                       covered_s=INTERVAL_S))
    last = h.intervals(T0, T0 + timedelta(hours=1))[-1]
    msg = carbon.report(h, CarbonConfig(factor_kg_per_kwh=0.5), last, tz)
    assert msg["interval"]["co2_kg"] == pytest.approx(1.0)
    assert msg["day"]["co2_kg"] == pytest.approx(3.0) and msg["day"]["green_share"] == 0.5
    assert msg["month"]["co2_kg"] == pytest.approx(7.0)  # June so far, yesterday included
    assert msg["day"]["start"] == T0.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert msg["factor"]["year"] == 2022 and msg["factor"]["version"] == "average"

"""Physics of the HIL: deterministic, hand-checkable, and the battery protects itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hil.physics import Battery, clear_sky_kw, load_kw, office_load_kw

SH_LAT, SH_LON = 31.23, 121.47
SH = timedelta(hours=8)


def _utc(local_iso: str) -> datetime:
    """Shanghai local wall time → aware UTC."""
    return (datetime.fromisoformat(local_iso) - SH).replace(tzinfo=UTC)


def test_same_inputs_give_same_outputs() -> None:
    t = _utc("2026-06-22T10:17:03")
    assert clear_sky_kw(t, SH_LAT, SH_LON, 100) == clear_sky_kw(t, SH_LAT, SH_LON, 100)
    local = datetime.fromisoformat("2026-06-22T10:17:03")
    assert office_load_kw(local, 25, 95) == office_load_kw(local, 25, 95)
    runs = []
    for _ in range(2):
        b = Battery(100, 50, 50, soc_pct=40)
        runs.append([b.step(p, 7.0) for p in (30, -20, 60, -60, 0)] + [b.soc_pct])
    assert runs[0] == runs[1]


def test_clear_sky_is_zero_at_night_and_peaks_near_solar_noon() -> None:
    day = [_utc("2026-06-22T00:00:00") + timedelta(minutes=m) for m in range(1440)]
    kw = [clear_sky_kw(t, SH_LAT, SH_LON, 120) for t in day]
    assert kw[0] == 0 and kw[23 * 60] == 0  # midnight, 23:00 local
    best = max(range(1440), key=kw.__getitem__)
    # Solar noon in Shanghai (121.47 E, UTC+8) is about 11:54 local in late June.
    assert 11 * 60 + 30 <= best <= 12 * 60 + 20
    assert kw[best] == pytest.approx(120, rel=0.01)
    winter = clear_sky_kw(_utc("2026-12-22T11:54:00"), SH_LAT, SH_LON, 120)
    assert 30 < winter < 0.8 * kw[best]


def test_office_load_follows_office_hours() -> None:
    base, day = 20.0, 100.0
    at = lambda iso: office_load_kw(datetime.fromisoformat(iso), base, day)  # noqa: E731
    assert at("2026-06-22T03:00") == pytest.approx(base, rel=0.03)  # Monday night
    assert at("2026-06-22T10:30") == pytest.approx(day, rel=0.03)
    assert at("2026-06-22T12:30") < 0.9 * day  # lunch dip
    assert base * 1.05 < at("2026-06-22T08:15") < day * 0.95  # morning ramp
    assert at("2026-06-22T21:00") == pytest.approx(base, rel=0.03)
    assert at("2026-06-27T11:00") == pytest.approx(1.2 * base, rel=0.03)  # Saturday
    assert load_kw("flat", datetime.fromisoformat("2026-06-27T11:00"), base, day) == day


def test_battery_energy_with_efficiencies_matches_hand_calculation() -> None:
    b = Battery(capacity_kwh=100, max_charge_kw=50, max_discharge_kw=50, soc_pct=50,
                charge_efficiency=0.9, discharge_efficiency=0.8)
    for _ in range(3600):  # 10 kW charge for 1 h: 10 kWh × 0.9 stored = +9 %
        assert b.step(-10, 1.0) == -10
    assert b.soc_pct == pytest.approx(59.0)
    for _ in range(360):  # 8 kW discharge for 1 h in 10 s steps: 8 / 0.8 = 10 kWh = −10 %
        assert b.step(8, 10.0) == 8
    assert b.soc_pct == pytest.approx(49.0)


def test_battery_clamps_to_power_limits() -> None:
    b = Battery(100, max_charge_kw=30, max_discharge_kw=40, soc_pct=50)
    assert b.step(1000, 1) == 40
    assert b.step(-1000, 1) == -30


def test_battery_protects_itself_at_2_and_100_percent() -> None:
    b = Battery(100, 50, 50, soc_pct=3.0, discharge_efficiency=1.0, charge_efficiency=1.0)
    delivered = sum(b.step(50, 10.0) * 10 / 3600 for _ in range(100))
    assert delivered == pytest.approx(1.0)  # only 3 % − 2 % of 100 kWh was there
    assert b.soc_pct == pytest.approx(2.0) and b.soc_pct >= 2.0
    assert b.step(50, 10.0) == 0
    b = Battery(100, 50, 50, soc_pct=99.5, charge_efficiency=0.9)
    stored = sum(-b.step(-50, 10.0) * 10 / 3600 * 0.9 for _ in range(100))
    assert stored == pytest.approx(0.5)
    assert b.soc_pct == pytest.approx(100.0) and b.soc_pct <= 100.0
    assert b.step(-50, 10.0) == 0


def test_battery_ramp_limits_power_change() -> None:
    b = Battery(100, 50, 50, soc_pct=50, ramp_kw_per_s=10)
    assert [b.step(40, 1.0) for _ in range(5)] == [10, 20, 30, 40, 40]

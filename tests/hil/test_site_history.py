"""`SimSite.history_kw`: the days before a run from the site's own physics, as the
controller would have metered them with no battery at work, checked against the physics
functions by hand, without touching the running site."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge.config import parse
from hil.physics import clear_sky_kw, office_load_kw
from hil.site import SimSite

SH = ZoneInfo("Asia/Shanghai")
LAT, LON = 31.23, 121.47
TARIFF = {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]}


def site(*, load_meter: bool = True, cloud: float = 1.0, heater: bool = False) -> SimSite:
    devices = [
        {"id": "pv1", "host": "127.0.0.1", "role": "pv", "rated_kw": 100, "port": 15101,
         "sim": {"peak_kw": 120, "cloud_factor": cloud}},
        {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 15102, "capacity_kwh": 100,
         "max_charge_kw": 50, "max_discharge_kw": 50, "sim": {"initial_soc_pct": 50}},
        {"id": "pcc", "host": "127.0.0.1", "role": "meter", "measures": "grid", "port": 15103,
         "sim": {"base_kw": 10, "day_kw": 60}},
    ]
    if load_meter:
        devices.append({"id": "load", "host": "127.0.0.1", "role": "meter", "measures": "load", "port": 15104,
                        "sim": {"base_kw": 25, "day_kw": 95}})
    if heater:
        devices.append({"id": "dhw", "host": "127.0.0.1", "role": "load", "protocol": "modbus-tcp",
                        "map": "flexload_generic", "port": 15105, "rated_kw": 8,
                        "safe_state": "on"})
    return SimSite(parse({"site": {"id": "t", "timezone": "Asia/Shanghai", "latitude": LAT,
                                   "longitude": LON},
                          "devices": devices, "tariff": TARIFF}))


def minute_means(f, start: datetime, n: int) -> np.ndarray:
    """15-min means of f(t) sampled at the middle of every minute, as history_kw samples."""
    t = [start + timedelta(seconds=30 + 60 * i) for i in range(n * 15)]
    return np.array([f(x) for x in t]).reshape(n, 15).mean(axis=1)


MONDAY = datetime(2026, 6, 22, tzinfo=SH)


def test_pv_and_load_are_the_devices_profiles_and_grid_their_balance() -> None:
    s = site(cloud=0.5)
    start = MONDAY - timedelta(days=2)  # Saturday and Sunday, then Monday
    kw = s.history_kw(start, MONDAY + timedelta(days=1))
    assert {k: v.shape for k, v in kw.items()} == {k: (288,) for k in ("pv_kw", "load_kw",
                                                                        "grid_kw")}
    pv = minute_means(lambda t: min(100.0, 0.5 * clear_sky_kw(t.astimezone(UTC), LAT, LON, 120)),
                      start, 288)
    load = minute_means(lambda t: office_load_kw(t.astimezone(SH), 25, 95), start, 288)
    assert kw["pv_kw"] == pytest.approx(pv, abs=1e-9)
    assert kw["load_kw"] == pytest.approx(load, abs=1e-9)
    assert kw["grid_kw"] == pytest.approx(load - pv, abs=1e-9)  # no battery at work
    weekend, monday = kw["load_kw"][:192], kw["load_kw"][192:]
    assert weekend.max() < 1.2 * 25 * 1.03 and monday.max() > 90  # office hours on Monday only
    assert kw["pv_kw"][192 + 48] == pytest.approx(59, abs=2)  # Monday noon: half of 120 kWp


def test_without_a_load_meter_the_pcc_profile_is_the_load_and_a_heater_counts_in_the_grid() -> None:
    hidden = site(load_meter=False).history_kw(MONDAY, MONDAY + timedelta(hours=1))
    load = minute_means(lambda t: office_load_kw(t.astimezone(SH), 10, 60), MONDAY, 4)
    assert hidden["load_kw"] == pytest.approx(load, abs=1e-9)
    metered = site(heater=True).history_kw(MONDAY, MONDAY + timedelta(hours=1))
    night = minute_means(lambda t: office_load_kw(t.astimezone(SH), 25, 95), MONDAY, 4)
    # the load meter meters the building; the heater (on by default) draws beside it
    assert metered["load_kw"] == pytest.approx(night, abs=1e-9)
    assert metered["grid_kw"] == pytest.approx(night + 8.0, abs=1e-9)


def test_history_leaves_the_running_site_untouched_and_rejects_odd_steps() -> None:
    s = site()
    before = {d: s.state(d) for d in s.devices}
    s.history_kw(MONDAY, MONDAY + timedelta(days=1), 300)
    assert {d: s.state(d) for d in s.devices} == before
    assert s.t_s == 0 and s.ledger.pv_kwh == 0
    assert len(s.history_kw(MONDAY, MONDAY + timedelta(hours=1), 30)["pv_kw"]) == 120
    with pytest.raises(ValueError, match="step_s"):
        s.history_kw(MONDAY, MONDAY + timedelta(hours=1), 90)

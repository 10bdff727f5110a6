"""The planner's thermal input: each HVAC's zone with the band the cycle keeps (0.3 K inside
the comfort band, by local time), the COP at the outdoor forecast, and an outdoor forecast
that repeats yesterday's readings of the unit's own sensor once it has them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from drivers.base import Quality, Reading
from edge.config import parse
from edge.image.image import DeviceState, ProcessImage
from edge.plan.zones import OutdoorLog, thermal_input

T0 = datetime(2026, 7, 1, 0, tzinfo=UTC)  # 08:00 in Shanghai
CFG = parse({
    "site": {"id": "s", "timezone": "Asia/Shanghai"},
    "devices": [
        {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
        {"id": "ahu", "host": "127.0.0.1", "role": "hvac", "port": 1505, "map": "hvac_generic",
         "rated_kw": 20, "comfort": [{"start": "08:00", "end": "19:00", "min_c": 22,
                                      "max_c": 26}]},
        {"id": "tank", "host": "127.0.0.1", "role": "thermal_storage", "port": 1506,
         "map": "tes_generic", "capacity_kwh": 300, "max_charge_kw": 30, "max_discharge_kw": 30},
    ],
    "tariff": {"periods": [{"name": "f", "start": "00:00", "end": "00:00", "price": 1.0}]},
})


def image(ts: datetime, outdoor: float) -> ProcessImage:
    def st(i, v):
        return DeviceState(Reading(i, v), Quality.GOOD, 0)
    return ProcessImage(ts, 1.0, {
        "pcc": st("pcc", {"power_kw": 10.0}),
        "ahu": st("ahu", {"power_kw": 5.0, "rated_kw": 20.0, "zone_temp_c": 24.5,
                          "outdoor_temp_c": outdoor}),
        "tank": st("tank", {"power_kw": 0.0, "tank_temp_c": 8.0})})


def test_zones_get_the_guarded_band_by_local_time_and_tanks_their_soc():
    zones, tanks = thermal_input(CFG, image(T0, 30.0), T0, 96, 900, OutdoorLog())
    z = zones[0]
    assert z.t0_c == 24.5 and np.all(z.t_out_c == 30.0)  # no history: the reading now
    assert (z.band_lo_c[0], z.band_hi_c[0]) == pytest.approx((22.3, 25.7))  # 08:00 local
    assert (z.band_lo_c[50], z.band_hi_c[50]) == pytest.approx((16.3, 29.7))  # 20:30 setback
    assert z.cop[0] == pytest.approx(3.0 * (1 - 0.02 * (30 - 35)))
    assert tanks[0].soc0_pct == pytest.approx(50.0)


def test_the_outdoor_forecast_repeats_yesterdays_readings():
    log = OutdoorLog()
    for h in range(24):  # yesterday: 25 °C at night, 35 °C from 10:00 to 16:00 UTC
        t = T0 - timedelta(days=1) + timedelta(hours=h, minutes=7)
        log.see("ahu", t, 35.0 if 10 <= h < 16 else 25.0)
    zones, _ = thermal_input(CFG, image(T0, 28.0), T0, 96, 900, log)
    t_out = zones[0].t_out_c
    assert t_out[40] == 35.0 and t_out[8] == 25.0  # 10:00 and 02:00 UTC, as yesterday
    assert t_out[41] == 28.0  # a slot it has no reading for: the reading now

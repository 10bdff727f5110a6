"""A small site with EV chargers for the VPP tests: a PCC meter, a 200 kWh battery and two
3-phase 32 A chargers (0.69 kW per ampere, 22.08 kW at the maximum), as process images the
tests build reading by reading."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from drivers.base import Quality, Reading
from edge.config import parse
from edge.control.decide import Controller
from edge.image.image import DeviceState, ProcessImage

T0 = datetime(2026, 6, 22, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
KW_PER_A = 0.69
FULL_KW = 32 * KW_PER_A


def config(**extra):
    data = {
        "site": {"id": "evsite", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1503,
             "capacity_kwh": 200, "max_charge_kw": 50, "max_discharge_kw": 50},
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
            {"id": "ev1", "role": "ev_charger", "charge_point_id": "CP1", "max_current_a": 32},
            {"id": "ev2", "role": "ev_charger", "charge_point_id": "CP2", "max_current_a": 32},
        ],
        "control": {"import_limit_kw": 80, "functions": ["peak_shaving"]},
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00",
                                "price": 0.5}]},
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value}
    return parse(data)


def ev(amps=0.0, car=True, session=3.0, kwh=0.0, started=T0 - timedelta(hours=1)):
    """One charger's reading: a car plugged in since `started` drawing `amps` per phase."""
    return {"power_kw": amps * KW_PER_A, "current_a": amps, "l1_a": amps, "l2_a": amps,
            "l3_a": amps, "energy_kwh": 100.0, "soc_pct": math.nan, "connected": float(car),
            "charging": float(car and amps > 0), "session_kwh": kwh,
            "session_start_s": started.timestamp() if car else math.nan,
            "session": session if car else 0.0, "offered_a": amps if car else math.nan,
            "meter_lag_s": 30.0 if car else math.nan, "status": 2.0 if car else 0.0}


def image(grid, ev1=None, ev2=None, ts=T0, bess=0.0, soc=50.0, stale=()):
    """The site at `ts`: the PCC reads `grid` (the chargers' draw included)."""
    values = {"bess1": {"power_kw": bess, "soc_pct": soc}, "pcc": {"power_kw": grid},
              "ev1": ev1 or ev(car=False), "ev2": ev2 or ev(car=False)}
    return ProcessImage(ts, 1.0, {
        k: DeviceState(Reading(k, v), Quality.STALE if k in stale else Quality.GOOD, 0)
        for k, v in values.items()})


def decide(cfg, kernel, img, book=None, memory=None, now_s=10.0):
    ctl = Controller(cfg, kernel)
    return ctl.decide(img, book, memory or ctl.initial_memory(), now_s)

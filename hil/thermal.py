"""Thermal physics of the HIL: the weather and occupancy a zone sees, and the zone itself as
a first-order RC model with its HVAC unit, stepped exactly over each physics step (so a 1-s
and a 15-min step give the same trajectory for the same inputs). Deterministic: the same
settings and clock give the same temperatures on every run.

Weather: the outdoor temperature follows a sine between `outdoor_min_c` (at 05:00) and
`outdoor_max_c` (at 15:00); the sun's gain a half sine from 06:00 to 19:00 peaking at
`solar_kw`; people and equipment `internal_kw` during `occupied` hours on weekdays."""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import Field, model_validator

from edge.config.model import _Model

WARMEST_H, COLDEST_H = 15.0, 5.0
SUNRISE_H, SUNSET_H = 6.0, 19.0
BROKEN_C = 85.0  # what a DS18B20-type sensor reads after a power glitch


class ZoneSim(_Model):
    """The simulated zone of an HVAC device (its `sim.zone`)."""

    r_k_per_kw: float = Field(2.5, gt=0, le=100, description="thermal resistance, K/kW")
    c_kwh_per_k: float = Field(12.0, gt=0, le=10000, description="thermal capacitance, kWh/K")
    initial_c: float = Field(24.0, ge=0, le=45, description="zone temperature at the start")
    outdoor_min_c: float = Field(26.0, ge=-40, le=50)
    outdoor_max_c: float = Field(36.0, ge=-40, le=55)
    solar_kw: float = Field(6.0, ge=0, le=10000, description="sun's gain at noon, kW thermal")
    internal_kw: float = Field(4.0, ge=0, le=10000, description="people and equipment, kW "
                               "thermal, during occupied hours")
    occupied: tuple[int, int] = Field((8, 19), description="occupied hours [from, to) local, weekdays")
    thermostat_c: float = Field(24.0, ge=5, le=40, description="its own thermostat setpoint")
    thermostat_gain_kw_per_k: float = Field(20.0, gt=0, le=1000, description="its own "
                                            "thermostat's proportional gain, kW electric per K")
    stuck_at_h: float | None = Field(None, ge=0, le=1e6, description="fault: the zone sensor "
                                     "freezes this many simulated hours after the start")
    broken_at_h: float | None = Field(None, ge=0, le=1e6, description="fault: the zone sensor "
                                      f"reads {BROKEN_C:g} °C (a broken sensor's value) from "
                                      "this many simulated hours after the start")

    @model_validator(mode="after")
    def _range(self) -> ZoneSim:
        if self.outdoor_min_c > self.outdoor_max_c:
            raise ValueError("outdoor_min_c must not exceed outdoor_max_c")
        return self

    def outdoor_c(self, local: datetime) -> float:
        h = local.hour + local.minute / 60 + local.second / 3600
        mean, amp = (self.outdoor_max_c + self.outdoor_min_c) / 2, (
            self.outdoor_max_c - self.outdoor_min_c) / 2
        # A cosine with its top at WARMEST_H and its bottom 10 h earlier (skewed day)
        if COLDEST_H <= h < WARMEST_H:
            phase = (h - COLDEST_H) / (WARMEST_H - COLDEST_H)
        else:
            phase = 1 + ((h - WARMEST_H) % 24) / (24 - (WARMEST_H - COLDEST_H))
        return mean - amp * math.cos(math.pi * phase)

    def gains_kw(self, local: datetime) -> float:
        h = local.hour + local.minute / 60 + local.second / 3600
        sun = (self.solar_kw * math.sin(math.pi * (h - SUNRISE_H) / (SUNSET_H - SUNRISE_H))
               if SUNRISE_H <= h < SUNSET_H else 0.0)
        people = (self.internal_kw if local.weekday() < 5
                  and self.occupied[0] <= local.hour < self.occupied[1] else 0.0)
        return sun + people


def cop_at(cop: float, ref_c: float, slope_per_k: float, t_out: float, sign: float) -> float:
    return max(cop * (1.0 - slope_per_k * sign * (t_out - ref_c)), 1.0)


def zone_step(t: float, hours: float, r: float, c: float, t_out: float, gains_kw: float,
              heat_out_kw: float) -> float:
    """The zone after `hours` with constant inputs; `heat_out_kw` is thermal power removed."""
    eq = t_out + r * (gains_kw - heat_out_kw)
    return eq + (t - eq) * math.exp(-hours / (r * c))

"""Deterministic physics of the simulated site: clear-sky PV, office load, battery.

Pure functions of time and state, no randomness, so a HIL run with the same commands at the
same simulated instants reproduces the same numbers, and KPIs of two control strategies can
be compared. Sign conventions as everywhere: battery + discharge / − charge, PV and load ≥ 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

_TILT_EXP = 1.2  # P ∝ sin(elevation)^1.2: longer air mass at low sun costs more than cosine
_AXIAL_TILT_DEG = 23.44


def solar_elevation_sin(t_utc: datetime, lat: float, lon: float) -> float:
    """sin(solar elevation) from day of year and the equation of time (NOAA's Fourier fit,
    good to a few arc-minutes: plenty for a load-flow simulator)."""
    tt = t_utc.utctimetuple()
    hour = tt.tm_hour + tt.tm_min / 60 + tt.tm_sec / 3600 + t_utc.microsecond / 3.6e9
    g = 2 * math.pi / 365 * (tt.tm_yday - 1 + (hour - 12) / 24)
    eqtime_min = 229.18 * (
        0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g) + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g)
    )
    solar_min = hour * 60 + eqtime_min + 4 * lon
    hour_angle = math.radians(solar_min / 4 - 180)
    phi = math.radians(lat)
    return math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)


def clear_sky_kw(t_utc: datetime, lat: float, lon: float, peak_kw: float) -> float:
    """Clear-sky PV output. Normalised on the summer-solstice noon sun at this latitude, so
    `peak_kw` is what a clear summer noon delivers (the figure people quote for a roof)."""
    s = max(0.0, solar_elevation_sin(t_utc, lat, lon))
    noon = max(0.1, math.cos(math.radians(abs(lat) - _AXIAL_TILT_DEG)))
    return min(peak_kw, peak_kw * (s / noon) ** _TILT_EXP)


def _ripple(hour: float, level: float) -> float:
    """±~2 % wobble from two incommensurate periods: looks like a real load, stays reproducible."""
    tau = 2 * math.pi * hour
    wobble = 0.015 * math.sin(tau / 0.7) + 0.008 * math.sin(tau / 0.23)
    return level * wobble


def _ramp(h: float, a: float, b: float, lo: float, hi: float) -> float:
    return lo + (hi - lo) * min(1.0, max(0.0, (h - a) / (b - a)))


def office_load_kw(t_local: datetime, base_kw: float, day_kw: float) -> float:
    """Office building: base at night, ramp 7:30–9:00 to day_kw, lunch dip 12–13, ramp down
    18:00–19:30; weekends at 1.2 × base. Local time, because people keep office hours."""
    h = t_local.hour + t_local.minute / 60 + (t_local.second + t_local.microsecond / 1e6) / 3600
    if t_local.weekday() >= 5:
        level = 1.2 * base_kw
    elif h < 12:
        level = _ramp(h, 7.5, 9.0, base_kw, day_kw)
    elif h < 13:
        level = day_kw - 0.2 * (day_kw - base_kw) * math.sin(math.pi * (h - 12))
    else:
        level = _ramp(h, 18.0, 19.5, day_kw, base_kw)
    return max(0.0, level + _ripple(h, level))


def load_kw(profile: str, t_local: datetime, base_kw: float, day_kw: float) -> float:
    """Load of a named profile ('office' or 'flat' = day_kw constant, handy in tests)."""
    if profile == "flat":
        return day_kw
    if profile == "office":
        return office_load_kw(t_local, base_kw, day_kw)
    raise ValueError(f"unknown load profile {profile!r}; use 'office' or 'flat'")


def ramp_toward(current: float, target: float, ramp_per_s: float | None, dt_s: float) -> float:
    """Move `current` toward `target` by at most ramp·dt (None = instantaneous)."""
    if ramp_per_s is None:
        return target
    step = ramp_per_s * dt_s
    return min(target, current + step) if target > current else max(target, current - step)


@dataclass
class Battery:
    """A battery with its own protection: it will not discharge below `soc_min_pct` nor
    charge above `soc_max_pct`, whatever it is told (the controller's operating window is
    narrower and lives in the controller, not here)."""

    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    soc_pct: float = 50.0
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    soc_min_pct: float = 2.0
    soc_max_pct: float = 100.0
    ramp_kw_per_s: float | None = None
    power_kw: float = 0.0  # last actual power, + discharge

    def step(self, p_cmd_kw: float, dt_s: float) -> float:
        """Apply a command for `dt_s` seconds; returns the power actually delivered."""
        if dt_s <= 0:
            return self.power_kw
        p = min(self.max_discharge_kw, max(-self.max_charge_kw, p_cmd_kw))
        p = ramp_toward(self.power_kw, p, self.ramp_kw_per_s, dt_s)
        dt_h = dt_s / 3600
        if p > 0:
            usable_kwh = max(0.0, self.soc_pct - self.soc_min_pct) / 100 * self.capacity_kwh
            p = min(p, usable_kwh * self.discharge_efficiency / dt_h)
            self.soc_pct -= p / self.discharge_efficiency * dt_h / self.capacity_kwh * 100
            if p > 0:
                self.soc_pct = max(self.soc_pct, self.soc_min_pct)
        elif p < 0:
            room_kwh = max(0.0, self.soc_max_pct - self.soc_pct) / 100 * self.capacity_kwh
            p = max(p, -room_kwh / (self.charge_efficiency * dt_h))
            self.soc_pct += -p * self.charge_efficiency * dt_h / self.capacity_kwh * 100
            if p < 0:
                self.soc_pct = min(self.soc_pct, self.soc_max_pct)
        self.power_kw = p
        return p


def headroom_kw(profile) -> float:
    """The most a building-load profile (hil.config.SimParams) draws, with headroom for its
    ripple."""
    return max(profile.base_kw * 1.2, profile.day_kw) * 1.05

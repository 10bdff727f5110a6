"""Generate the series the shipped scenarios read (run once; the CSVs are committed).

    python hil/scenarios/make_data.py

PV: pvlib's Ineichen clear sky (Linke turbidity from the table pvlib ships) for Shanghai
(31.23 N, 121.47 E), transposed to a 20° south-facing roof, PVWatts DC with a 0.4 %/K
temperature loss and PVWatts inverter efficiency, per kWp of DC; then a clear-sky index
per day (clear, hazy, passing clouds, overcast, broken plum-rain cloud) drawn from a seeded
generator, so the files are reproducible. Load: an office building in Shanghai per unit of
its design peak (night base, morning start with pre-cooling or heating, lunch dip,
evening ramp-down, weekends at a fraction), scaled by a daily weather factor, with a
seeded AR(1) wobble. Every file holds the scenario day and the `HISTORY_DAYS` days before
it (the controller's own forecasts learn from those). The two scenarios with a demand
charge fall on the first of a month, so those days lie in the previous billing month and
the billing peak starts with the run, as the planner counts it.

Figures are illustrative, not measured data: shapes and magnitudes of a typical building.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib

HERE = Path(__file__).resolve().parent
LAT, LON, TZ = 31.23, 121.47, "Asia/Shanghai"
HISTORY_DAYS = 7
TILT, AZIMUTH = 20.0, 180.0


@dataclass(frozen=True)
class Day:
    sky: str  # clear | hazy | passing | overcast | broken
    weather: float  # load factor (HVAC effort): 1.0 typical for the season


@dataclass(frozen=True)
class Spec:
    file: str
    day: str  # scenario day, local
    season: str  # summer | winter | mild
    step_s: int
    temp_c: tuple[float, float]  # daily min, max air temperature
    days: tuple[Day, ...]  # HISTORY_DAYS days before, then the scenario day
    seed: int


SPECS = (
    Spec("summer_weekday.csv", "2026-07-01", "summer", 900, (27.0, 35.0), (
        Day("passing", 0.95), Day("clear", 1.0), Day("hazy", 1.0), Day("passing", 0.97),
        Day("clear", 1.02), Day("clear", 1.03), Day("hazy", 1.0), Day("clear", 1.04)), 1),
    Spec("winter_weekday.csv", "2026-12-01", "winter", 900, (2.0, 9.0), (
        Day("overcast", 1.05), Day("hazy", 1.0), Day("clear", 0.98), Day("clear", 1.0),
        Day("passing", 1.02), Day("overcast", 1.06), Day("hazy", 1.0), Day("clear", 1.03)), 2),
    Spec("cloudy_day.csv", "2026-06-24", "summer", 300, (23.0, 29.0), (
        Day("overcast", 0.9), Day("broken", 0.92), Day("passing", 0.95), Day("overcast", 0.9),
        Day("broken", 0.93), Day("hazy", 0.96), Day("overcast", 0.9), Day("broken", 0.94)), 3),
    Spec("export_limited.csv", "2026-05-02", "mild", 900, (16.0, 25.0), (
        Day("clear", 1.0), Day("hazy", 1.0), Day("clear", 1.0), Day("passing", 1.0),
        Day("clear", 1.0), Day("clear", 1.0), Day("hazy", 1.0), Day("clear", 1.0)), 4),
)


def clear_sky_index(sky: str, minutes: int, rng: np.random.Generator) -> np.ndarray:
    """Ratio of real to clear-sky irradiance, one value per minute."""
    t = np.arange(minutes)
    slow = np.sin(2 * np.pi * t / minutes * rng.uniform(1.5, 3.0) + rng.uniform(0, 6.3))
    if sky == "clear":
        return 0.97 + 0.02 * slow
    if sky == "hazy":
        return 0.80 + 0.06 * slow
    if sky == "overcast":
        return np.clip(0.30 + 0.10 * slow + 0.04 * rng.standard_normal(minutes), 0.1, 0.6)
    kc = 0.95 + 0.03 * slow
    if sky == "passing":  # fair weather cumulus: a few dips of 5-25 min
        for _ in range(rng.integers(6, 12)):
            a = rng.integers(0, minutes - 30)
            kc[a:a + rng.integers(5, 25)] *= rng.uniform(0.3, 0.6)
        return kc
    if sky == "broken":  # plum-rain season: low mean, fast swings, brief enhancement
        x = np.empty(minutes)
        x[0] = 0.0
        noise = rng.standard_normal(minutes)
        for i in range(1, minutes):
            x[i] = 0.93 * x[i - 1] + 0.37 * noise[i]
        return np.clip(0.45 + 0.28 * x, 0.08, 1.08)
    raise ValueError(f"unknown sky {sky!r}")


def pv_per_kwp(times: pd.DatetimeIndex, kc: np.ndarray, temp_c: np.ndarray) -> np.ndarray:
    loc = pvlib.location.Location(LAT, LON, TZ, altitude=4)
    sol = loc.get_solarposition(times)
    cs = loc.get_clearsky(times, model="ineichen", solar_position=sol)
    poa = pvlib.irradiance.get_total_irradiance(
        TILT, AZIMUTH, sol["apparent_zenith"], sol["azimuth"], cs["dni"], cs["ghi"], cs["dhi"],
    )["poa_global"].to_numpy() * kc
    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"]
    cell = pvlib.temperature.sapm_cell(poa, temp_c, 2.0, **params)
    dc = pvlib.pvsystem.pvwatts_dc(poa, cell, pdc0=1.0, gamma_pdc=-0.004) * 0.92  # soiling, wiring
    ac = pvlib.inverter.pvwatts(dc, pdc0=1.0)
    return np.clip(np.nan_to_num(ac), 0.0, None)


def _ramp(h: np.ndarray, a: float, b: float) -> np.ndarray:
    return np.clip((h - a) / (b - a), 0.0, 1.0)


def office_load_pu(times: pd.DatetimeIndex, season: str, weather: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Per unit of the design peak; local times."""
    h = times.hour.to_numpy() + times.minute.to_numpy() / 60
    weekend = times.day_of_week.to_numpy() >= 5
    base = {"summer": 0.27, "winter": 0.31, "mild": 0.24}[season]
    day = {"summer": 0.78, "winter": 0.74, "mild": 0.62}[season]
    start = base + (day - base) * _ramp(h, 7.0, 8.75)
    level = start - (day - 0.42) * _ramp(h, 17.75, 19.75) - (0.42 - base) * _ramp(h, 19.75, 22.0)
    level -= 0.07 * np.exp(-(((h - 12.4) / 0.45) ** 2))  # lunch
    occupied = _ramp(h, 7.0, 8.5) * (1 - _ramp(h, 17.5, 19.0))
    if season == "summer":  # cooling follows the afternoon heat
        level += 0.20 * weather * occupied * np.exp(-(((h - 14.5) / 3.2) ** 2))
    elif season == "winter":  # heat pumps: morning warm-up peak, then steady
        level += occupied * (0.20 * weather * np.exp(-(((h - 8.8) / 1.1) ** 2)) + 0.06 * weather)
    else:
        level += 0.04 * occupied
    level = np.where(weekend, base * 1.15 + 0.10 * occupied, level)
    wobble = np.empty(len(h))
    wobble[0] = 0.0
    noise = rng.standard_normal(len(h))
    for i in range(1, len(h)):
        wobble[i] = 0.97 * wobble[i - 1] + 0.006 * noise[i]
    return np.clip(level * (1 + wobble), 0.05, None)


def make(spec: Spec) -> pd.DataFrame:
    rng = np.random.default_rng(spec.seed)
    first = pd.Timestamp(spec.day, tz=TZ) - pd.Timedelta(days=HISTORY_DAYS)
    frames = []
    for i, d in enumerate(spec.days):
        times = pd.date_range(first + pd.Timedelta(days=i), periods=1440, freq="1min")
        h = times.hour.to_numpy() + times.minute.to_numpy() / 60
        lo, hi = spec.temp_c
        temp = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * np.clip(h - 5, 0, 24) / 24 * 0.95))
        kc = clear_sky_index(d.sky, 1440, rng)
        pv = pv_per_kwp(times, kc, temp)
        load = office_load_pu(times, spec.season, d.weather, rng)
        frames.append(pd.DataFrame({"pv_kw_per_kwp": pv, "load_pu": load}, index=times))
    minute = pd.concat(frames)
    per_step = minute.resample(f"{spec.step_s}s").mean()  # step averages, labelled by start
    per_step.index.name = "time"
    return per_step


def main() -> None:
    for spec in SPECS:
        df = make(spec)
        out = HERE / "data" / spec.file
        out.parent.mkdir(exist_ok=True)
        df.to_csv(out, float_format="%.4f", date_format="%Y-%m-%dT%H:%M:%S%z")
        last = df.loc[spec.day]
        print(f"{out.relative_to(HERE)}: {len(df)} rows; scenario day PV "
              f"{last['pv_kw_per_kwp'].sum() * spec.step_s / 3600:.2f} kWh/kWp, load peak "
              f"{last['load_pu'].max():.2f} pu")


if __name__ == "__main__":
    main()

"""The thermal part of a plan's input, from the config and the last image: each HVAC's zone
(its model, the temperature now, the comfort band per step, the COP at the outdoor forecast)
and each tank (its SoC from the tank temperature).

The outdoor forecast is persistence: what the unit's own outdoor sensor read at the same
time of day in the last 24 h, the reading now where no such reading exists yet. Gains are
the model's (configured or fitted, edge/plan/identify.py). A caller that knows better (the
scenario runner with the true weather) passes `weather` instead."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from edge.plan.thermal import PlanTank, PlanZone

SLOT_S = 900
# device id, start, n, step_s -> (outdoor °C, gains kW) per step
Weather = Callable[[str, datetime, int, int], tuple[np.ndarray, np.ndarray]]


class OutdoorLog:
    """The last outdoor reading per 15-min slot of the day, per device, with its time."""

    def __init__(self) -> None:
        self.slots: dict[str, dict[int, tuple[float, float]]] = {}

    def see(self, device_id: str, ts: datetime, t_out: float) -> None:
        e = ts.timestamp()
        self.slots.setdefault(device_id, {})[int(e % 86400 // SLOT_S)] = (e, t_out)

    def forecast(self, device_id: str, start: datetime, n: int, step_s: int,
                 now_c: float) -> np.ndarray:
        slots = self.slots.get(device_id, {})
        t = start.timestamp() + (np.arange(n) + 0.5) * step_s
        out = np.full(n, now_c)
        for k, e in enumerate(t):
            seen = slots.get(int(e % 86400 // SLOT_S))
            if seen is not None and e - seen[0] <= 86400 + SLOT_S:
                out[k] = seen[1]
        return out


def thermal_input(config, image, start: datetime, n: int, step_s: int, outdoor: OutdoorLog,
                  weather: Weather | None = None,
                  models: dict[str, tuple[float, float, float]] | None = None
                  ) -> tuple[tuple, tuple]:
    """(zones, tanks) for build_input; devices that cannot be read are left out (the cycle
    then holds their band on its own, or they run on their own thermostat). `models`:
    (R, C, gains) per zone where the history fitted one (edge/plan/learn.py)."""
    tz = ZoneInfo(config.site.timezone)
    mids = [start + timedelta(seconds=(k + 0.5) * step_s) for k in range(n)]
    zones, tanks = [], []
    for d in config.devices:
        if d.role not in ("hvac", "thermal_storage") or not image.good(d.id):
            continue
        if d.role == "thermal_storage":
            tanks.append(PlanTank(d.id, d.capacity_kwh, d.soc_pct(image.value(d.id, "tank_temp_c")),
                                  d.soc_min_pct, d.soc_max_pct, d.max_charge_kw,
                                  d.max_discharge_kw, d.cop, d.loss_pct_per_h))
            continue
        now_c = image.value(d.id, "outdoor_temp_c")
        outdoor.see(d.id, image.ts, now_c)
        r, c, g = (models or {}).get(d.id, (d.model.r_k_per_kw, d.model.c_kwh_per_k,
                                             d.model.gains_kw))
        if weather is not None:
            t_out, gains = weather(d.id, start, n, step_s)
        else:
            t_out = outdoor.forecast(d.id, start, n, step_s, now_c)
            gains = np.full(n, g)
        bands = np.array([d.plan_band(t.astimezone(tz).time()) for t in mids])
        zones.append(PlanZone(
            d.id, d.rated_kw, r, c,
            image.value(d.id, "zone_temp_c"), np.asarray(t_out, float),
            np.asarray(gains, float), np.array([d.cop_at(x) for x in t_out]),
            bands[:, 0], bands[:, 1], d.sign))
    return tuple(zones), tuple(tanks)

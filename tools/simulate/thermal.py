"""Thermal figures of a run, the same for every strategy: kelvin-hours outside the comfort
band, DR delivered against requested, and the rebound after the event against the peak
before it. Also the true weather of the HVACs' simulated zones (for the planner's perfect
forecasts and the perfect-foresight optimum) and the replay's thermal plant (the HIL's own
simulators, stepped in Python).

Definitions (stated once, used by every column):
- comfort_violation_kh: per zone, the integral of how far its temperature lies outside the
  band in force (local time), in K x h, summed over the zones.
- DR: requested kWh = the integral over the event of (baseline − cap)+, delivered kWh =
  of (baseline − import)+ capped at the request per 15 min, where the baseline is the
  rule-based replay of the same day without the event (the site as it would have been).
- pre_event_peak_kw: the highest 15-min mean import from the run's start to the event;
  rebound_peak_kw: the highest in the two hours after it."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from drivers.base import Quality, Reading
from edge.image.image import DeviceState
from hil.devices.base import Env
from hil.devices.hvac import MapHvacSim, MapTesSim
from hil.thermal import ZoneSim

REBOUND_S = 7200
INTERVAL_S = 900


def hvacs_of(cfg) -> list:
    return [d for d in cfg.devices if d.role == "hvac"]


def true_weather(cfg):
    """The planner's `weather`: each zone's simulated outdoor temperature and gains."""
    tz = ZoneInfo(cfg.site.timezone)
    zones = {d.id: (ZoneSim.model_validate(d.sim.get("zone", {}))) for d in hvacs_of(cfg)}

    def weather(device_id: str, start: datetime, n: int, step_s: int):
        z = zones[device_id]
        mids = [(start + timedelta(seconds=(k + 0.5) * step_s)).astimezone(tz) for k in range(n)]
        return (np.array([z.outdoor_c(t) for t in mids]), np.array([z.gains_kw(t) for t in mids]))

    return weather


class Comfort:
    """Kelvin-hours outside the band, from zone temperatures seen every sub-step."""

    def __init__(self, cfg) -> None:
        self.tz = ZoneInfo(cfg.site.timezone)
        self.devs = hvacs_of(cfg)
        self.kh = 0.0
        self.max_c = -np.inf
        self.min_c = np.inf

    def see(self, t: datetime, dt_s: float, zone_c: dict[str, float]) -> None:
        local = t.astimezone(self.tz).time()
        for d in self.devs:
            z = zone_c[d.id]
            lo, hi = d.band(local)
            self.kh += (max(z - hi, 0.0) + max(lo - z, 0.0)) * dt_s / 3600
            self.max_c, self.min_c = max(self.max_c, z), min(self.min_c, z)

    def kpis(self) -> dict:
        if not self.devs:
            return {}
        return {"comfort_violation_kh": self.kh, "zone_max_c": self.max_c,
                "zone_min_c": self.min_c}


class ThermalPlant:
    """The replay's HVACs and tanks: the HIL's simulators, their commands set directly."""

    def __init__(self, cfg, groups: dict[str, list]) -> None:
        self.site = cfg.site
        self.tz = ZoneInfo(cfg.site.timezone)
        self.units = {d.id: MapHvacSim(d, 0.0) for d in groups.get("hvac", [])}
        self.tanks = {d.id: MapTesSim(d, 0.0) for d in groups.get("thermal_storage", [])}
        self.comfort = Comfort(cfg)
        for s in (*self.units.values(), *self.tanks.values()):
            s.held["revert"] = 0.0  # the replay's writer re-writes; no watchdog

    def kw(self) -> float:
        return sum(s.power_kw for s in (*self.units.values(), *self.tanks.values()))

    def tank_kwh(self) -> dict[str, float]:
        return {i: s.stored_kwh for i, s in self.tanks.items()}

    def apply(self, due: dict[str, float]) -> None:
        for i, v in due.items():
            if i in self.units:
                u = self.units[i]
                u.held["control_mode"] = 0.0 if v < 0 else 1.0
                u.held["limit"] = 0.0 if v < 0 else min(100.0 * v / u.cfg.rated_kw, 100.0)
            elif i in self.tanks:
                self.tanks[i].held["setpoint"] = v

    def values(self) -> dict[str, dict[str, float]]:
        out = {i: u.point_values() for i, u in self.units.items()}
        out.update({i: s.point_values() for i, s in self.tanks.items()})
        return out

    def step(self, t: datetime, now_s: float, dt: float) -> None:
        env = Env(now_s, t, t.astimezone(self.tz), self.site.latitude, self.site.longitude)
        for s in (*self.units.values(), *self.tanks.values()):
            s.step(env, dt)
        self.comfort.see(t, dt, {i: u.zone_c for i, u in self.units.items()})


def states(values: dict[str, dict[str, float]]) -> dict[str, DeviceState]:
    return {k: DeviceState(Reading(k, v), Quality.GOOD, 0) for k, v in values.items()}


def event_kpis(grid_15: np.ndarray, baseline_15: np.ndarray | None, start: datetime,
               windows) -> dict:
    """DR delivered/requested and the rebound, from 15-min mean imports (see above)."""
    out: dict = {}
    t0 = start.timestamp()
    h = INTERVAL_S / 3600
    req = dlv = 0.0
    pre = reb = None
    for w in windows:
        cap = w.event.grid_max_kw
        if cap is None:
            continue
        a = int((w.start.timestamp() - t0) // INTERVAL_S)
        b = int(np.ceil((w.end.timestamp() - t0) / INTERVAL_S))
        if baseline_15 is not None:
            want = np.maximum(baseline_15[a:b] - cap, 0.0)
            got = np.minimum(np.maximum(baseline_15[a:b] - grid_15[a:b], 0.0), want)
            req += float(want.sum() * h)
            dlv += float(got.sum() * h)
        before = grid_15[:a]
        after = grid_15[b:b + REBOUND_S // INTERVAL_S]
        pre = max(pre or -np.inf, float(before.max(initial=-np.inf)))
        reb = max(reb or -np.inf, float(after.max(initial=-np.inf)))
    if pre is None:
        return out
    out.update(pre_event_peak_kw=pre, rebound_peak_kw=reb,
               rebound_under_pre_event_peak=bool(reb <= pre))
    if baseline_15 is not None:
        out.update(dr_requested_kwh=req, dr_delivered_kwh=dlv,
                   dr_ratio=dlv / req if req > 0 else None)
    return out


def true_thermal(cfg, start: datetime, n: int, step_s: int) -> tuple[tuple, tuple]:
    """The zones and tanks of the perfect-foresight LP: the simulated zones' true weather
    and starting temperatures, the tanks' starting SoC, and the simulator's own R and C."""
    from edge.plan.thermal import PlanTank, PlanZone

    tz = ZoneInfo(cfg.site.timezone)
    weather = true_weather(cfg)
    mids = [(start + timedelta(seconds=(k + 0.5) * step_s)).astimezone(tz) for k in range(n)]
    zones = []
    for d in hvacs_of(cfg):
        z = ZoneSim.model_validate(d.sim.get("zone", {}))
        t_out, gains = weather(d.id, start, n, step_s)
        bands = np.array([d.plan_band(t.time()) for t in mids])
        zones.append(PlanZone(d.id, d.rated_kw, z.r_k_per_kw, z.c_kwh_per_k, z.initial_c,
                              t_out, gains, np.array([d.cop_at(x) for x in t_out]),
                              bands[:, 0], bands[:, 1], d.sign))
    tanks = tuple(PlanTank(d.id, d.capacity_kwh, float(d.sim.get("initial_soc_pct", 50.0)),
                           d.soc_min_pct, d.soc_max_pct, d.max_charge_kw, d.max_discharge_kw,
                           d.cop, d.loss_pct_per_h)
                  for d in cfg.devices if d.role == "thermal_storage")
    return tuple(zones), tanks

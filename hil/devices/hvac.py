"""Simulated HVAC unit and thermal storage tank, served through their register maps.

The HVAC cools (or heats) a zone (hil/thermal.py): with `control_mode` 1 and a fresh
command it runs at `limit` % of its rating; otherwise (mode 0, or no command for `revert`
seconds) its own proportional thermostat holds `sim.zone.thermostat_c`. An SG-Ready map
gives states instead: 1 off, 2 own thermostat, 3 thermostat 2 K further, 4 full power; an
offset map shifts its own thermostat's setpoint by `offset_k` K (+ warmer). Its COP falls
with the outdoor temperature. Sensor faults of the reading the controller gets (the unit's
own thermostat keeps its own): `sim.zone.stuck_at_h` freezes it while the physics goes on,
`broken_at_h` makes it read 85 °C. A working one jitters by a few hundredths of a kelvin
(deterministically), as real sensors do.

The tank stores COP x electric kWh charging, gives its thermal kWh back discharging (the
building's chillers then draw that much less, so the site counts it as a negative load) and
loses `loss_pct_per_h` of its content every hour; its temperature follows its content."""

from __future__ import annotations

import math

from pymodbus.constants import ExcCodes

from drivers.modbus.regmap import RegisterMap
from edge.config import DeviceConfig
from hil.devices.base import Env, expired
from hil.devices.mapped import MapSimDevice
from hil.thermal import BROKEN_C, ZoneSim, cop_at, zone_step

SG_OFFSET_K = 2.0
MAX_OFFSET_K = 10.0  # what the offset map's unit takes, either way


class MapHvacSim(MapSimDevice):
    role = "hvac"

    @classmethod
    def rating_kw(cls, cfg) -> float:
        return cfg.rated_kw

    def __init__(self, cfg: DeviceConfig, site_max_kw: float,
                 regmap: RegisterMap | None = None) -> None:
        super().__init__(cfg, site_max_kw, regmap)
        self.zone = self.sim.zone or ZoneSim()
        self.zone_c = self.zone.initial_c
        self.read_c = self.zone_c
        self.t_out = self.zone.outdoor_min_c
        self.energy_kwh = 0.0
        self._t_cmd: float | None = None
        self.t_s = 0.0
        if "revert" in self.held:
            self.held["revert"] = float(cfg.revert_s)
        if "sg_ready" in self.held:
            self.held["sg_ready"] = 2.0
        if "offset_k" in self.held:
            self.held["offset_k"] = 0.0

    def validate_points(self, changes: dict[str, float]) -> ExcCodes | None:
        if changes.get("control_mode", 0.0) not in (0.0, 1.0):
            return ExcCodes.ILLEGAL_VALUE
        if not 0.0 <= changes.get("limit", 0.0) <= 100.0:
            return ExcCodes.ILLEGAL_VALUE
        if changes.get("sg_ready", 2.0) not in (1.0, 2.0, 3.0, 4.0):
            return ExcCodes.ILLEGAL_VALUE
        if abs(changes.get("offset_k", 0.0)) > MAX_OFFSET_K:
            return ExcCodes.ILLEGAL_VALUE
        return None

    def on_points(self, changes: dict[str, float], before: dict[str, float]) -> None:
        self._t_cmd = self.t_s

    @property
    def external(self) -> bool:
        """Following the controller's command (not its own thermostat)."""
        return (self.held.get("control_mode", 0.0) >= 0.5 or self.held.get("sg_ready", 2.0) != 2.0
                or self.held.get("offset_k", 0.0) != 0.0)

    def _thermostat_kw(self, setpoint_c: float) -> float:
        sign = 1.0 if self.cfg.mode == "cooling" else -1.0
        err = sign * (self.zone_c - setpoint_c)
        return min(max(self.zone.thermostat_gain_kw_per_k * err, 0.0), self.cfg.rated_kw)

    def _power(self) -> float:
        own = self.zone.thermostat_c
        if "offset_k" in self.held:
            return self._thermostat_kw(own + self.held["offset_k"])
        if "sg_ready" in self.held:
            state = self.held["sg_ready"]
            further = SG_OFFSET_K if self.cfg.mode == "cooling" else -SG_OFFSET_K
            return (0.0 if state == 1.0 else self.cfg.rated_kw if state == 4.0
                    else self._thermostat_kw(own - (further if state == 3.0 else 0.0)))
        if self.held.get("control_mode", 0.0) >= 0.5:
            return self.cfg.rated_kw * self.held["limit"] / 100.0
        return self._thermostat_kw(own)

    def step(self, env: Env, dt_s: float) -> float:
        self.t_s = env.t_s
        if self.external and expired(self._t_cmd, int(self.held.get("revert", 0)), env.t_s):
            for key, own in (("control_mode", 0.0), ("sg_ready", 2.0), ("offset_k", 0.0)):
                if key in self.held:
                    self.held[key] = own
        self.t_out = self.zone.outdoor_c(env.t_local)
        sign = 1.0 if self.cfg.mode == "cooling" else -1.0
        self.power_kw = self._power()
        cop = cop_at(self.cfg.cop, self.cfg.cop_ref_c, self.cfg.cop_slope_per_k, self.t_out, sign)
        self.zone_c = zone_step(self.zone_c, dt_s / 3600, self.zone.r_k_per_kw,
                                self.zone.c_kwh_per_k, self.t_out,
                                self.zone.gains_kw(env.t_local), sign * cop * self.power_kw)
        stuck = self.zone.stuck_at_h is not None and env.t_s >= self.zone.stuck_at_h * 3600
        if self.zone.broken_at_h is not None and env.t_s >= self.zone.broken_at_h * 3600:
            self.read_c = BROKEN_C
        elif not stuck:  # a real sensor's reading jitters by a few hundredths of a kelvin
            t = env.t_s
            self.read_c = self.zone_c + 0.03 * math.sin(0.7 * t) + 0.02 * math.sin(0.13 * t)
        self.energy_kwh += self.power_kw * dt_s / 3600
        return -self.power_kw

    def point_values(self) -> dict[str, float]:
        return {"power_kw": self.power_kw, "zone_temp_c": self.read_c,
                "outdoor_temp_c": self.t_out, "thermostat_c": self.zone.thermostat_c,
                "alarm_code": 0.0, "rated_kw": self.cfg.rated_kw, "energy_kwh": self.energy_kwh}

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "zone_c": self.zone_c, "read_c": self.read_c,
                "outdoor_c": self.t_out, "external": int(self.external)}


class MapTesSim(MapSimDevice):
    role = "thermal_storage"

    @classmethod
    def rating_kw(cls, cfg) -> float:
        return max(cfg.max_charge_kw, cfg.max_discharge_kw)

    def __init__(self, cfg: DeviceConfig, site_max_kw: float,
                 regmap: RegisterMap | None = None) -> None:
        super().__init__(cfg, site_max_kw, regmap)
        self.stored_kwh = cfg.capacity_kwh * self.sim.initial_soc_pct / 100
        self._t_cmd: float | None = None
        self.t_s = 0.0
        if "revert" in self.held:
            self.held["revert"] = float(cfg.revert_s)

    def validate_points(self, changes: dict[str, float]) -> ExcCodes | None:
        sp = changes.get("setpoint", 0.0)
        return None if -self.cfg.max_discharge_kw <= sp <= self.cfg.max_charge_kw else (
            ExcCodes.ILLEGAL_VALUE)

    def on_points(self, changes: dict[str, float], before: dict[str, float]) -> None:
        self._t_cmd = self.t_s

    @property
    def soc_pct(self) -> float:
        return 100.0 * self.stored_kwh / self.cfg.capacity_kwh

    def step(self, env: Env, dt_s: float) -> float:
        self.t_s, c, h = env.t_s, self.cfg, dt_s / 3600
        if expired(self._t_cmd, int(self.held.get("revert", 0)), env.t_s):
            self.held["setpoint"] = 0.0
        kw = self.held.get("setpoint", 0.0)
        if kw > 0 and self.stored_kwh + kw * c.cop * h > c.capacity_kwh:
            kw = max((c.capacity_kwh - self.stored_kwh) / (c.cop * h), 0.0)
        if kw < 0 and self.stored_kwh + kw * c.cop * h < 0:
            kw = -self.stored_kwh / (c.cop * h)
        self.stored_kwh += kw * c.cop * h
        self.stored_kwh *= 1 - c.loss_pct_per_h / 100 * h
        self.power_kw = kw
        return -kw

    def point_values(self) -> dict[str, float]:
        c = self.cfg
        tank = c.empty_c - self.soc_pct / 100 * (c.empty_c - c.full_c)
        return {"power_kw": self.power_kw, "tank_temp_c": tank, "alarm_code": 0.0}

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "soc_pct": self.soc_pct}

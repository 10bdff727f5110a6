"""Simulated flexible load: a contactor module with its own power meter, served through its
register map (drivers/maps/flexload_generic.yaml) like the other map-driven devices.

While the relay is closed the load draws its rated power (a worst case for the controller:
every restore adds the full rating at once); the site counts it as consumption (− supply).
When `revert` > 0 s and the relay was not commanded for that long, the module returns to
its default state, the configured `safe_state`. Every contactor operation is recorded with
its simulated time, so tests can check minimum on/off times against what really happened.
"""

from __future__ import annotations

import math

from pymodbus.constants import ExcCodes

from drivers.modbus.regmap import RegisterMap
from edge.config import FlexLoadDevice
from hil.devices.base import Env, expired
from hil.devices.mapped import MapSimDevice

_VOLTAGE_V = 400.0  # three-phase line voltage


class MapFlexLoadSim(MapSimDevice):
    role = "load"
    cfg: FlexLoadDevice

    @classmethod
    def rating_kw(cls, cfg: FlexLoadDevice) -> float:
        return cfg.rated_kw

    def __init__(self, cfg: FlexLoadDevice, site_max_kw: float,
                 regmap: RegisterMap | None = None) -> None:
        super().__init__(cfg, site_max_kw, regmap)
        self.default = 1.0 if cfg.safe_state == "on" else 0.0
        self.held["relay"] = self.default
        if "revert" in self.held:
            self.held["revert"] = float(cfg.revert_s)
        self._t_cmd: float | None = None
        self.energy_kwh = 0.0
        self.closed = self.default >= 0.5  # the contactor as it is, after the last step
        self.operations: list[tuple[float, bool]] = []  # (sim s, closed) per switching

    @property
    def relay_on(self) -> bool:
        return self.held["relay"] >= 0.5

    def validate_points(self, changes: dict[str, float]) -> ExcCodes | None:
        if changes.get("relay", 0.0) not in (0.0, 1.0):
            return ExcCodes.ILLEGAL_VALUE
        if changes.get("revert", 0.0) < 0:
            return ExcCodes.ILLEGAL_VALUE
        return None

    def on_points(self, changes: dict[str, float], before: dict[str, float]) -> None:
        if "relay" in changes:
            self._t_cmd = self.t_s

    def step(self, env: Env, dt_s: float) -> float:
        self.t_s = env.t_s
        if (self.held["relay"] != self.default
                and expired(self._t_cmd, int(self.held.get("revert", 0)), env.t_s)):
            self.held["relay"] = self.default
        if self.relay_on != self.closed:
            self.closed = self.relay_on
            self.operations.append((env.t_s, self.closed))
        self.power_kw = self.cfg.rated_kw if self.closed else 0.0
        self.energy_kwh += self.power_kw * dt_s / 3600
        return -self.power_kw

    def point_values(self) -> dict[str, float]:
        return {
            "power_kw": self.power_kw, "relay_feedback": 1.0 if self.closed else 0.0,
            "current_a": self.power_kw * 1000 / (math.sqrt(3) * _VOLTAGE_V), "alarm_code": 0.0,
            "rated_kw": self.cfg.rated_kw, "energy_kwh": self.energy_kwh,
        }

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "on": int(self.closed),
                "operations": len(self.operations)}

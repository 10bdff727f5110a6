"""Simulated DC bus of a PEDF building (docs/domain.md §1): one droop-controlled converter between
the AC side and the bus, the DC loads on the bus and, optionally, PV on the bus, served
through the converter's register map (drivers/maps/dcdc_generic.yaml).

The converter supplies what the bus needs, DC loads − DC PV (+ into the bus; negative when
the bus PV exceeds its loads and the converter feeds the AC side), and holds the bus in
voltage droop:

    bus_v = v_ref − slope × power + fault offset,   slope = droop_pct % of nominal / rated_kw

Its dynamics (milliseconds) are far below a physics sub-step, so the bus sits at this
steady state every sub-step. The AC side sees the DC power through a fixed efficiency; the
site counts it as consumption (− supply), so the site balance and the PCC meter include the
DC loads. Not modelled: the converter's current limit (it delivers beyond rated_kw, only
the droop grows) and loads that follow the bus voltage themselves.

v_ref accepts writes within ±15 % of nominal and returns to nominal when `revert` > 0 s and
it was not re-written for that long. `inject_bus_fault(offset_v)` is the fault hook that
drives the bus out of its band whatever v_ref says (a failing voltage loop, a DC-side fault);
`clear_bus_fault()` ends it.
"""

from __future__ import annotations

from pymodbus.constants import ExcCodes

from drivers.modbus.regmap import RegisterMap
from edge.config import DcConverterDevice
from hil.devices.base import Env, expired
from hil.devices.mapped import MapSimDevice
from hil.physics import clear_sky_kw, load_kw

EFFICIENCY = 0.97  # AC <-> DC, either way
V_REF_RANGE = 0.15  # v_ref accepted within nominal ± this share
PROTECTION_BAND = 0.10  # the converter's own over/under-voltage alarm bits, ± share of nominal
_OVER_V, _UNDER_V, _OVERLOAD = 1, 2, 4  # alarm_word bits


class MapDcBusSim(MapSimDevice):
    role = "dcdc"
    cfg: DcConverterDevice

    @classmethod
    def rating_kw(cls, cfg: DcConverterDevice) -> float:
        return cfg.rated_kw

    def __init__(self, cfg: DcConverterDevice, site_max_kw: float,
                 regmap: RegisterMap | None = None) -> None:
        super().__init__(cfg, site_max_kw, regmap)
        self.nominal_v = cfg.bus_nominal_v
        self.slope_v_per_kw = self.sim.droop_pct / 100 * cfg.bus_nominal_v / cfg.rated_kw
        self.v_ref_min_v = cfg.bus_nominal_v * (1 - V_REF_RANGE)
        self.v_ref_max_v = cfg.bus_nominal_v * (1 + V_REF_RANGE)
        self.held["v_ref"] = self.nominal_v
        if "revert" in self.held:
            self.held["revert"] = float(cfg.revert_s)
        self._t_cmd: float | None = None
        self.fault_offset_v = 0.0
        self.dc_load_kw = self.dc_pv_kw = 0.0
        self.bus_v = self.nominal_v
        self.energy_in_kwh = self.energy_out_kwh = 0.0

    @property
    def v_ref(self) -> float:
        return self.held["v_ref"]

    def inject_bus_fault(self, offset_v: float) -> None:
        """Fault hook: the bus sits `offset_v` away from where the droop would hold it."""
        self.fault_offset_v = offset_v

    def clear_bus_fault(self) -> None:
        self.fault_offset_v = 0.0

    def validate_points(self, changes: dict[str, float]) -> ExcCodes | None:
        v = changes.get("v_ref", self.nominal_v)
        if not self.v_ref_min_v - 1e-6 <= v <= self.v_ref_max_v + 1e-6:
            return ExcCodes.ILLEGAL_VALUE
        if changes.get("revert", 0.0) < 0:
            return ExcCodes.ILLEGAL_VALUE
        return None

    def on_points(self, changes: dict[str, float], before: dict[str, float]) -> None:
        if "v_ref" in changes:
            self._t_cmd = self.t_s

    def step(self, env: Env, dt_s: float) -> float:
        self.t_s = env.t_s
        if (self.v_ref != self.nominal_v
                and expired(self._t_cmd, int(self.held.get("revert", 0)), env.t_s)):
            self.held["v_ref"] = self.nominal_v
        s = self.sim
        given = env.series_kw.get(self.id) if env.series_kw else None
        self.dc_load_kw = given if given is not None else load_kw(
            s.profile, env.t_local, s.base_kw, s.day_kw)
        self.dc_pv_kw = (clear_sky_kw(env.t_utc, env.latitude, env.longitude, s.peak_kw)
                         * s.cloud_factor if s.peak_kw else 0.0)
        self.power_kw = self.dc_load_kw - self.dc_pv_kw
        self.bus_v = max(0.0, self.v_ref - self.slope_v_per_kw * self.power_kw
                         + self.fault_offset_v)
        h = dt_s / 3600
        self.energy_in_kwh += max(self.power_kw, 0.0) * h
        self.energy_out_kwh += max(-self.power_kw, 0.0) * h
        p = self.power_kw
        return -(p / EFFICIENCY if p >= 0 else p * EFFICIENCY)  # AC side: − consumes

    def alarm_word(self) -> int:
        word = 0
        if self.bus_v > self.nominal_v * (1 + PROTECTION_BAND):
            word |= _OVER_V
        if self.bus_v < self.nominal_v * (1 - PROTECTION_BAND):
            word |= _UNDER_V
        if abs(self.power_kw) > self.cfg.rated_kw:
            word |= _OVERLOAD
        return word

    def point_values(self) -> dict[str, float]:
        p = self.power_kw
        return {
            "state": 3.0 if self.fault_offset_v else 2.0, "alarm_word": float(self.alarm_word()),
            "bus_v": self.bus_v, "bus_current_a": p * 1000 / self.bus_v if self.bus_v else 0.0,
            "power_kw": p, "temperature_c": 35.0 + 20.0 * min(abs(p) / self.cfg.rated_kw, 1.5),
            "rated_kw": self.cfg.rated_kw, "nominal_v": self.nominal_v,
            "droop_v_per_kw": self.slope_v_per_kw, "v_ref_min_v": self.v_ref_min_v,
            "v_ref_max_v": self.v_ref_max_v, "energy_in_kwh": self.energy_in_kwh,
            "energy_out_kwh": self.energy_out_kwh,
        }

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "bus_v": self.bus_v, "v_ref": self.v_ref,
                "dc_load_kw": self.dc_load_kw, "dc_pv_kw": self.dc_pv_kw}

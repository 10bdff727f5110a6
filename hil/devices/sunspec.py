"""The SunSpec simulators, one per role on its classic model chain: PV inverter (1, 103, 120,
123), battery PCS + BMS (1, 103, 124, 802), meter (1, 203). The chains found in the field
beyond these (7xx DER models, float inverters, other meter models) are hil/devices/variants.py.
"""

from __future__ import annotations

from pymodbus.constants import ExcCodes

from edge.config import BatteryDevice, MeterDevice, PvDevice
from hil.devices.base import Env, SimulatedDevice, Value, expired, power_sf
from hil.devices.roles import Metering, Storage
from hil.physics import clear_sky_kw, ramp_toward

AC = {"Hz": 50.0, "Hz_SF": -2, "PhVphA": 230.0, "PhVphB": 230.0, "PhVphC": 230.0, "V_SF": -1}


class PvInverter(SimulatedDevice):
    """PV inverter (models 1, 103, 120, 123): clear-sky output × cloud factor, capped by
    rating and, when enabled, by WMaxLimPct, which the device drops by itself (Ena → 0) when
    WMaxLimPct has not been re-written for WMaxLimPct_RvrtTms seconds (0 = never). Enabling
    (Ena 0 → 1) also starts the timer, so write order Ena-then-limit cannot trip it."""

    role = "pv"
    account = "pv"
    models = (1, 103, 120, 123)
    model_name = "HIL-PV"
    cfg: PvDevice

    @classmethod
    def rating_kw(cls, cfg: PvDevice) -> float:
        return cfg.rated_kw

    def __init__(self, cfg: PvDevice, site_max_kw: float) -> None:
        super().__init__(cfg, site_max_kw)
        self.rated_kw = cfg.rated_kw
        self.peak_kw = self.sim.peak_kw or cfg.rated_kw
        self.w_sf = power_sf(self.rated_kw * 1000)
        self.available_kw = 0.0
        self.wh = 0.0
        self._t_limit: float | None = None  # sim time of the last WMaxLimPct write
        self.rw[1] = {"DA": cfg.unit_id}
        self.rw[123] = {
            "WMaxLimPct": 100.0, "WMaxLimPct_WinTms": 0, "WMaxLimPct_RvrtTms": cfg.revert_s,
            "WMaxLimPct_RmpTms": 0, "WMaxLim_Ena": 0, "Conn": 1,
        }

    @property
    def limit_kw(self) -> float | None:
        c = self.rw[123]
        return float(c["WMaxLimPct"]) / 100 * self.rated_kw if c["WMaxLim_Ena"] == 1 else None

    def validate(self, model_id: int, changes: dict[str, Value]) -> ExcCodes | None:
        if model_id == 123:
            if not 0 <= float(changes.get("WMaxLimPct", 0)) <= 100:
                return ExcCodes.ILLEGAL_VALUE
            if changes.get("WMaxLim_Ena", 0) not in (0, 1):
                return ExcCodes.ILLEGAL_VALUE
        return None

    def on_write(self, model_id: int, changes: dict[str, Value], before: dict[str, Value]) -> None:
        enabling = changes.get("WMaxLim_Ena") == 1 and before["WMaxLim_Ena"] != 1
        if model_id == 123 and ("WMaxLimPct" in changes or enabling):
            self._t_limit = self.t_s

    def step(self, env: Env, dt_s: float) -> float:
        self.t_s = env.t_s
        c = self.rw[123]
        if c["WMaxLim_Ena"] == 1 and expired(self._t_limit, int(c["WMaxLimPct_RvrtTms"] or 0),
                                              env.t_s):
            c["WMaxLim_Ena"] = 0
        given = env.series_kw.get(self.id) if env.series_kw else None
        if given is None:
            given = clear_sky_kw(env.t_utc, env.latitude, env.longitude,
                                 self.peak_kw) * self.sim.cloud_factor
        self.available_kw = min(self.rated_kw, given)
        limit = self.limit_kw
        target = self.available_kw if limit is None else min(self.available_kw, limit)
        self.power_kw = ramp_toward(self.power_kw, target, self.cfg.ramp_kw_per_s, dt_s)
        self.wh += self.power_kw * 1000 * dt_s / 3600
        return self.power_kw

    def values(self) -> dict[int, dict[str, Value]]:
        throttled = self.limit_kw is not None and self.limit_kw < self.available_kw - 1e-6
        st = 2 if self.available_kw <= 0 else 5 if throttled else 4  # SLEEPING / THROTTLED / MPPT
        return {
            1: self.common(),
            103: {**AC, "W": self.power_kw * 1000, "W_SF": self.w_sf, "WH": int(self.wh),
                  "WH_SF": 0, "St": st},
            120: {"DERTyp": 4, "WRtg": self.rated_kw * 1000, "WRtg_SF": self.w_sf},
            123: {"WMaxLimPct_SF": -1},
        }

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "available_kw": self.available_kw,
                "limit_kw": self.limit_kw}


class BatteryPcs(Storage, SimulatedDevice):
    """Battery PCS + BMS (models 1, 103, 124, 802). Command (kW, + discharge) =
    ((OutWRte if StorCtl_Mod bit1) − (InWRte if bit0)) × WChaMax / 100; StorCtl_Mod drops to 0
    when neither rate was re-written for InOutWRte_RvrtTms seconds (0 = never; a mode change
    from 0 also starts the timer). The BMS protects itself at SoC 2 % / 100 % whatever the
    command; MinRsvPct is stored for the controller, not enforced."""

    role = "battery"
    models = (1, 103, 124, 802)
    model_name = "HIL-BESS"
    cfg: BatteryDevice

    def __init__(self, cfg: BatteryDevice, site_max_kw: float) -> None:
        super().__init__(cfg, site_max_kw)
        self._init_storage(cfg)
        self.w_sf = power_sf(max(cfg.max_charge_kw, cfg.max_discharge_kw) * 1000)
        self.wh_sf = power_sf(cfg.capacity_kwh * 1000)
        self._t_rate: float | None = None  # sim time of the last write touching a rate
        self.rw[1] = {"DA": cfg.unit_id}
        self.rw[124] = {
            "WChaMax": cfg.max_charge_kw * 1000, "StorCtl_Mod": 0, "MinRsvPct": cfg.soc_min_pct,
            "OutWRte": 0.0, "InWRte": 0.0, "InOutWRte_WinTms": 0,
            "InOutWRte_RvrtTms": cfg.revert_s, "InOutWRte_RmpTms": 0, "ChaGriSet": 1,
        }
        self.rw[802] = {"CtrlHb": 0}

    @property
    def command_kw(self) -> float:
        c = self.rw[124]
        mode = int(c["StorCtl_Mod"] or 0)
        pct = (float(c["OutWRte"]) if mode & 2 else 0.0) - (float(c["InWRte"]) if mode & 1 else 0.0)
        return pct * float(c["WChaMax"]) / 100 / 1000

    def validate(self, model_id: int, changes: dict[str, Value]) -> ExcCodes | None:
        if model_id != 124:
            return None
        if any(not -100 <= float(changes[k]) <= 100 for k in ("OutWRte", "InWRte") if k in changes):
            return ExcCodes.ILLEGAL_VALUE
        if int(changes.get("StorCtl_Mod", 0)) & ~3:
            return ExcCodes.ILLEGAL_VALUE
        if not 0 <= float(changes.get("MinRsvPct", 0)) <= 100:
            return ExcCodes.ILLEGAL_VALUE
        return None

    def on_write(self, model_id: int, changes: dict[str, Value], before: dict[str, Value]) -> None:
        arming = bool(changes.get("StorCtl_Mod")) and not before["StorCtl_Mod"]
        if model_id == 124 and ({"OutWRte", "InWRte"} & changes.keys() or arming):
            self._t_rate = self.t_s

    def step(self, env: Env, dt_s: float) -> float:
        self.t_s = env.t_s
        c = self.rw[124]
        if c["StorCtl_Mod"] and expired(self._t_rate, int(c["InOutWRte_RvrtTms"] or 0), env.t_s):
            c["StorCtl_Mod"] = 0
        self.power_kw = self.battery.step(self.command_kw, dt_s)
        return self.power_kw

    def cha_st(self) -> int:
        b = self.battery
        if self.power_kw > 1e-6:
            return 3
        if self.power_kw < -1e-6:
            return 4
        if b.soc_pct <= b.soc_min_pct + 1e-6:
            return 2
        return 5 if b.soc_pct >= b.soc_max_pct - 1e-6 else 6

    def values(self) -> dict[int, dict[str, Value]]:
        b, cfg = self.battery, self.cfg
        soc = b.soc_pct
        return {
            1: self.common(),
            103: {**AC, "W": self.power_kw * 1000, "W_SF": self.w_sf,
                  "St": 4 if abs(self.power_kw) > 1e-6 else 8},  # on / STANDBY
            124: {
                "WChaMax_SF": self.w_sf, "InOutWRte_SF": -2, "MinRsvPct_SF": -1,
                "ChaState": soc, "ChaState_SF": -1, "ChaSt": self.cha_st(),
            },
            802: {
                "WHRtg": cfg.capacity_kwh * 1000, "WHRtg_SF": self.wh_sf,
                "WChaRteMax": cfg.max_charge_kw * 1000,
                "WDisChaRteMax": cfg.max_discharge_kw * 1000,
                "WChaDisChaMax_SF": self.w_sf, "SoC": soc, "SoCMin": b.soc_min_pct,
                "SoCMax": b.soc_max_pct, "SoC_SF": -1, "SoH": 100, "SoH_SF": 0,
                "ChaSt": self.cha_st(),
                "LocRemCtl": 0, "Typ": 4, "State": 3, "Hb": int(self.t_s) & 0xFFFF,
            },
        }


class Meter(Metering, SimulatedDevice):
    """Three-phase meter (models 1, 203). `measures: grid` is the PCC meter, which balances
    the site (W = + import); `measures: load` meters the building load and *is* the load:
    its sim profile drives consumption. Import/export counters in Wh (acc32)."""

    role = "meter"
    models = (1, 203)
    cfg: MeterDevice

    def __init__(self, cfg: MeterDevice, site_max_kw: float) -> None:
        super().__init__(cfg, site_max_kw)
        self._init_metering(cfg)
        self.model_name = f"HIL-METER-{cfg.measures.upper()}"
        self.w_sf = power_sf(site_max_kw * 1000)
        self.rw[1] = {"DA": cfg.unit_id}

    def values(self) -> dict[int, dict[str, Value]]:
        w = self.power_kw * 1000
        return {
            1: self.common(),
            203: {
                **AC, "PhV": 230.0, "W": w, "WphA": w / 3, "WphB": w / 3, "WphC": w / 3,
                "W_SF": self.w_sf,
                "TotWhImp": int(self.import_kwh * 1000), "TotWhExp": int(self.export_kwh * 1000),
                "TotWh_SF": 0,
            },
        }

"""SunSpec devices served through other model chains (`sim.models` in the config): the same
physics as hil/devices/sunspec.py behind the combinations found in the field, so the drivers are
tested against each: IEEE 1547-2018 "DER" devices (701 measurement, 702 capacity, 704
controls, 713 storage, 715 heartbeat), float inverters (111-113), single-, split-phase and
delta meters (201, 202, 204).

Device-side behaviour a driver has to cope with, beyond what the classic devices do:
- 704 WMaxLimPct (PV) and WSet (battery) act while their Ena is 1; each has its own revert
  timer (WMaxLimPctRvrtTms / WSetRvrtTms, 0 = never), started by a write of the setpoint or
  by enabling. When it runs out the device takes the reversion values the controller left
  (WMaxLimPctRvrt + WMaxLimPctEnaRvrt, WSetRvrt + WSetEnaRvrt), as IEEE 1547.1 describes;
  WSetMod chooses watts (WSet) or % of WMax (WSetPct).
- Heartbeat watchdog: once the controller heartbeat (715 ControllerHb, 802 CtrlHb) has
  changed, it must change again within `sim.heartbeat_timeout_s` (simulated seconds). If it
  does not, every control falls back as on its revert timer (704: reversion values, 123:
  limit disabled, 124: StorCtl_Mod 0) and the watchdog waits for the next change.
"""

from __future__ import annotations

from typing import ClassVar

from pymodbus.constants import ExcCodes

from edge.config import BatteryDevice, MeterDevice, PvDevice
from hil.config import sim_of
from hil.devices.base import Env, SimulatedDevice, Value, expired
from hil.devices.sunspec import AC, BatteryPcs, Meter, PvInverter

MEASURE = (101, 102, 103, 111, 112, 113, 701)
HEARTBEATS = ((715, "ControllerHb"), (802, "CtrlHb"))
# (function, enable, its reversion, setpoints -> their reversion, revert timer, time left)
_FUNCTIONS = (
    ("WMaxLimPct", "WMaxLimPctEna", "WMaxLimPctEnaRvrt", {"WMaxLimPct": "WMaxLimPctRvrt"},
     "WMaxLimPctRvrtTms", "WMaxLimPctRvrtRem"),
    ("WSet", "WSetEna", "WSetEnaRvrt", {"WSet": "WSetRvrt", "WSetPct": "WSetPctRvrt"},
     "WSetRvrtTms", "WSetRvrtRem"),
)


class _Variant:
    """The chain from `sim.models`, the measurement models, 704 timers and the watchdog.
    Mixed in before a classic device class, whose physics and 1xx controls it keeps."""

    supported: ClassVar[frozenset[int]]
    needs: ClassVar[tuple[tuple[str, tuple[int, ...]], ...]]
    role: ClassVar[str]
    models: tuple[int, ...]
    starts: dict[int, int]
    rw: dict[int, dict[str, Value]]
    t_s: float
    id: str
    w_sf: int

    @classmethod
    def check_models(cls, models: list[int] | tuple[int, ...], device_id: str) -> None:
        """ValueError unless this simulator can serve `models` as a device of its role."""
        if not models or models[0] != 1:
            raise ValueError(f"device {device_id}: a SunSpec chain starts with model 1")
        if len(set(models)) != len(models):
            raise ValueError(f"device {device_id}: sim.models lists a model twice")
        if unknown := [m for m in models if m not in cls.supported]:
            raise ValueError(f"device {device_id}: the HIL {cls.role} does not simulate SunSpec "
                             f"model(s) {unknown}; it serves {sorted(cls.supported)}")
        for what, options in cls.needs:
            if not set(options) & set(models):
                raise ValueError(f"device {device_id}: sim.models {list(models)} needs a "
                                 f"{what} model ({', '.join(map(str, options))})")

    def check_chain(self, models: list[int] | tuple[int, ...]) -> None:
        self.check_models(models, self.id)

    def _init_variant(self, timeout_s: float) -> None:
        self.heartbeat_timeout_s = timeout_s
        self.fallbacks = 0  # times the watchdog fired
        self._hb_t: float | None = None  # sim time the controller heartbeat last changed
        self._t_set: dict[str, float | None] = {}  # 704 function -> sim time its timer started
        self.wh_out = self.wh_in = 0.0  # delivered / absorbed, for 701 and 1xx WH

    def rechain(self, models: list[int] | tuple[int, ...]) -> None:
        SimulatedDevice.rechain(self, models)  # type: ignore[arg-type]
        self._hb_t, self._t_set = None, {}  # a restarted device: timers and watchdog idle

    # -- controls -----------------------------------------------------------------------
    def _on_variant_write(self, model_id: int, changes: dict[str, Value],
                          before: dict[str, Value]) -> None:
        if model_id == 704:
            for fn, ena, _, setpoints, _, _ in _FUNCTIONS:
                enabling = changes.get(ena) == 1 and before.get(ena) != 1
                if enabling or setpoints.keys() & changes.keys():
                    self._t_set[fn] = self.t_s
        for mid, point in HEARTBEATS:
            if model_id == mid and point in changes and changes[point] != before.get(point):
                self._hb_t = self.t_s

    def _revert(self, fn: str) -> None:
        _, ena, ena_rvrt, setpoints, _, _ = next(f for f in _FUNCTIONS if f[0] == fn)
        c = self.rw[704]
        for point, rvrt in setpoints.items():
            if c.get(rvrt) is not None:
                c[point] = c[rvrt]
        c[ena] = c.get(ena_rvrt) or 0
        self._t_set[fn] = None

    def _fall_back(self) -> None:
        """Controller lost: every active control as on its revert timer."""
        if 704 in self.starts:
            for fn, ena, *_ in _FUNCTIONS:
                if self.rw[704].get(ena) == 1:
                    self._revert(fn)
        if 123 in self.starts:
            self.rw[123]["WMaxLim_Ena"] = 0
        if 124 in self.starts:
            self.rw[124]["StorCtl_Mod"] = 0

    def _tick(self, env: Env) -> None:
        """Before physics: the watchdog, then the 704 revert timers."""
        self.t_s = env.t_s
        if self._hb_t is not None and env.t_s - self._hb_t > self.heartbeat_timeout_s:
            self._hb_t = None
            self.fallbacks += 1
            self._fall_back()
        if 704 in self.starts:
            c = self.rw[704]
            for fn, ena, _, _, tms, _ in _FUNCTIONS:
                if c.get(ena) == 1 and expired(self._t_set.get(fn), int(c.get(tms) or 0), env.t_s):
                    self._revert(fn)

    def _remaining(self, fn: str, ena: str, tms: str) -> int:
        c, t0 = self.rw[704], self._t_set.get(fn)
        revert = int(c.get(tms) or 0)
        if c.get(ena) != 1 or t0 is None or revert <= 0:
            return 0
        return max(0, int(revert - (self.t_s - t0)))

    # -- register values ----------------------------------------------------------------
    def _measure(self, kw: float, st_1xx: int, inv_st: int) -> dict[int, dict[str, Value]]:
        """All measurement models for an AC output of `kw` (+ delivered); the chain picks."""
        w = kw * 1000
        amps = abs(w) / (3 * 230.0)
        integer = {**AC, "W": w, "W_SF": self.w_sf, "A": amps, "AphA": amps / 3,
                   "AphB": amps / 3, "AphC": amps / 3, "A_SF": -1, "WH": int(self.wh_out),
                   "WH_SF": 0, "St": st_1xx}
        floats = {"W": w, "A": amps, "AphA": amps / 3, "AphB": amps / 3, "AphC": amps / 3,
                  "Hz": 50.0, "PhVphA": 230.0, "PhVphB": 230.0, "PhVphC": 230.0,
                  "WH": self.wh_out, "St": st_1xx, "TmpCab": 35.0}
        der = {"ACType": 2, "St": 1, "InvSt": inv_st, "ConnSt": 1, "W": w, "W_SF": self.w_sf,
               "A": amps, "A_SF": -1, "LLV": 400.0, "LNV": 230.0, "V_SF": -1, "Hz": 50.0,
               "Hz_SF": -2, "TotWhInj": int(self.wh_out), "TotWhAbs": int(self.wh_in),
               "TotWh_SF": 0, "WL1": w / 3, "WL2": w / 3, "WL3": w / 3}
        return {101: integer, 102: integer, 103: integer, 111: floats, 112: floats, 113: floats,
                701: der}

    def _controls(self) -> dict[int, dict[str, Value]]:
        rem = {rem: self._remaining(fn, ena, tms) for fn, ena, _, _, tms, rem in _FUNCTIONS}
        ctl = {"WMaxLimPct_SF": -1, "WMaxLimPctRvrtRem": rem["WMaxLimPctRvrtRem"],
               **self._setpoint_controls(rem)}
        return {704: ctl, 715: {"LocRemCtl": 0, "DERHb": int(self.t_s) % 0xFFFFFFFF}}

    def _setpoint_controls(self, rem: dict[str, int]) -> dict[str, Value]:
        """704 points of an active-power setpoint (WSet), for a device that has one."""
        return {}

    def variant_state(self) -> dict[str, float | int | None]:
        return {"fallbacks": self.fallbacks}


class PvVariant(_Variant, PvInverter):
    """PV inverter on any chain of: a measurement model (101-103, 111-113 or 701), a
    nameplate (120 or 702, with 121 settings), a limit control (123 or 704), 715."""

    supported = frozenset({1, *MEASURE, 120, 121, 123, 702, 704, 715})
    needs = (("measurement", MEASURE), ("nameplate", (120, 702)), ("limit control", (123, 704)))

    def __init__(self, cfg: PvDevice, site_max_kw: float) -> None:
        models = sim_of(cfg).models
        assert models is not None
        self.check_models(models, cfg.id)
        self.models = tuple(models)  # per-instance chain, read by the base __init__
        super().__init__(cfg, site_max_kw)
        self._init_variant(self.sim.heartbeat_timeout_s)
        rated_w = self.rated_kw * 1000
        self.rw |= {
            121: {"WMax": rated_w},
            702: {"WMax": rated_w},
            704: {"WMaxLimPctEna": 0, "WMaxLimPct": 100.0, "WMaxLimPctRvrt": 100.0,
                  "WMaxLimPctEnaRvrt": 0, "WMaxLimPctRvrtTms": cfg.revert_s},
            715: {"ControllerHb": 0, "AlarmReset": 0},
        }

    @property
    def limit_kw(self) -> float | None:
        limits = []
        c = self.rw[704]
        if 704 in self.starts and c["WMaxLimPctEna"] == 1:
            wmax = self.rw[702]["WMax"] if 702 in self.starts else None
            base_kw = self.rated_kw if wmax is None else float(wmax) / 1000
            limits.append(float(c["WMaxLimPct"]) / 100 * base_kw)
        if 123 in self.starts and (classic := PvInverter.limit_kw.fget(self)) is not None:
            limits.append(classic)
        return min(limits) if limits else None

    def validate(self, model_id: int, changes: dict[str, Value]) -> ExcCodes | None:
        if model_id == 704:
            if any(k.startswith("WSet") for k in changes):
                return ExcCodes.ILLEGAL_VALUE  # an inverter without an active-power setpoint
            if any(not 0 <= float(changes[k]) <= 100 for k in ("WMaxLimPct", "WMaxLimPctRvrt")
                   if k in changes):
                return ExcCodes.ILLEGAL_VALUE
            if any(changes[k] not in (0, 1) for k in ("WMaxLimPctEna", "WMaxLimPctEnaRvrt")
                   if k in changes):
                return ExcCodes.ILLEGAL_VALUE
        if model_id in (121, 702) and not 0 < float(changes.get("WMax", 1)) <= self.rated_kw * 1000:
            return ExcCodes.ILLEGAL_VALUE
        return super().validate(model_id, changes)

    def on_write(self, model_id: int, changes: dict[str, Value], before: dict[str, Value]) -> None:
        super().on_write(model_id, changes, before)
        self._on_variant_write(model_id, changes, before)

    def step(self, env: Env, dt_s: float) -> float:
        self._tick(env)
        kw = super().step(env, dt_s)
        self.wh_out = self.wh
        return kw

    def values(self) -> dict[int, dict[str, Value]]:
        classic = super().values()
        st = int(classic[103]["St"])  # type: ignore[arg-type]
        inv_st = {2: 1, 5: 4}.get(st, 3)  # SLEEPING, THROTTLED, else RUNNING
        rated_w = self.rated_kw * 1000
        return {
            **classic, **self._measure(self.power_kw, st, inv_st), **self._controls(),
            121: {"WMax_SF": self.w_sf},
            702: {"WMaxRtg": rated_w, "VAMaxRtg": rated_w, "VNomRtg": 230.0, "W_SF": self.w_sf,
                  "VA_SF": self.w_sf, "V_SF": 0},
        }

    def state(self) -> dict[str, float | int | None]:
        return {**super().state(), **self.variant_state()}


class BatteryVariant(_Variant, BatteryPcs):
    """Battery PCS + BMS on any chain of: a measurement model (101-103, 111-113 or 701),
    a power control (124 or 704), state of charge (124 ChaState, 713 and/or 802), 702, 715.
    A 704 WSet in force (WSetEna 1) wins over 124."""

    supported = frozenset({1, *MEASURE, 124, 702, 704, 713, 715, 802})
    needs = (("measurement", MEASURE), ("power control", (124, 704)))

    def __init__(self, cfg: BatteryDevice, site_max_kw: float) -> None:
        models = sim_of(cfg).models
        assert models is not None
        self.check_models(models, cfg.id)
        self.models = tuple(models)
        super().__init__(cfg, site_max_kw)
        self._init_variant(self.sim.heartbeat_timeout_s)
        self.rw |= {
            702: {"WMax": max(cfg.max_charge_kw, cfg.max_discharge_kw) * 1000,
                  "WChaRteMax": cfg.max_charge_kw * 1000,
                  "WDisChaRteMax": cfg.max_discharge_kw * 1000},
            704: {"WMaxLimPctEna": 0, "WMaxLimPct": 100.0, "WMaxLimPctRvrt": 100.0,
                  "WMaxLimPctEnaRvrt": 0, "WMaxLimPctRvrtTms": cfg.revert_s,
                  "WSetEna": 0, "WSetMod": 1, "WSet": 0.0, "WSetRvrt": 0.0, "WSetPct": 0.0,
                  "WSetPctRvrt": 0.0, "WSetEnaRvrt": 0, "WSetRvrtTms": cfg.revert_s},
            715: {"ControllerHb": 0, "AlarmReset": 0},
        }

    @classmethod
    def check_models(cls, models: list[int] | tuple[int, ...], device_id: str) -> None:
        super().check_models(models, device_id)
        if not {124, 713, 802} & set(models):
            raise ValueError(f"device {device_id}: sim.models {list(models)} needs a state of "
                             "charge model (124, 713 or 802)")

    def _setpoint_controls(self, rem: dict[str, int]) -> dict[str, Value]:
        return {"WSet_SF": self.w_sf, "WSetPct_SF": -1, "WSetRvrtRem": rem["WSetRvrtRem"]}

    @property
    def command_kw(self) -> float:
        c = self.rw[704]
        if 704 in self.starts and c["WSetEna"] == 1:
            if c["WSetMod"] == 1:
                return float(c["WSet"]) / 1000
            return float(c["WSetPct"]) * float(self.rw[702]["WMax"]) / 100 / 1000
        return BatteryPcs.command_kw.fget(self) if 124 in self.starts else 0.0

    def validate(self, model_id: int, changes: dict[str, Value]) -> ExcCodes | None:
        cfg = self.cfg
        if model_id == 704:
            for k in ("WSet", "WSetRvrt"):
                if k in changes and not (-cfg.max_charge_kw * 1000 - 1e-6 <= float(changes[k])
                                         <= cfg.max_discharge_kw * 1000 + 1e-6):
                    return ExcCodes.ILLEGAL_VALUE
            if any(not -100 <= float(changes[k]) <= 100 for k in ("WSetPct", "WSetPctRvrt")
                   if k in changes):
                return ExcCodes.ILLEGAL_VALUE
            if any(changes[k] not in (0, 1) for k in ("WSetEna", "WSetEnaRvrt", "WSetMod",
                                                      "WMaxLimPctEna", "WMaxLimPctEnaRvrt")
                   if k in changes):
                return ExcCodes.ILLEGAL_VALUE
        return super().validate(model_id, changes)

    def on_write(self, model_id: int, changes: dict[str, Value], before: dict[str, Value]) -> None:
        super().on_write(model_id, changes, before)
        self._on_variant_write(model_id, changes, before)

    def step(self, env: Env, dt_s: float) -> float:
        self._tick(env)
        kw = super().step(env, dt_s)
        self.wh_out += max(kw, 0.0) * 1000 * dt_s / 3600
        self.wh_in += max(-kw, 0.0) * 1000 * dt_s / 3600
        return kw

    def values(self) -> dict[int, dict[str, Value]]:
        classic = super().values()
        b, cfg = self.battery, self.cfg
        running = abs(self.power_kw) > 1e-6
        wh = cfg.capacity_kwh * 1000
        max_w = max(cfg.max_charge_kw, cfg.max_discharge_kw) * 1000
        return {
            **classic, **self._measure(self.power_kw, 4 if running else 8, 3 if running else 7),
            **self._controls(),
            702: {"WMaxRtg": max_w, "WChaRteMaxRtg": cfg.max_charge_kw * 1000,
                  "WDisChaRteMaxRtg": cfg.max_discharge_kw * 1000, "VNomRtg": 230.0,
                  "W_SF": self.w_sf, "V_SF": 0},
            713: {"WHRtg": wh, "WHAvail": wh * max(b.soc_pct - b.soc_min_pct, 0.0) / 100,
                  "SoC": b.soc_pct, "SoH": 100.0, "Sta": 0, "WH_SF": self.wh_sf, "Pct_SF": -1},
        }

    def state(self) -> dict[str, float | int | None]:
        return {**super().state(), **self.variant_state()}


class MeterVariant(Meter):
    """Three-phase, single-, split-phase or delta meter (203, 201, 202, 204): same values."""

    supported = frozenset({1, 201, 202, 203, 204})

    def __init__(self, cfg: MeterDevice, site_max_kw: float) -> None:
        models = sim_of(cfg).models
        assert models is not None
        self.check_models(models, cfg.id)
        self.models = tuple(models)
        super().__init__(cfg, site_max_kw)

    @classmethod
    def check_models(cls, models: list[int] | tuple[int, ...], device_id: str) -> None:
        if not models or models[0] != 1 or len(set(models)) != len(models):
            raise ValueError(f"device {device_id}: a SunSpec chain starts with model 1 and "
                             "lists each model once")
        if unknown := [m for m in models if m not in cls.supported]:
            raise ValueError(f"device {device_id}: the HIL meter does not simulate SunSpec "
                             f"model(s) {unknown}; it serves {sorted(cls.supported)}")
        if not {201, 202, 203, 204} & set(models):
            raise ValueError(f"device {device_id}: sim.models {list(models)} needs a meter "
                             "model (201, 202, 203 or 204)")

    def check_chain(self, models: list[int] | tuple[int, ...]) -> None:
        self.check_models(models, self.id)

    def values(self) -> dict[int, dict[str, Value]]:
        classic = super().values()
        return {1: classic[1], **dict.fromkeys((201, 202, 203, 204), classic[203])}


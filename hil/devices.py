"""Simulated SunSpec devices: physics state on one side, a SunSpec register image on the other.

One class per device role, registered in `DEVICE_TYPES` by role, so a DC/DC converter, an EV
charger or a flexible-load group is one more subclass with its models, its `step` and its
`values`; the site and the Modbus plumbing do not change. A config that gives `sim.models`
gets the same device on that SunSpec model chain (7xx DER models, float inverters, other
meter models: hil/sunspec_variants.py). Each device:

- `step(env, dt_s) -> kW` advances its physics and returns what it supplies to the site's
  AC bus (+ supplies: PV, discharging battery; − consumes: loads, charging battery);
  a *balancing* device (the PCC meter) instead gets `measure(kW, dt_s)` with the residual;
- `values()` gives engineering values per model (scale factors included), encoded with the
  same codec the driver decodes with (drivers/sunspec/models.py), so both sides share one truth;
- RW points accept writes, validated by `validate` and acted on in `on_write`; every
  accepted RW value is remembered and read back. RO points reject writes with
  ILLEGAL_ADDRESS (pymodbus enforces it from the per-register `readonly` flag).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import ClassVar

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.dlt645.frame import transformer_factor
from drivers.modbus.regmap import RegisterMap, load_map
from drivers.sunspec.models import (
    BASES,
    SunSpecError,
    chain_registers,
    decode,
    encode_point,
    layout,
    model,
)
from edge.config import BatteryDevice, MeterDevice, PvDevice
from hil.physics import Battery, clear_sky_kw, load_kw, ramp_toward

BASE = 40000
Value = float | int | str | None


def power_sf(max_w: float) -> int:
    """Scale factor that keeps ±max_w inside int16 with margin (30 000 counts)."""
    return max(0, math.ceil(math.log10(max(max_w, 1.0) / 30000)))


@dataclass(frozen=True, slots=True)
class Fault:
    """How a unit misbehaves on the wire (fault injection; `SimSite.inject`).

    delay_s:   every request is answered only after this many wall seconds (a slow device);
    exception: every request is answered with this Modbus exception code instead
               (e.g. 4 DEVICE_FAILURE, 6 DEVICE_BUSY), after the delay if both are set;
    drop:      the next request is not answered: the server closes the client's TCP
               connection instead (one shot; `delay_s` / `exception` stay armed)."""

    delay_s: float = 0.0
    exception: int | None = None
    drop: bool = False

    def __post_init__(self) -> None:
        if self.delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        if self.exception is not None:
            ExcCodes(self.exception)  # ValueError for a code Modbus does not define


@dataclass(frozen=True, slots=True)
class Env:
    """The world a device sees during one physics sub-step."""

    t_s: float  # simulated seconds since the site started (revert timers, heartbeats)
    t_utc: datetime
    t_local: datetime
    latitude: float
    longitude: float
    # kW a scenario prescribes per device id (PV: available, load meter: drawn); a device
    # not in it (or None) follows its own sim profile
    series_kw: dict[str, float] | None = None


class SimulatedDevice:
    """Base: register image, write handling and the pymodbus `SimDevice` for one unit id."""

    role: ClassVar[str]
    models: ClassVar[tuple[int, ...]]
    model_name: str = "HIL"  # model 1 Md
    balancing: bool = False  # True: gets the site residual via measure() instead of step()
    # Fault injection on the wire (SimSite.inject); class defaults, so subclasses that build
    # their own state without this __init__ still serve.
    fault: Fault | None = None
    on_drop: Callable[[], None] | None = None  # closes the client connections (set by the site)
    drops: int = 0  # connections dropped by an injected `drop` fault
    base: int = BASE  # register of the "SunS" marker (`serve_at`)

    def __init__(self, cfg: PvDevice | BatteryDevice | MeterDevice, site_max_kw: float) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.t_s = 0.0
        self.power_kw = 0.0
        self.online = True  # False: fault injection, the unit does not answer
        self.starts = layout(list(self.models), self.base)
        self.rw: dict[int, dict[str, Value]] = {m: {} for m in self.models}
        self._image = chain_registers(list(self.models))
        self._access = self._access_map()

    # -- behaviour (subclasses) ---------------------------------------------------------
    def step(self, env: Env, dt_s: float) -> float:
        """Advance physics by dt_s; return kW supplied to the site (+ supply / − consume)."""
        raise NotImplementedError

    def measure(self, kw: float, dt_s: float) -> None:
        """Balancing devices only: the site residual (+ import) over the last dt_s."""
        raise NotImplementedError

    def values(self) -> dict[int, dict[str, Value]]:
        """Measured/static values per model, in engineering units, scale factors included."""
        raise NotImplementedError

    def validate(self, model_id: int, changes: dict[str, Value]) -> ExcCodes | None:
        """Reject a write before anything changes (None = accept)."""
        return None

    def on_write(self, model_id: int, changes: dict[str, Value], before: dict[str, Value]) -> None:
        """React to an accepted write (timers, modes); `self.rw` already holds the new values,
        `before` the model's RW values as they were."""

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw}

    # -- register image -----------------------------------------------------------------
    def _access_map(self) -> list[bool]:
        """Per register of the image: True if writable (an RW point of a model)."""
        rw = [False] * len(self._image)
        for mid, start in self.starts.items():
            for p in model(mid).points.values():
                if p.access == "RW":
                    for a in range(p.size):
                        rw[start - self.base + p.offset + a] = True
        return rw

    def simdata(self) -> list[SimData]:
        """Contiguous runs of equal access as SimData blocks, so pymodbus enforces RO."""
        self.refresh(self._image, self.base)
        blocks, run_start = [], 0
        for i in range(1, len(self._image) + 1):
            if i == len(self._image) or self._access[i] != self._access[run_start]:
                blocks.append(SimData(
                    address=self.base + run_start,
                    values=self._image[run_start:i],
                    datatype=DataType.REGISTERS,
                    readonly=not self._access[run_start],
                ))
                run_start = i
        return blocks

    def sim_device(self) -> SimDevice:
        return SimDevice(id=self.cfg.unit_id, simdata=self.simdata(), action=self.action)

    def rechain(self, models: list[int] | tuple[int, ...]) -> None:
        """Fault injection: the unit comes back with another SunSpec model chain (a firmware
        update, a reconfigured unit). Takes effect on the next `sim_device()`, i.e. when the
        site restarts the unit's server. Models the device has no values for read as "not
        implemented"; values of models no longer in the chain are not served."""
        self.check_chain(models)
        self.models = tuple(models)  # type: ignore[misc]  # per-instance chain from now on
        self.starts = layout(list(self.models), self.base)
        for m in self.models:
            self.rw.setdefault(m, {})
        self._image = chain_registers(list(self.models))
        self._access = self._access_map()

    def serve_at(self, base: int) -> None:
        """Serve the chain with its "SunS" marker at `base`: 40000 is the default, and
        devices in the field also use 0 and 50000. Like `rechain`, it takes effect when the
        unit's server (re)starts; the unit's settings are kept."""
        if base not in BASES:
            raise ValueError(f"device {self.id}: SunSpec base {base} is none of {list(BASES)}")
        self.base = base
        self.rechain(self.models)

    def check_chain(self, models: list[int] | tuple[int, ...]) -> None:
        """Raise ValueError unless `models` is a chain this unit can serve."""
        if not type(self).models:
            raise ValueError(f"device {self.id}: not a SunSpec device; it has no model chain")
        if not models or models[0] != 1:
            raise ValueError("a SunSpec chain starts with model 1")
        for m in models:
            model(m)  # SunSpecError for a model without a definition

    async def gate(self, function_code: int) -> ExcCodes | None:
        """What any unit answers before its registers are looked at: offline, an injected
        fault, or a coil request (our devices are registers only)."""
        if not self.online:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if (fault := await self.fault_reply()) is not None:
            return ExcCodes.DEVICE_FAILURE if fault is True else fault  # dropped: never sent
        if function_code in (1, 2, 5, 15):
            return ExcCodes.ILLEGAL_FUNCTION
        return None

    async def fault_reply(self) -> ExcCodes | None | bool:
        """Apply the injected fault before a request: an exception code to answer with,
        True when the connection was dropped instead, or None to serve normally."""
        f = self.fault
        if f is None:
            return None
        if f.drop:
            self.fault = replace(f, drop=False) if (f.delay_s or f.exception is not None) else None
            self.drops += 1
            if self.on_drop is not None:
                self.on_drop()
            return True
        if f.delay_s:
            await asyncio.sleep(f.delay_s)
        return None if f.exception is None else ExcCodes(f.exception)

    def refresh(self, registers: list[int], start_address: int) -> None:
        """Encode the current values into `registers` (which begins at `start_address`)."""
        for mid, vals in self.values().items():
            if mid not in self.starts:
                continue  # not in the chain the unit serves now (see `rechain`)
            vals = {**vals, **self.rw[mid]}
            mdef, mstart = model(mid), self.starts[mid] - start_address
            for name, value in vals.items():
                p = mdef.point(name)
                sf = vals.get(p.sf) if isinstance(p.sf, str) else p.sf
                at = mstart + p.offset
                registers[at : at + p.size] = encode_point(p, value, int(sf or 0))

    def read(self, model_id: int) -> dict[str, Value]:
        """Decoded view of one model, as a client would see it (for tests and logs)."""
        regs = list(self._image)
        self.refresh(regs, self.base)
        at = self.starts[model_id] - self.base
        return decode(model(model_id), regs[at : at + 2 + model(model_id).length])

    def write_registers(self, address: int, values: list[int], registers: list[int],
                        start_address: int) -> ExcCodes | None:
        """Decode a register write into point changes per model, validate all, then apply."""
        end = address + len(values)
        pending: list[tuple[int, dict[str, Value]]] = []
        for mid, mstart in self.starts.items():
            mdef = model(mid)
            mend = mstart + 2 + mdef.length
            if end <= mstart or address >= mend:
                continue
            old = registers[mstart - start_address : mend - start_address]
            regs = list(old)
            for i, v in enumerate(values):
                if mstart <= address + i < mend:
                    regs[address + i - mstart] = v
            dec = decode(mdef, regs)
            touched: dict[str, Value] = {}
            for p in mdef.points.values():
                if p.access != "RW" or not _overlaps(mstart + p.offset, p.size, address, end):
                    continue
                span = slice(p.offset, p.offset + p.size)
                if dec[p.name] is None:
                    if regs[span] == old[span]:
                        continue  # "not implemented" written back unchanged: a block write
                    return ExcCodes.ILLEGAL_VALUE
                touched[p.name] = dec[p.name]
            if rc := self.validate(mid, touched):
                return rc
            pending.append((mid, touched))
        for mid, touched in pending:
            before = dict(self.rw[mid])
            self.rw[mid].update(touched)
            self.on_write(mid, touched, before)
        return None

    async def action(self, function_code: int, start_address: int, address: int, count: int,
                     current_registers: list[int], set_values: list[int] | list[bool] | None
                     ) -> ExcCodes | None:
        """pymodbus hook, called before every read and write of this unit."""
        if (rc := await self.gate(function_code)) is not None:
            return rc
        if set_values is None:
            self.refresh(current_registers, start_address)
            return None
        return self.write_registers(address, [int(v) for v in set_values],
                                    current_registers, start_address)

    def common(self) -> dict[str, Value]:
        return {"Mn": "PEDF-HIL", "Md": self.model_name, "SN": self.id, "Vr": "0.1",
                "DA": self.cfg.unit_id}


def _overlaps(start: int, size: int, lo: int, hi: int) -> bool:
    return start < hi and lo < start + size


def _expired(t_write: float | None, revert_s: int, now_s: float) -> bool:
    """A revert timer ran out: set, armed (> 0 s) and not refreshed for revert_s seconds."""
    return t_write is not None and revert_s > 0 and now_s - t_write >= revert_s


DEVICE_TYPES: dict[str, type[SimulatedDevice]] = {}  # role -> SunSpec simulator (default)
PROTOCOL_TYPES: dict[tuple[str, str], type[SimulatedDevice]] = {}  # (role, protocol) -> simulator
_MAP_PROTOCOLS = ("modbus-tcp", "modbus-rtu")  # described by a register map, never SunSpec
_NOT_SUNSPEC = (*_MAP_PROTOCOLS, "dlt645-tcp", "dlt645-serial")  # never fall back to SunSpec


def register(cls: type[SimulatedDevice]) -> type[SimulatedDevice]:
    """By role (SunSpec, the default), or by role and protocol when the class names them."""
    protocols = getattr(cls, "protocols", ())
    for proto in protocols:
        PROTOCOL_TYPES[(cls.role, proto)] = cls
    if not protocols:
        DEVICE_TYPES[cls.role] = cls
    return cls


def build(cfg: PvDevice | BatteryDevice | MeterDevice, site_max_kw: float) -> SimulatedDevice:
    cls = PROTOCOL_TYPES.get((cfg.role, cfg.protocol))
    if cls is None and cfg.protocol not in _NOT_SUNSPEC:
        cls = DEVICE_TYPES.get(cfg.role)
        if cfg.sim.models is not None:  # another model chain: hil/sunspec_variants.py
            from hil.sunspec_variants import VARIANTS  # subclasses of the devices below

            cls = VARIANTS.get(cfg.role)
    elif cfg.sim.models is not None:
        raise SunSpecError(f"device {cfg.id}: sim.models chooses a SunSpec model chain; "
                           f"protocol {cfg.protocol} has none: remove sim.models")
    if cls is None:
        raise SunSpecError(
            f"device {cfg.id}: the HIL has no simulator for role {cfg.role!r} "
            f"over {cfg.protocol}"
        )
    return cls(cfg, site_max_kw)


_AC = {"Hz": 50.0, "Hz_SF": -2, "PhVphA": 230.0, "PhVphB": 230.0, "PhVphC": 230.0, "V_SF": -1}


@register
class PvInverter(SimulatedDevice):
    """PV inverter (models 1, 103, 120, 123): clear-sky output × cloud factor, capped by
    rating and, when enabled, by WMaxLimPct, which the device drops by itself (Ena → 0) when
    WMaxLimPct has not been re-written for WMaxLimPct_RvrtTms seconds (0 = never). Enabling
    (Ena 0 → 1) also starts the timer, so write order Ena-then-limit cannot trip it."""

    role = "pv"
    models = (1, 103, 120, 123)
    model_name = "HIL-PV"
    cfg: PvDevice

    def __init__(self, cfg: PvDevice, site_max_kw: float) -> None:
        super().__init__(cfg, site_max_kw)
        self.rated_kw = cfg.rated_kw
        self.peak_kw = cfg.sim.peak_kw or cfg.rated_kw
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
        if c["WMaxLim_Ena"] == 1 and _expired(self._t_limit, int(c["WMaxLimPct_RvrtTms"] or 0),
                                              env.t_s):
            c["WMaxLim_Ena"] = 0
        given = env.series_kw.get(self.id) if env.series_kw else None
        if given is None:
            given = clear_sky_kw(env.t_utc, env.latitude, env.longitude,
                                 self.peak_kw) * self.cfg.sim.cloud_factor
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
            103: {**_AC, "W": self.power_kw * 1000, "W_SF": self.w_sf, "WH": int(self.wh),
                  "WH_SF": 0, "St": st},
            120: {"DERTyp": 4, "WRtg": self.rated_kw * 1000, "WRtg_SF": self.w_sf},
            123: {"WMaxLimPct_SF": -1},
        }

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "available_kw": self.available_kw,
                "limit_kw": self.limit_kw}


@register
class BatteryPcs(SimulatedDevice):
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
        self.battery = Battery(
            capacity_kwh=cfg.capacity_kwh, max_charge_kw=cfg.max_charge_kw,
            max_discharge_kw=cfg.max_discharge_kw, soc_pct=cfg.sim.initial_soc_pct,
            charge_efficiency=cfg.charge_efficiency, discharge_efficiency=cfg.discharge_efficiency,
            ramp_kw_per_s=cfg.ramp_kw_per_s,
        )
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
        if c["StorCtl_Mod"] and _expired(self._t_rate, int(c["InOutWRte_RvrtTms"] or 0), env.t_s):
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
            103: {**_AC, "W": self.power_kw * 1000, "W_SF": self.w_sf,
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

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "soc_pct": self.battery.soc_pct,
                "command_kw": self.command_kw}


class Metering:
    """What every simulated meter does, whatever protocol it speaks: a load meter draws its
    sim profile, the grid (PCC) meter is told the site balance; both integrate kWh."""

    cfg: MeterDevice
    power_kw: float = 0.0

    def _init_metering(self, cfg: MeterDevice) -> None:
        self.balancing = cfg.measures == "grid"
        self.import_kwh = self.export_kwh = 0.0

    def step(self, env: Env, dt_s: float) -> float:
        """A load meter consumes its profile; the grid meter waits for `measure`."""
        if self.balancing:
            return 0.0
        kw = env.series_kw.get(self.id) if env.series_kw else None
        if kw is None:
            s = self.cfg.sim
            kw = load_kw(s.profile, env.t_local, s.base_kw, s.day_kw)
        self.measure(kw, dt_s)
        return -self.power_kw

    def measure(self, kw: float, dt_s: float) -> None:
        """Set the metered power for the last dt_s and integrate the counters."""
        self.power_kw = kw
        self.import_kwh += max(kw, 0.0) * dt_s / 3600
        self.export_kwh += max(-kw, 0.0) * dt_s / 3600


@register
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
                **_AC, "PhV": 230.0, "W": w, "WphA": w / 3, "WphB": w / 3, "WphC": w / 3,
                "W_SF": self.w_sf,
                "TotWhImp": int(self.import_kwh * 1000), "TotWhExp": int(self.export_kwh * 1000),
                "TotWh_SF": 0,
            },
        }

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "import_kwh": self.import_kwh,
                "export_kwh": self.export_kwh}


# -- devices described by a register map (drivers/maps/*.yaml) ------------------------------
class MapSimDevice(SimulatedDevice):
    """Base of the map-driven devices (modbus-tcp or modbus-rtu, `map:` in the config): the
    register image is the map's points, encoded from `point_values()` (engineering units,
    our sign convention) by the map's own codec, the one the driver decodes with. rw/w points
    hold what the client wrote and read back as written; unmapped addresses answer
    ILLEGAL_ADDRESS; r points reject writes (pymodbus enforces the per-register readonly
    flag). Holding and input registers are separate tables when the map uses both."""

    models = ()
    protocols: ClassVar[tuple[str, ...]] = ("modbus-tcp", "modbus-rtu")

    def __init__(self, cfg: PvDevice | BatteryDevice | MeterDevice, site_max_kw: float,
                 regmap: RegisterMap | None = None) -> None:
        # Not SimulatedDevice.__init__: that builds a SunSpec chain image.
        self.cfg = cfg
        self.id = cfg.id
        self.t_s = 0.0
        self.power_kw = 0.0
        self.online = True
        self.map: RegisterMap = regmap or load_map(str(cfg.map))
        self.held: dict[str, float] = {p.key: 0.0 for p in self.map.points if p.writable}
        self._split = any(p.function == "input" for p in self.map.points)

    # -- behaviour (subclasses) ---------------------------------------------------------
    def point_values(self) -> dict[str, float]:
        """Measured values by map key; keys the device does not know read as 0."""
        raise NotImplementedError

    def validate_points(self, changes: dict[str, float]) -> ExcCodes | None:
        return None

    def on_points(self, changes: dict[str, float], before: dict[str, float]) -> None:
        """React to an accepted write; `self.held` already holds the new values."""

    # -- register image -----------------------------------------------------------------
    def _table(self, function: str) -> list:
        return [p for p in self.map.points if p.function == function or not self._split]

    def refresh(self, registers: list[int], start_address: int, function: str = "holding") -> None:
        values = {**self.point_values(), **self.held}
        for p in self._table(function):
            at = p.address - start_address
            registers[at : at + p.size] = self.map.encode(p, values.get(p.key, 0.0), clamp=True)

    def _blocks(self, function: str) -> list[SimData]:
        points = sorted(self._table(function), key=lambda p: p.address)
        if not points:
            return [SimData(address=0, datatype=DataType.INVALID)]
        regs = {}
        values = {**self.point_values(), **self.held}
        for p in points:
            for i, r in enumerate(self.map.encode(p, values.get(p.key, 0.0), clamp=True)):
                regs[p.address + i] = (r, p.access == "r")
        blocks: list[SimData] = []
        run: list[int] = []
        for addr in sorted(regs):
            if run and (addr != run[-1] + 1 or regs[addr][1] != regs[run[0]][1]):
                blocks.append(self._simdata(run, regs))
                run = []
            run.append(addr)
        blocks.append(self._simdata(run, regs))
        return blocks

    @staticmethod
    def _simdata(run: list[int], regs: dict) -> SimData:
        return SimData(address=run[0], values=[regs[a][0] for a in run],
                       datatype=DataType.REGISTERS, readonly=regs[run[0]][1])

    def simdata(self):  # type: ignore[override]
        if not self._split:
            return self._blocks("holding")
        bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
        return (bits, list(bits), self._blocks("holding"), self._blocks("input"))

    def write_registers(self, address: int, values: list[int], registers: list[int],
                        start_address: int) -> ExcCodes | None:
        regs = list(registers)
        regs[address - start_address : address - start_address + len(values)] = values
        end = address + len(values)
        touched: dict[str, float] = {}
        for p in self._table("holding"):
            if p.writable and _overlaps(p.address, p.size, address, end):
                at = p.address - start_address
                touched[p.key] = self.map.decode(p, regs[at : at + p.size])
        if rc := self.validate_points(touched):
            return rc
        before = dict(self.held)
        self.held.update(touched)
        self.on_points(touched, before)
        return None

    async def action(self, function_code: int, start_address: int, address: int, count: int,
                     current_registers: list[int], set_values: list[int] | list[bool] | None
                     ) -> ExcCodes | None:
        if (rc := await self.gate(function_code)) is not None:
            return rc
        if set_values is None:
            function = "input" if function_code == 4 and self._split else "holding"
            self.refresh(current_registers, start_address, function)
            return None
        return self.write_registers(address, [int(v) for v in set_values],
                                    current_registers, start_address)

    def bus_units(self) -> list[SimulatedDevice]:
        """The units the device answers as on its connection or bus (a PCS with a BMS of its
        own: two)."""
        return [self]

    def read_points(self) -> dict[str, float]:
        """Decoded view of every readable point, as a client would see it (tests, logs)."""
        values = {**self.point_values(), **self.held}
        return {p.key: self.map.decode(p, self.map.encode(p, values.get(p.key, 0.0), clamp=True))
                for p in self.map.points if p.readable}


@register
class MapBatteryPcs(MapSimDevice):
    """Battery PCS (+ relayed BMS values) through its map: command = `setpoint` kW
    (+ discharge) while `enable` holds its enabling value (always, when the map has no
    enable point). When `revert` > 0 s and neither setpoint nor enable was re-written for
    that long, the PCS falls back to standby (setpoint 0, enable 0). The BMS protects
    itself at the SoC bounds whatever the command."""

    role = "battery"
    cfg: BatteryDevice

    def __init__(self, cfg: BatteryDevice, site_max_kw: float,
                 regmap: RegisterMap | None = None) -> None:
        super().__init__(cfg, site_max_kw, regmap)
        self.battery = Battery(
            capacity_kwh=cfg.capacity_kwh, max_charge_kw=cfg.max_charge_kw,
            max_discharge_kw=cfg.max_discharge_kw, soc_pct=cfg.sim.initial_soc_pct,
            charge_efficiency=cfg.charge_efficiency, discharge_efficiency=cfg.discharge_efficiency,
            ramp_kw_per_s=cfg.ramp_kw_per_s,
        )
        self._enable = self.map.point("enable")
        if "revert" in self.held:
            self.held["revert"] = float(cfg.revert_s)
        self._t_cmd: float | None = None
        self.charged_kwh = self.discharged_kwh = 0.0

    @property
    def command_kw(self) -> float:
        if self._enable is not None and self.held["enable"] != self._enable.value:
            return 0.0
        return self.held.get("setpoint", 0.0)

    def validate_points(self, changes: dict[str, float]) -> ExcCodes | None:
        kw = changes.get("setpoint", 0.0)
        if not -self.cfg.max_charge_kw - 1e-6 <= kw <= self.cfg.max_discharge_kw + 1e-6:
            return ExcCodes.ILLEGAL_VALUE
        if self._enable is not None and changes.get("enable", 0.0) not in (0.0, self._enable.value):
            return ExcCodes.ILLEGAL_VALUE
        if changes.get("revert", 0.0) < 0:
            return ExcCodes.ILLEGAL_VALUE
        return None

    def on_points(self, changes: dict[str, float], before: dict[str, float]) -> None:
        if {"setpoint", "enable"} & changes.keys():
            self._t_cmd = self.t_s

    def step(self, env: Env, dt_s: float) -> float:
        self.t_s = env.t_s
        if self.command_kw and _expired(self._t_cmd, int(self.held.get("revert", 0)), env.t_s):
            self.held["setpoint"] = 0.0
            if self._enable is not None:
                self.held["enable"] = 0.0
        self.power_kw = self.battery.step(self.command_kw, dt_s)
        self.charged_kwh += max(-self.power_kw, 0.0) * dt_s / 3600
        self.discharged_kwh += max(self.power_kw, 0.0) * dt_s / 3600
        return self.power_kw

    def point_values(self) -> dict[str, float]:
        b, cfg = self.battery, self.cfg
        dc_v = 640.0 + 1.2 * b.soc_pct  # a 200-cell LFP string, roughly
        dc_a = self.power_kw * 1000 / dc_v
        running = abs(self.power_kw) > 1e-6
        return {
            "state": 2.0 if running else 1.0, "alarm_code": 0.0,
            "power_kw": self.power_kw, "reactive_kvar": 0.0, "frequency_hz": 50.0,
            "dc_voltage_v": dc_v, "dc_current_a": dc_a, "soc_pct": b.soc_pct, "soh_pct": 100.0,
            "rated_kw": max(cfg.max_charge_kw, cfg.max_discharge_kw),
            "max_charge_kw": cfg.max_charge_kw, "max_discharge_kw": cfg.max_discharge_kw,
            "capacity_kwh": cfg.capacity_kwh, "charged_kwh": self.charged_kwh,
            "discharged_kwh": self.discharged_kwh,
            # BMS view (drivers/maps/bms_generic.yaml)
            "pack_voltage_v": dc_v, "pack_current_a": dc_a, "dc_power_kw": self.power_kw,
            "max_charge_current_a": cfg.max_charge_kw * 1000 / dc_v,
            "max_discharge_current_a": cfg.max_discharge_kw * 1000 / dc_v,
            "cell_voltage_max_v": dc_v / 200 + 0.005, "cell_voltage_min_v": dc_v / 200 - 0.005,
            "temperature_max_c": 27.5, "temperature_min_c": 24.0,
            "bms_state": 2.0 if running else 1.0, "alarm_bits": 0.0,
            "cycle_count": (self.charged_kwh + self.discharged_kwh) / 2 / cfg.capacity_kwh,
        }

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "soc_pct": self.battery.soc_pct,
                "command_kw": self.command_kw}

    def bus_units(self) -> list[SimulatedDevice]:
        return [self, MapBmsView(self)] if self.cfg.bms is not None else [self]


class MapBmsView(MapSimDevice):
    """The BMS of a map-driven PCS on its own unit id (config `bms:`): the same battery seen
    through the BMS's register map. It goes silent, and fails, with its PCS."""

    role = "battery"

    def __init__(self, pcs: MapBatteryPcs) -> None:
        bms = pcs.cfg.bms
        assert bms is not None
        self.pcs = pcs
        cfg = pcs.cfg.model_copy(update={"unit_id": bms.unit_id, "map": bms.map})
        super().__init__(cfg, 0.0, load_map(bms.map))
        self.id = f"{pcs.id}.bms"

    @property  # type: ignore[override]
    def online(self) -> bool:
        return self.pcs.online

    @online.setter
    def online(self, value: bool) -> None:
        self.pcs.online = value

    @property  # type: ignore[override]
    def fault(self) -> Fault | None:
        return self.pcs.fault

    @fault.setter
    def fault(self, value: Fault | None) -> None:
        self.pcs.fault = value

    def point_values(self) -> dict[str, float]:
        return self.pcs.point_values()


@register
class MapThreePhaseMeter(Metering, MapSimDevice):
    """Three-phase meter through its map; `measures: grid` balances the site (+ import),
    `measures: load` is the building load (its sim profile), as the SunSpec Meter."""

    role = "meter"
    cfg: MeterDevice

    def __init__(self, cfg: MeterDevice, site_max_kw: float,
                 regmap: RegisterMap | None = None) -> None:
        super().__init__(cfg, site_max_kw, regmap)
        self._init_metering(cfg)

    def point_values(self) -> dict[str, float]:
        v = 230.0
        amps = abs(self.power_kw) * 1000 / (3 * v)
        return {
            "voltage_l1_v": v, "voltage_l2_v": v, "voltage_l3_v": v,
            "current_l1_a": amps, "current_l2_a": amps, "current_l3_a": amps,
            "power_kw": self.power_kw, "reactive_kvar": 0.0, "power_factor": 1.0,
            "frequency_hz": 50.0, "import_kwh": self.import_kwh, "export_kwh": self.export_kwh,
        }

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "import_kwh": self.import_kwh,
                "export_kwh": self.export_kwh}


# -- DL/T 645-2007 meters (served by hil/dlt645_server.py, not Modbus) ----------------------
@register
class Dlt645SimMeter(Metering, SimulatedDevice):
    """A DL/T 645 meter (behind a TCP gateway or on a serial bus), by its 12-digit address:
    `measures: grid` is the PCC meter (balances the site, + import), `measures: load` is the
    building load (its sim profile), as the other meters. It has no Modbus image: the site
    serves it through hil/dlt645_server.py, which reads `dlt645_values()`."""

    role = "meter"
    models = ()
    protocols: ClassVar[tuple[str, ...]] = ("dlt645-tcp", "dlt645-serial")
    cfg: MeterDevice
    VOLTAGE_V = 230.0

    def __init__(self, cfg: MeterDevice, site_max_kw: float) -> None:
        # Not SimulatedDevice.__init__: that builds a SunSpec chain image.
        self.cfg = cfg
        self.id = cfg.id
        self.t_s = 0.0
        self.power_kw = 0.0
        self.online = True
        self._init_metering(cfg)

    @property
    def address(self) -> str:
        assert self.cfg.address is not None  # the config requires it for dlt645-*
        return self.cfg.address

    def dlt645_values(self) -> dict[str, float]:
        """By hil.dlt645_server.FORMATS key: balanced phases, unity power factor; current
        carries the sign of the power (− reverse), as the meter's signed XXX.XXX A format.
        Secondary values, as the meter sees them behind its transformers: the site's
        primary values divided by `ct_ratio` / `pt_ratio` (1 = direct connection)."""
        v, p = self.VOLTAGE_V, self.power_kw
        amps = p * 1000 / (3 * v)
        primary = {
            "power_kw": p, "power_a_kw": p / 3, "power_b_kw": p / 3, "power_c_kw": p / 3,
            "voltage_a_v": v, "voltage_b_v": v, "voltage_c_v": v,
            "current_a_a": amps, "current_b_a": amps, "current_c_a": amps,
            "power_factor": 1.0, "power_factor_a": 1.0, "power_factor_b": 1.0,
            "power_factor_c": 1.0, "frequency_hz": 50.0,
            "import_kwh": self.import_kwh, "export_kwh": self.export_kwh,
        }
        ct, pt = self.cfg.ct_ratio, self.cfg.pt_ratio
        return {k: x / transformer_factor(k, ct, pt) for k, x in primary.items()}

    def sim_device(self) -> SimDevice:
        raise TypeError(f"{self.id} is a DL/T 645 meter; serve it with hil.dlt645_server")

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "import_kwh": self.import_kwh,
                "export_kwh": self.export_kwh}


from hil import dcbus  # noqa: E402,F401 - registers the DC bus simulator (a MapSimDevice)

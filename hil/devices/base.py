"""What every simulated unit is, whatever its role: physics state on one side, a register
image on the other, and the one revert-timer rule.

A simulator (one class per role and protocol, listed in hil/devices/__init__.py):

- `step(env, dt_s) -> kW` advances its physics and returns what it supplies to the site's
  AC bus (+ supplies: PV, discharging battery; − consumes: loads, charging battery), booked
  on its ledger `account`; a *balancing* device (the PCC meter) instead gets
  `measure(kW, dt_s)` with the residual;
- its class says what the site needs before the run (`rating_kw`, `building_load`), so
  the site never asks which role a device has;
- `values()` gives engineering values per SunSpec model (scale factors included), encoded
  with the same codec the driver decodes with (drivers/sunspec.py), so both sides share one
  truth; map-driven and DL/T 645 units override the image (hil/devices/mapped.py, dlt645.py);
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
from typing import ClassVar, Literal

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.sunspec.models import BASES, chain_registers, decode, encode_point, layout, model
from edge.config import Config, DeviceConfig
from hil.config import SimParams, sim_of
from hil.physics import Battery

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
    protocols: ClassVar[tuple[str, ...]] = ()  # none: SunSpec (hil/devices/__init__.py)
    balancing: bool = False  # True: gets the site residual via measure() instead of step()
    # Fault injection on the wire (SimSite.inject); class defaults, so subclasses that build
    # their own state without this __init__ still serve.
    fault: Fault | None = None
    on_drop: Callable[[], None] | None = None  # closes the client connections (set by the site)
    drops: int = 0  # connections dropped by an injected `drop` fault
    base: int = BASE  # register of the "SunS" marker (`serve_at`)
    # The ledger account `step` books on: "pv" (with `available_kw`), "battery", or "load"
    # (what the building draws, − consumes).
    account: ClassVar[Literal["pv", "battery", "load"]] = "load"
    available_kw: float = 0.0  # kW the unit could supply now (PV); 0 for the others
    # True: the unit connects out (an OCPP charge point to the daemon's CSMS) instead of
    # being served; the site runs its `run(config)` as a task beside the servers.
    connects_out: ClassVar[bool] = False

    def __init__(self, cfg: DeviceConfig, site_max_kw: float) -> None:
        self._init_unit(cfg)
        self.starts = layout(list(self.models), self.base)
        self.rw: dict[int, dict[str, Value]] = {m: {} for m in self.models}
        self._image = chain_registers(list(self.models))
        self._access = self._access_map()

    def _init_unit(self, cfg: DeviceConfig) -> None:
        """State every unit has; the units without a SunSpec chain call this alone."""
        self.cfg = cfg
        self.sim = sim_of(cfg)  # parsed once: physics steps read it many times a second
        self.id = cfg.id
        self.t_s = 0.0
        self.power_kw = 0.0
        self.online = True  # False: fault injection, the unit does not answer

    # -- what the site asks before the run (by class, from the config) ------------------
    @classmethod
    def rating_kw(cls, cfg: DeviceConfig) -> float:
        """The most kW the unit moves at the PCC (PV output, battery power, a load's
        rating), for the meters' range; a metered building load counts by its profile."""
        return 0.0

    @classmethod
    def building_load(cls, cfg: DeviceConfig) -> SimParams | None:
        """The building-load profile the unit meters (a load meter), else None."""
        return None

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

    async def run(self, config: Config) -> None:
        """Units that connect out: connect and keep connecting until cancelled."""
        raise NotImplementedError

    def stored(self) -> Battery | None:
        """The energy store behind the unit (site SoC), if it has one."""
        return None

    def bus_units(self) -> list[SimulatedDevice]:
        """The units the device answers as on its connection or bus (a PCS with a BMS of its
        own: two)."""
        return [self]

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
        fault, or a bit request to a unit without bits (most are registers only)."""
        if not self.online:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if (fault := await self.fault_reply()) is not None:
            return ExcCodes.DEVICE_FAILURE if fault is True else fault  # dropped: never sent
        if function_code in (1, 2, 5, 15) and not self.has_bits:
            return ExcCodes.ILLEGAL_FUNCTION
        return None

    @property
    def has_bits(self) -> bool:
        """It serves coils and discrete inputs (a map-driven breaker)."""
        return False

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
                if p.access != "RW" or not overlaps(mstart + p.offset, p.size, address, end):
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


def overlaps(start: int, size: int, lo: int, hi: int) -> bool:
    return start < hi and lo < start + size


def expired(t_write: float | None, revert_s: int, now_s: float) -> bool:
    """A revert timer ran out: set, armed (> 0 s) and not refreshed for revert_s seconds."""
    return t_write is not None and revert_s > 0 and now_s - t_write >= revert_s

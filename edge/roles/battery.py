"""Batteries (PCS + BMS): charge and discharge within SoC, power and ramp limits."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from drivers.modbus.regmap import MapError, load_map
from edge.config.base import DeviceBase, Pct, PositiveKw, _Model
from edge.control import kernel as layout
from edge.roles.role import Part, Role, rounded, total


class BmsParams(_Model):
    """A battery's BMS on its own unit id behind the same connection or bus (where the PCS
    does not relay it): cell voltages, temperatures and limits, read through its register
    map for monitoring (`bms.` keys in the battery's reading); control uses the PCS."""

    map: str = Field(pattern=r"^[a-z0-9_-]+$", description="drivers/maps/<map>.yaml")
    unit_id: int = Field(ge=0, le=247)


class BatteryDevice(DeviceBase):
    role: Literal["battery"]
    capacity_kwh: PositiveKw
    max_charge_kw: PositiveKw
    max_discharge_kw: PositiveKw
    soc_min_pct: Pct = 10.0
    soc_max_pct: Pct = 95.0
    charge_efficiency: float = Field(0.95, gt=0, le=1)
    discharge_efficiency: float = Field(0.95, gt=0, le=1)
    ramp_kw_per_s: PositiveKw = 1000.0
    revert_s: int = Field(60, ge=5, le=3600, description="device reverts its power after this")
    safe_power_kw: float = Field(0.0, description="power in the safe state (+discharge)")
    bms: BmsParams | None = Field(None, description="a BMS on its own unit id, read for "
                                  "monitoring (map-driven batteries)")
    grid_forming: bool = Field(False, description="its PCS can form an island's grid (its map "
                               "has a grid_mode point); needed with a breaker")
    auto_transfer: bool = Field(False, description="its PCS transfers to island on its own "
                                "(seamless): on a loss of mains it trips the PCC switch and "
                                "forms at once; needs grid_forming and a map with an "
                                "auto_transfer point")

    def deliverable_kwh(self, soc_pct: float) -> float:
        """AC energy the battery can still give before soc_min (after discharge losses)."""
        return max(soc_pct - self.soc_min_pct, 0.0) / 100 * self.capacity_kwh * self.discharge_efficiency

    def absorbable_kwh(self, soc_pct: float) -> float:
        """AC energy the battery can still take before soc_max (before charge losses)."""
        return max(self.soc_max_pct - soc_pct, 0.0) / 100 * self.capacity_kwh / self.charge_efficiency

    @model_validator(mode="after")
    def _soc_window(self) -> BatteryDevice:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        if not -self.max_charge_kw <= self.safe_power_kw <= self.max_discharge_kw:
            raise ValueError("safe_power_kw must lie within [-max_charge_kw, max_discharge_kw]")
        return self

    @model_validator(mode="after")
    def _auto_forms(self) -> BatteryDevice:
        if self.auto_transfer and not self.grid_forming:
            raise ValueError("auto_transfer: a PCS that transfers on its own forms the island's "
                             "grid; set grid_forming: true as well, or auto_transfer: false")
        return self

    @model_validator(mode="after")
    def _bms_beside(self) -> BatteryDevice:
        if self.bms is not None:
            if self.protocol not in ("modbus-tcp", "modbus-rtu"):
                raise ValueError(f"bms: needs a map-driven battery (protocol modbus-tcp or "
                                 f"modbus-rtu), not {self.protocol}")
            if self.bms.unit_id == self.unit_id:
                raise ValueError(f"bms.unit_id: {self.unit_id} is the PCS's own unit_id; give "
                                 "the BMS its own")
        return self


def map_point_problem(b: BatteryDevice, key: str, field: str, what: str) -> str | None:
    """What keeps the battery's `field` from working: not map-driven, or its map has no
    `key` point (a map that does not load is reported where maps are checked)."""
    if b.protocol not in ("modbus-tcp", "modbus-rtu"):
        return (f"devices.{b.id}.{field}: only map-driven batteries (modbus-tcp, modbus-rtu) "
                f"can {what}, not {b.protocol}")
    try:
        if load_map(str(b.map)).point(key) is None:
            return (f"devices.{b.id}.{field}: map {b.map} has no {key} point; use a map that "
                    f"has one (pcs_generic) or set {field}: false")
    except MapError:
        pass
    return None


def safe_power(image, b: BatteryDevice) -> float:
    """The configured safe power, but never discharging an empty or charging a full one."""
    p = b.safe_power_kw
    if p and image.good(b.id):
        soc = image.value(b.id, "soc_pct")
        if (p > 0 and soc <= b.soc_min_pct) or (p < 0 and soc >= b.soc_max_pct):
            return 0.0
    return p


def part_at(b: BatteryDevice, power_kw: float, soc_pct: float) -> Part:
    """A battery at this power (+ discharge) and SoC; its ratings count only while its SoC
    window leaves energy (resp. room) for them."""
    out, room = b.deliverable_kwh(soc_pct), b.absorbable_kwh(soc_pct)
    return Part(b.id, "storage", power_kw, b.max_discharge_kw if out > 0 else 0.0,
                -b.max_charge_kw if room > 0 else 0.0, out, room, soc_pct)


def reserve_floors(devs: list[BatteryDevice], config) -> dict[str, float]:
    """The SoC below which normal operation never discharges each grid-forming battery: its
    soc_min plus its share (by usable energy) of what the critical loads need for the
    breaker's backup_hours. Empty without a breaker."""
    breakers = [d for d in config.devices if d.role == "breaker"]
    forming = [b for b in devs if b.grid_forming]
    if not breakers or not forming:
        return {}
    params = breakers[0].island
    need = params.backup_hours * sum(d.rated_kw for d in config.devices
                                     if d.role == "load" and d.critical)
    usable = sum(b.capacity_kwh * b.discharge_efficiency for b in forming)
    pct = 100.0 * need / usable if usable else 0.0
    return {b.id: min(b.soc_min_pct + pct, b.soc_max_pct) for b in forming}


class Battery(Role):
    name = "battery"
    model = BatteryDevice
    block = "bess"
    writes = True
    decision_key = "bess_kw"
    stores_energy = True

    def summary(self, d: BatteryDevice) -> str:
        detail = (f"{d.capacity_kwh:g} kWh, -{d.max_charge_kw:g}/+{d.max_discharge_kw:g} kW, "
                  f"SoC {d.soc_min_pct:g}-{d.soc_max_pct:g} %")
        if d.bms is not None:
            detail += f", BMS unit {d.bms.unit_id} map {d.bms.map}"
        return detail

    def driver_options(self, dev: BatteryDevice, config) -> dict:
        out: dict = {"auto_transfer": True} if dev.auto_transfer else {}
        if dev.bms is not None:
            out.update(bms_map=dev.bms.map, bms_unit_id=dev.bms.unit_id)
        return out

    def config_problems(self, devs, config) -> list[str]:
        return [p for b in devs if b.auto_transfer
                and (p := map_point_problem(b, "auto_transfer", "auto_transfer",
                                            "be told to transfer on their own"))]

    def nameplate_checks(self, dev: BatteryDevice):
        return [("max_charge_kw", dev.max_charge_kw, "max_charge_kw")]

    def balance_term(self, dev) -> str:
        return "bess"

    def observe(self, devs, image, mem, now_s) -> None:
        """A PCS told to form the grid that reads as following again (it tripped out of
        grid-forming) is told again."""
        for b in devs:
            w = mem.written[b.id]
            if (b.grid_forming and w.value is not None and math.isnan(w.value)
                    and image.good(b.id)
                    and not image.devices[b.id].failed_polls
                    and image.value(b.id, "grid_mode") < 0.5):
                w.value = None

    def idle_offset_kw(self, devs, image) -> float:
        return sum(image.value(b.id, "power_kw") for b in devs if image.good(b.id))

    def rows(self, devs, image, mem, now_s, config, out: np.ndarray) -> None:
        floors = reserve_floors(devs, config)
        for i, b in enumerate(devs):
            w = mem.written[b.id].value
            if w is not None and math.isnan(w):
                w = None  # it formed an island's grid: no power setpoint was in force
            soc_min = floors.get(b.id, b.soc_min_pct)
            if image.good(b.id):
                p = image.value(b.id, "power_kw")
                if image.devices[b.id].failed_polls and w is not None:
                    # The reading predates our last write: trust the setpoint, not the old
                    # power, or we would undo the last step and spike the grid.
                    p = w
                out[i] = (p, p if w is None else w, image.value(b.id, "soc_pct"), soc_min,
                          b.soc_max_pct, b.max_charge_kw, b.max_discharge_kw, b.ramp_kw_per_s, 1.0)
            else:
                out[i] = (b.safe_power_kw, b.safe_power_kw, 0, b.soc_min_pct, b.soc_max_pct,
                          b.max_charge_kw, b.max_discharge_kw, b.ramp_kw_per_s, 0.0)
        assert out.shape[1] == layout.NB

    def setpoints(self, devs, image, mem, config, kernel_out) -> dict[str, float]:
        out = {}
        for i, b in enumerate(devs):
            # Defence in depth: the kernel already clamps; this catches a broken build.
            v = float(kernel_out[i]) if image.good(b.id) else safe_power(image, b)
            out[b.id] = min(max(v, -b.max_charge_kw), b.max_discharge_kw)
        return out

    def safe(self, devs, image, mem, now_s, config, final) -> dict[str, float]:
        """The configured safe power; a battery forming an island's grid keeps forming it
        (a power setpoint would drop the island)."""
        st = mem.roles.get("breaker")
        forming = st is not None and st.machine is not None and st.machine.forming
        return {b.id: math.nan if forming and b.grid_forming else safe_power(image, b)
                for b in devs}

    def island_setpoints(self, devs, image, mem, now_s, config, plan) -> dict[str, float]:
        """NaN: form the grid (the PCS takes what the island leaves); the others idle."""
        return {b.id: math.nan if plan.form and b.grid_forming else 0.0 for b in devs}

    def write(self, driver, value: float, revert_s: int):
        if math.isnan(value):
            return driver.write_forming(revert_s)
        return driver.write_power(value, revert_s)

    def telemetry(self, devs, image) -> dict:
        cap = sum(b.capacity_kwh for b in devs)
        soc_x_cap = total(image, devs, "soc_pct", lambda b: b.capacity_kwh)
        soc = soc_x_cap / cap if cap and soc_x_cap is not None else None
        return {"soc_pct": rounded(soc, 2)}

    def capability(self, b: BatteryDevice, image) -> Part | None:
        if not image.good(b.id):
            return None
        return part_at(b, image.value(b.id, "power_kw"), image.value(b.id, "soc_pct"))

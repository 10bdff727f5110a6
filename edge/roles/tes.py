"""Thermal storage (蓄冷/蓄热): an ice or chilled-water tank charged by its own chiller, or a
hot-water tank by its heat pump. Charging draws electric power; discharging serves the
building's cooling (heating) from the tank, so the building's chillers draw that much less.
Its state of charge comes from the tank temperature between `full_c` and `empty_c`."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from edge.config.base import DeviceBase, PositiveKw
from edge.roles.role import Part, Role, Room, rounded, total


class ThermalStorageDevice(DeviceBase):
    """A tank with its charging plant. Power: + charging (draws), − discharging (relieves the
    building's chillers by that much electric power)."""

    role: Literal["thermal_storage"]
    protocol: Literal["modbus-tcp", "modbus-rtu"] = "modbus-tcp"
    capacity_kwh: PositiveKw = Field(description="thermal kWh between empty_c and full_c")
    max_charge_kw: PositiveKw = Field(description="electric kW its chiller draws charging")
    max_discharge_kw: PositiveKw = Field(description="electric kW of the building's chillers "
                                         "it can relieve")
    cop: float = Field(3.0, gt=0.5, le=10, description="thermal kWh stored per electric kWh")
    loss_pct_per_h: float = Field(0.5, ge=0, le=20, description="share of the stored energy "
                                  "lost per hour")
    full_c: float = Field(4.0, ge=-10, le=95, description="tank temperature when full")
    empty_c: float = Field(12.0, ge=-10, le=95, description="tank temperature when empty")
    soc_min_pct: float = Field(5.0, ge=0, le=100)
    soc_max_pct: float = Field(95.0, ge=0, le=100)
    revert_s: int = Field(60, ge=5, le=3600, description="the tank goes idle when not "
                          "commanded for this long")

    @model_validator(mode="after")
    def _window(self) -> ThermalStorageDevice:
        if self.full_c == self.empty_c:
            raise ValueError("full_c and empty_c must differ (the SoC is read between them)")
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        return self

    def soc_pct(self, tank_c: float) -> float:
        return min(max(100.0 * (self.empty_c - tank_c) / (self.empty_c - self.full_c), 0.0), 100.0)

    def kwh_el(self, soc_pct: float) -> float:
        """Electric kWh of the building's chillers the stored energy above soc_min replaces."""
        return max(soc_pct - self.soc_min_pct, 0.0) / 100 * self.capacity_kwh / self.cop

    def room_kwh_el(self, soc_pct: float) -> float:
        return max(self.soc_max_pct - soc_pct, 0.0) / 100 * self.capacity_kwh / self.cop


class ThermalStorage(Role):
    name = "thermal_storage"
    model = ThermalStorageDevice
    writes = True
    allocates = True
    decision_key = "tes_kw"

    def summary(self, d: ThermalStorageDevice) -> str:
        return (f"{d.capacity_kwh:g} kWh thermal, +{d.max_charge_kw:g}/-{d.max_discharge_kw:g} "
                f"kW electric, tank {d.full_c:g}-{d.empty_c:g} °C")

    def balance_term(self, d) -> str:
        return "load"

    def soc(self, d: ThermalStorageDevice, image) -> float:
        return d.soc_pct(image.value(d.id, "tank_temp_c"))

    def drawn_kw(self, devs, image, mem, now_s, hold: bool = True) -> float:
        return sum(image.value(d.id, "power_kw") for d in devs if image.good(d.id))

    def allocate(self, devs, image, mem, now_s, config, room: Room):
        """The plan's power (idle without one) inside the SoC window; charging only within
        the import room the rest of the site leaves. Stored cold is worth only the import it
        replaces: a tank never discharges into what the site would export or curtail (a
        plan made on a PV forecast that came out low would otherwise spend it to curtail
        PV), and where surplus PV earns nothing it charges from it instead."""
        out, added, left = {}, 0.0, room.import_kw
        grid = room.grid_kw if math.isfinite(room.grid_kw) else math.inf
        free = room.surplus_kw if config.tariff.export_price <= 0 else 0.0
        for d in devs:
            if not image.good(d.id):
                out[d.id] = 0.0
                continue
            soc = self.soc(d, image)
            kw = (room.planned_kw or {}).get(d.id, 0.0)
            kw = max(kw, -max(grid, 0.0))
            if free > 0:
                kw = max(kw, min(free, d.max_charge_kw))
            if kw > 0:
                kw = min(kw, d.max_charge_kw, max(left, 0.0))  # room excludes its draw
                kw = kw if soc < d.soc_max_pct else 0.0
            else:
                kw = max(kw, -d.max_discharge_kw) if soc > d.soc_min_pct else 0.0
            left -= max(kw, 0.0)
            grid += kw
            free = max(free - max(kw, 0.0), 0.0)
            added += kw
            out[d.id] = kw
        return out, added

    def safe(self, devs, image, mem, now_s, config, final) -> dict[str, float]:
        return {d.id: 0.0 for d in devs}

    def write(self, driver, value: float, revert_s: int):
        return driver.write_power(value, revert_s)

    def telemetry(self, devs, image) -> dict:
        return {"tes_kw": rounded(total(image, devs, "power_kw"))}

    def capability(self, d: ThermalStorageDevice, image) -> Part | None:
        if not image.good(d.id):
            return None
        soc = self.soc(d, image)
        p = image.value(d.id, "power_kw")
        out, room = d.kwh_el(soc), d.room_kwh_el(soc)
        return Part(d.id, "thermal", -p, d.max_discharge_kw if out > 0 else 0.0,
                    -d.max_charge_kw if room > 0 else 0.0, out, room,
                    soc if math.isfinite(soc) else math.nan)

"""DC converters on the building's DC bus: the bus voltage is observed and alarmed outside
its band, and (with `restore_v`) the converters' droop reference is shifted so the loaded
bus sits at nominal (edge/roles/dcbus.py holds that logic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from edge.config.base import DeviceBase, PositiveKw
from edge.roles.dcbus import DcBusMonitor, DcBusRestore, bus_v
from edge.roles.role import Memory, Role, rounded

V_REF_DEADBAND_V = 0.05  # v_ref changes below this are not worth a write


class DcConverterDevice(DeviceBase):
    """A droop-controlled converter feeding the building's DC bus (docs/domain.md §1): an AC/DC
    interface converter or a bidirectional DC/DC, observed for the bus voltage, which is
    alarmed outside nominal ± band_pct. One DC bus per site: every converter sits on it.
    In the HIL its DC loads follow sim.profile/base_kw/day_kw, sim.peak_kw is PV on the bus."""

    role: Literal["dcdc"]
    protocol: Literal["modbus-tcp", "modbus-rtu"] = "modbus-tcp"
    rated_kw: PositiveKw
    bus_nominal_v: float = Field(gt=0, le=1500, description="DC bus nominal, e.g. 375, 750, 48")
    band_pct: float = Field(10.0, gt=0, le=50, description="alarm outside nominal ± this %")
    alarm_after_cycles: int = Field(3, ge=1, le=3600, description="consecutive cycles out of "
                                    "band before the alarm is raised")
    revert_s: int = Field(60, ge=5, le=3600, description="v_ref returns to the converter's "
                          "default when not re-written for this long")
    restore_v: bool = Field(False, description="shift the droop reference v_ref so the bus "
                            "sits at nominal under load (secondary control); false: observe "
                            "and alarm only")
    max_shift_pct: float = Field(5.0, gt=0, le=15, description="v_ref stays within nominal ± "
                                 "this % (and within the converter's own v_ref range)")
    v_ref_ramp_v_per_s: float = Field(2.0, gt=0, le=100, description="v_ref moves at most "
                                      "this fast")


@dataclass(slots=True)
class DcBusState:
    monitor: DcBusMonitor
    restore: DcBusRestore

    def clone(self) -> DcBusState:
        return DcBusState(self.monitor.clone(), self.restore.clone())


def _bus(mem: Memory) -> DcBusState:
    return mem.roles["dcdc"]


class _Devices:
    """The slice of a Config the DC bus classes read."""

    def __init__(self, devs) -> None:
        self.devices = devs


class DcConverter(Role):
    name = "dcdc"
    model = DcConverterDevice
    writes = True
    decision_key = "v_ref"
    setpoint_unit = "V"

    def summary(self, d: DcConverterDevice) -> str:
        lo, hi = (d.bus_nominal_v * (1 + s * d.band_pct / 100) for s in (-1, 1))
        return f"{d.rated_kw:g} kW, DC bus {d.bus_nominal_v:g} V, alarm outside {lo:g}-{hi:g} V"

    def site_problems(self, devs: list[DcConverterDevice]) -> list[str]:
        """Converters in parallel measure one bus; telemetry's dc_bus_v is their mean."""
        nominal = {d.bus_nominal_v for d in devs}
        if len(nominal) > 1:
            return [f"dcdc converters give bus_nominal_v {sorted(nominal)}: one DC bus per site "
                    "is supported; give every converter the same bus_nominal_v"]
        restoring = {d.id: d.restore_v for d in devs}
        if len(set(restoring.values())) > 1:
            on = sorted(k for k, v in restoring.items() if v)
            off = sorted(k for k, v in restoring.items() if not v)
            return [f"restore_v is on for {', '.join(on)} but off for {', '.join(off)}: "
                    "converters in parallel share load by their references, so a shifted one "
                    "would carry the others' share; set restore_v alike on every converter"]
        return []

    def controls(self, dev: DcConverterDevice) -> bool:
        return dev.restore_v  # an observed converter is never written

    def new_state(self, devs, config) -> DcBusState:
        return DcBusState(DcBusMonitor(_Devices(devs)), DcBusRestore(_Devices(devs)))

    def observe(self, devs, image, mem, now_s) -> None:
        _bus(mem).monitor.observe(image)

    def setpoints(self, devs, image, mem, config, kernel_out) -> dict[str, float]:
        return _bus(mem).restore.step(image)

    def safe(self, devs, image, mem, now_s, config, final) -> dict[str, float]:
        restore = _bus(mem).restore
        return restore.nominal() if final else restore.relax(image.dt_s)

    def alarms(self, devs, mem) -> tuple[str, ...]:
        return _bus(mem).monitor.alarms()

    def deadband(self, configured_kw: float, dev=None) -> float:
        return V_REF_DEADBAND_V

    def write(self, driver, value: float, revert_s: int):
        return driver.write_v_ref(value, revert_s)

    def telemetry(self, devs, image) -> dict:
        # One DC bus per site: the mean of its GOOD converters; null without one.
        return {"dc_bus_v": rounded(bus_v(_Devices(devs), image), 1)}

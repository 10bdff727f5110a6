"""PV inverters: read output, curtail with an active-power limit (zero export, export limits)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from edge.config.base import DeviceBase, Pct, PositiveKw
from edge.control import kernel as layout
from edge.roles.role import Part, Role


class PvDevice(DeviceBase):
    role: Literal["pv"]
    rated_kw: PositiveKw
    ramp_kw_per_s: PositiveKw = 1000.0
    revert_s: int = Field(60, ge=5, le=3600, description="device reverts limits after this")
    safe_limit_pct: Pct | None = Field(
        None, description="PV level when the PCC meter is lost; default 0 on an export-limited "
        "site (docs/domain.md §3: drop PV to a safe level), else 100",
    )
    tilt_deg: float = Field(20.0, ge=0, le=90, description="array tilt, for the PV forecast")
    azimuth_deg: float = Field(180.0, ge=0, lt=360, description="array azimuth, 180 = south")


def part_at(device_id: str, power_kw: float) -> Part:
    """PV producing `power_kw`, which can be curtailed to nothing."""
    p = max(power_kw, 0.0)
    return Part(device_id, "generation", p, p, 0.0)


class Pv(Role):
    name = "pv"
    model = PvDevice
    block = "pv"
    writes = True
    decision_key = "pv_limit_kw"
    generates = True

    def summary(self, dev: PvDevice) -> str:
        return f"{dev.rated_kw:g} kW rated"

    def driver_options(self, dev: PvDevice, config) -> dict:
        """Where a 704 inverter reverts when the controller goes quiet: the site's safe level."""
        return {"revert_pct": 100.0 * config.pv_safe_kw(dev) / dev.rated_kw}

    def nameplate_checks(self, dev: PvDevice):
        return [("rated_kw", dev.rated_kw, "rated_kw")]

    def balance_term(self, dev: PvDevice) -> str:
        return "pv"

    def rows(self, devs, image, mem, now_s, config, out: np.ndarray) -> None:
        for i, p in enumerate(devs):
            w = mem.written[p.id].value
            if image.good(p.id):
                out[i] = (image.value(p.id, "power_kw"), p.rated_kw,
                          image.value(p.id, "limit_kw") if w is None else w, p.ramp_kw_per_s, 1.0)
            else:
                out[i] = (0.0, p.rated_kw, config.pv_safe_kw(p), p.ramp_kw_per_s, 0.0)
        assert out.shape[1] == layout.NV

    def setpoints(self, devs, image, mem, config, kernel_out) -> dict[str, float]:
        out = {}
        for i, p in enumerate(devs):
            v = float(kernel_out[i]) if image.good(p.id) else config.pv_safe_kw(p)
            out[p.id] = min(max(v, 0.0), p.rated_kw)  # the kernel clamps; this catches a bad build
        return out

    def safe(self, devs, image, mem, now_s, config, final) -> dict[str, float]:
        return {p.id: config.pv_safe_kw(p) for p in devs}

    def island_setpoints(self, devs, image, mem, now_s, config, plan) -> dict[str, float]:
        """The island's PV limit shared by rating (the batteries must not be over-charged)."""
        rated = sum(p.rated_kw for p in devs)
        share = min(plan.pv_limit_kw / rated, 1.0) if rated else 0.0
        return {p.id: p.rated_kw * share for p in devs}

    def write(self, driver, value: float, revert_s: int):
        return driver.write_limit(value, revert_s)

    def capability(self, d: PvDevice, image) -> Part | None:
        return part_at(d.id, image.value(d.id, "power_kw")) if image.good(d.id) else None

"""Meters: the PCC (grid) meter every site has exactly one of, and load meters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge.config.base import DeviceBase
from edge.roles.role import Role


class MeterDevice(DeviceBase):
    role: Literal["meter"]
    measures: Literal["grid", "load"] = Field(
        "grid", description="exactly one grid (PCC) meter per site; load submeters optional")
    ct_ratio: float = Field(
        1.0, ge=1, le=100_000, description="DL/T 645: current transformer ratio, primary / "
        "secondary (2000/5 A -> 400), for a meter that reports secondary values")
    pt_ratio: float = Field(
        1.0, ge=1, le=100_000, description="DL/T 645: voltage transformer ratio, primary / "
        "secondary (10 kV/100 V -> 100)")

    @model_validator(mode="after")
    def _ratios_on_dlt645(self) -> MeterDevice:
        if (self.ct_ratio != 1 or self.pt_ratio != 1) and not self.protocol.startswith("dlt645-"):
            raise ValueError(
                f"ct_ratio/pt_ratio apply to DL/T 645 meters (dlt645-tcp, dlt645-serial), which "
                f"report secondary values; a {self.protocol} meter reports primary values "
                "itself: remove ct_ratio and pt_ratio, or set the ratio in the meter")
        return self


class Meter(Role):
    name = "meter"
    model = MeterDevice

    def summary(self, d: MeterDevice) -> str:
        detail = f"measures {d.measures}"
        if (d.ct_ratio, d.pt_ratio) != (1, 1):
            detail += f", CT {d.ct_ratio:g} × PT {d.pt_ratio:g}"
        return detail

    def driver_options(self, dev: MeterDevice, config) -> dict:
        return {"ct_ratio": dev.ct_ratio, "pt_ratio": dev.pt_ratio}

    def site_problems(self, devs: list[MeterDevice]) -> list[str]:
        grid = [d for d in devs if d.measures == "grid"]
        if len(grid) != 1:
            return [f"exactly one meter with measures: grid (the PCC meter) is required, found "
                    f"{len(grid)}"]
        return []

    def balance_term(self, dev: MeterDevice) -> str:
        return dev.measures

"""What a role does whatever protocol it speaks: a battery stores energy behind its PCS, a
meter integrates kWh and either is the building load or balances the site. Mixed in before
the protocol's base class (hil/devices/sunspec.py, mapped.py, dlt645.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

from edge.config import BatteryDevice, MeterDevice
from hil.config import SimParams, sim_of
from hil.devices.base import Env
from hil.physics import Battery, load_kw


class Storage:
    """A battery behind its PCS: the site counts it on the battery account and reads its
    state of charge."""

    account: ClassVar[Literal["battery"]] = "battery"
    cfg: BatteryDevice
    sim: SimParams
    power_kw: float
    command_kw: float  # the PCS's command (property of the protocol class)

    @classmethod
    def rating_kw(cls, cfg: BatteryDevice) -> float:
        return max(cfg.max_charge_kw, cfg.max_discharge_kw)

    def _init_storage(self, cfg: BatteryDevice) -> None:
        self.battery = Battery(
            capacity_kwh=cfg.capacity_kwh, max_charge_kw=cfg.max_charge_kw,
            max_discharge_kw=cfg.max_discharge_kw, soc_pct=self.sim.initial_soc_pct,
            charge_efficiency=cfg.charge_efficiency, discharge_efficiency=cfg.discharge_efficiency,
            ramp_kw_per_s=cfg.ramp_kw_per_s,
        )

    def stored(self) -> Battery:
        return self.battery

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "soc_pct": self.battery.soc_pct,
                "command_kw": self.command_kw}


class Metering:
    """What every simulated meter does, whatever protocol it speaks: a load meter draws its
    sim profile, the grid (PCC) meter is told the site balance; both integrate kWh."""

    cfg: MeterDevice
    sim: SimParams
    id: str
    power_kw: float = 0.0

    @classmethod
    def building_load(cls, cfg: MeterDevice) -> SimParams | None:
        return sim_of(cfg) if cfg.measures == "load" else None

    def _init_metering(self, cfg: MeterDevice) -> None:
        self.balancing = cfg.measures == "grid"
        self.import_kwh = self.export_kwh = 0.0

    def step(self, env: Env, dt_s: float) -> float:
        """A load meter consumes its profile; the grid meter waits for `measure`."""
        if self.balancing:
            return 0.0
        kw = env.series_kw.get(self.id) if env.series_kw else None
        if kw is None:
            s = self.sim
            kw = load_kw(s.profile, env.t_local, s.base_kw, s.day_kw)
        self.measure(kw, dt_s)
        return -self.power_kw

    def measure(self, kw: float, dt_s: float) -> None:
        """Set the metered power for the last dt_s and integrate the counters."""
        self.power_kw = kw
        self.import_kwh += max(kw, 0.0) * dt_s / 3600
        self.export_kwh += max(-kw, 0.0) * dt_s / 3600

    def state(self) -> dict[str, float | int | None]:
        return {"power_kw": self.power_kw, "import_kwh": self.import_kwh,
                "export_kwh": self.export_kwh}

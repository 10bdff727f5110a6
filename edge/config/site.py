"""The root of the site configuration: the sections, the devices (one model per role, from
the role registry) and the rules that span them."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from edge.config.base import SiteConfig, _Model, default_timeout_s
from edge.config.buses import bus_problems
from edge.config.sections import (
    ApiConfig,
    ControlConfig,
    ForecastConfig,
    MqttConfig,
    OcppConfig,
    PlannerConfig,
    StorageConfig,
    TariffConfig,
)
from edge.config.vpp import CarbonConfig, DrConfig, OpenAdrConfig, VppConfig
from edge.roles import ROLES, DeviceConfig, MeterDevice, PvDevice, grouped


class Config(_Model):
    site: SiteConfig
    devices: list[DeviceConfig] = Field(min_length=1)
    control: ControlConfig = ControlConfig()
    tariff: TariffConfig
    mqtt: MqttConfig = MqttConfig()
    storage: StorageConfig = StorageConfig()
    hil: dict[str, Any] = Field(
        default_factory=dict, description="the simulator's clock (start, speed), declared "
        "and checked by the simulator (hil/config.py); the daemon ignores it")
    planner: PlannerConfig = PlannerConfig()
    forecast: ForecastConfig = ForecastConfig()
    vpp: VppConfig = VppConfig()
    openadr: OpenAdrConfig = OpenAdrConfig()
    dr: DrConfig = DrConfig()
    carbon: CarbonConfig = CarbonConfig()
    ocpp: OcppConfig = OcppConfig()
    api: ApiConfig = ApiConfig()

    @model_validator(mode="before")
    @classmethod
    def _device_timeouts(cls, data: object) -> object:
        """A device without timeout_s gets its protocol's default, fitted to the cycle."""
        if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
            return data
        control = data.get("control")
        cycle_s = control.get("cycle_s", 1.0) if isinstance(control, dict) else getattr(
            control, "cycle_s", 1.0)
        try:
            cycle_s = float(cycle_s)
        except (TypeError, ValueError):
            cycle_s = 1.0
        if not cycle_s > 0:
            cycle_s = 1.0  # reported as control.cycle_s's own error
        devices = [
            {**d, "timeout_s": default_timeout_s(str(d.get("protocol", "sunspec-tcp")), cycle_s)}
            if isinstance(d, dict) and "timeout_s" not in d else d for d in data["devices"]]
        return {**data, "devices": devices}

    @model_validator(mode="after")
    def _buses(self) -> Config:
        problems = bus_problems(self.devices, self.control.cycle_s)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _site_rules(self) -> Config:
        ids = [d.id for d in self.devices]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"device ids must be unique; repeated: {', '.join(sorted(dup))}")
        seen: dict[tuple, str] = {}
        for d in self.devices:
            key = (*d.endpoint, d.address or d.unit_id)
            if key in seen:
                where = (f"serial port {key[1]}" if key[0] == "serial"
                         else f"host {key[0]}, port {key[1]}")
                unit = f"address {d.address}" if d.address else f"unit_id {d.unit_id}"
                fix = "address" if d.address else "unit_id"
                raise ValueError(f"devices {seen[key]} and {d.id} share {where} and {unit}: "
                                 f"one request would reach both; give each its own {fix}")
            seen[key] = d.id
        for name, devs in grouped(self.devices).items():
            problems = ROLES[name].site_problems(devs) + ROLES[name].config_problems(devs, self)
            if problems:
                raise ValueError(problems[0])
        return self

    def pv_safe_kw(self, pv: PvDevice) -> float:
        pct = pv.safe_limit_pct
        if pct is None:
            pct = 0.0 if self.control.export_limit_kw is not None else 100.0
        return pv.rated_kw * pct / 100.0

    def devices_that(self, capability: str) -> list:
        """The devices whose role has `capability` (a Role flag: stores_energy, generates,
        writes), in config order."""
        return [d for d in self.devices if getattr(ROLES[d.role], capability)]

    @property
    def grid_meter(self) -> MeterDevice:
        return next(d for d in self.devices if ROLES[d.role].balance_term(d) == "grid")


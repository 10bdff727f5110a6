"""EV chargers over OCPP (有序充电): controllable consumers that share the site's headroom
by priority, never below their minimum current unless paused, and plan their energy
against each car's departure."""

from __future__ import annotations

from datetime import time
from typing import Literal

from pydantic import Field, model_validator

from drivers.spec import OcppSpec
from edge.config.base import DeviceBase, PositiveKw
from edge.roles.role import Role


class EvChargerDevice(DeviceBase):
    """One OCPP charge point (1.6J or 2.0.1) that connects to the daemon's CSMS as
    ws://<ocpp.host>:<ocpp.port>/<charge_point_id>."""

    role: Literal["ev_charger"]
    protocol: Literal["ocpp"] = "ocpp"
    charge_point_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,48}$",
                                 description="the identity the charger connects with")
    connectors: int = Field(1, ge=1, le=4, description="connectors (EVSEs) on the station; "
                            "the limit applies to each")
    max_current_a: float = Field(gt=0, le=1000, description="per phase; installed at boot as "
                                 "the station's cap")
    min_current_a: float = Field(6.0, gt=0, le=100, description="IEC 61851 floor: below it "
                                 "the charger is paused (0 A), never set in between")
    phases: Literal[1, 3] = 3
    phase: Literal["L1", "L2", "L3"] = Field("L1", description="1-phase chargers: the phase "
                                               "they load (for their circuit)")
    voltage_v: float = Field(230.0, gt=0, le=1000, description="phase voltage")
    circuit: str | None = Field(None, description="a name in ocpp.circuits whose limit it "
                                "shares with the other chargers on it")
    priority: int = Field(0, ge=0, le=1000, description="higher is served first, paused last")
    safe_current_a: float | None = Field(
        None, ge=0, description="what the charger falls back to when the controller goes "
        "quiet (its fail-safe profile); default min_current_a, 0 pauses")
    revert_s: int = Field(300, ge=30, le=86400, description="our limit lapses after this "
                          "unless refreshed; the fail-safe current then applies")
    deadband_a: float = Field(1.0, ge=0, le=32, description="a limit closer than this to the "
                              "one in force is not sent")
    min_interval_s: float = Field(10.0, ge=0, le=3600, description="raises are sent at most "
                                  "this often; cuts go at once")
    enable_delay_s: float = Field(60.0, ge=0, le=3600, description="room for the minimum "
                                  "current must last this long before a paused car resumes")
    disable_delay_s: float = Field(180.0, ge=0, le=3600, description="economic room must be "
                                   "gone this long before a car is paused (limits act at once)")
    car_capacity_kwh: PositiveKw = Field(60.0, description="battery of a car that does not "
                                         "say, to turn its SoC into energy needed")
    target_soc_pct: float = Field(80.0, gt=0, le=100, description="what a session charges to")
    default_energy_kwh: PositiveKw = Field(20.0, description="energy a session needs when "
                                           "the car reports no SoC and no command says")
    default_departure: time | None = Field(
        None, description="local HH:MM a car leaves when no command says; none: "
        "default_dwell_h after it arrived")
    default_dwell_h: float = Field(8.0, gt=0, le=72)

    @model_validator(mode="after")
    def _currents(self) -> EvChargerDevice:
        if self.min_current_a > self.max_current_a:
            raise ValueError("min_current_a must not exceed max_current_a")
        if self.safe_current_a is not None and self.safe_current_a > self.max_current_a:
            raise ValueError("safe_current_a must not exceed max_current_a")
        if self.safe_current_a is not None and 0 < self.safe_current_a < self.min_current_a:
            raise ValueError("safe_current_a must be 0 (pause) or at least min_current_a")
        return self

    @property
    def fail_safe_a(self) -> float:
        return self.min_current_a if self.safe_current_a is None else self.safe_current_a

    def kw(self, amps: float, connectors: int = 1) -> float:
        """AC power at `amps` per phase on `connectors` charging connectors."""
        return amps * self.voltage_v * self.phases * connectors / 1000

    @property
    def max_kw(self) -> float:
        return self.kw(self.max_current_a, self.connectors)


class EvCharger(Role):
    name = "ev_charger"
    model = EvChargerDevice
    writes = True
    decision_key = "ev_a"

    def summary(self, d: EvChargerDevice) -> str:
        return (f"OCPP {d.charge_point_id}, {d.connectors}×{d.phases}-phase "
                f"{d.min_current_a:g}-{d.max_current_a:g} A ({d.max_kw:g} kW), "
                f"priority {d.priority}" + (f", circuit {d.circuit}" if d.circuit else ""))

    def config_problems(self, devs: list[EvChargerDevice], config) -> list[str]:
        problems = []
        ids = [d.charge_point_id for d in devs]
        if dup := sorted({i for i in ids if ids.count(i) > 1}):
            problems.append(f"charge_point_id must be unique; repeated: {', '.join(dup)}")
        for d in devs:
            if d.circuit is not None and d.circuit not in config.ocpp.circuits:
                known = ", ".join(sorted(config.ocpp.circuits)) or "none defined"
                problems.append(f"device {d.id}: circuit {d.circuit!r} is not in "
                                f"ocpp.circuits ({known}); add it there with its max_current_a")
        return problems

    def driver_options(self, dev: EvChargerDevice, config) -> dict:
        return {"ocpp": OcppSpec(
            charge_point_id=dev.charge_point_id, listen_host=config.ocpp.host,
            listen_port=config.ocpp.port, connectors=dev.connectors, phases=dev.phases,
            voltage_v=dev.voltage_v, max_current_a=dev.max_current_a,
            safe_current_a=dev.fail_safe_a, heartbeat_s=config.ocpp.heartbeat_s,
            deadband_a=dev.deadband_a, min_interval_s=dev.min_interval_s)}

"""The simulator's settings that the site YAML carries (`sim:` per device, `hil:` at the
top). The daemon keeps them as opaque mappings (edge/config) and ignores them; the simulator
reads them through `sim_of` and `hil_of`, and `problems` lets the command line refuse a bad
one before anything starts, in the words of every other config problem."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from edge.config import Config, DeviceConfig, config_problems
from edge.config.model import _Model

# SunSpec models the HIL simulators can serve (which ones a role needs: hil/devices/variants.py).
SIM_SUNSPEC_MODELS = (1, 101, 102, 103, 111, 112, 113, 120, 121, 123, 124, 201, 202, 203, 204,
                      701, 702, 704, 713, 715, 802)


class SimParams(_Model):
    """Physics of the simulated device (a device's `sim:`)."""

    peak_kw: float | None = Field(None, gt=0, description="PV: clear-sky peak output")
    profile: Literal["office", "flat"] = "office"
    base_kw: float = Field(30.0, ge=0, description="load: night/base load")
    day_kw: float = Field(100.0, ge=0, description="load: working-hours load")
    initial_soc_pct: float = Field(50.0, ge=0, le=100)
    cloud_factor: float = Field(1.0, ge=0, le=1)
    models: list[int] | None = Field(
        None, description="SunSpec: the model chain served, e.g. [1, 701, 702, 704, 715] "
        "(default: the role's chain of 1xx/2xx models)")
    heartbeat_timeout_s: float = Field(
        30.0, gt=0, description="SunSpec 715/802: reversion when the controller heartbeat "
        "stops changing for this long")
    droop_pct: float = Field(5.0, gt=0, le=20, description="dcdc: bus voltage drop at rated "
                             "power, % of nominal (the converter's droop slope)")

    @field_validator("models")
    @classmethod
    def _sunspec_chain(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return value
        if unknown := [m for m in value if m not in SIM_SUNSPEC_MODELS]:
            raise ValueError(f"the HIL does not simulate SunSpec model(s) {unknown}; it serves "
                             f"{', '.join(map(str, SIM_SUNSPEC_MODELS))}")
        if not value or value[0] != 1:
            raise ValueError("a SunSpec chain starts with model 1 (common), e.g. [1, 701, 702, 704, 715]")
        if len(set(value)) != len(value):
            raise ValueError("list each SunSpec model once")
        return value


class HilConfig(_Model):
    """Simulated clock of the HIL (the top-level `hil:`): start instant and default speed-up."""

    start: datetime = datetime.fromisoformat("2026-06-22T00:00:00+08:00")
    speed: float = Field(1.0, gt=0, le=10000)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give an explicit UTC offset, e.g. 2026-06-22T00:00:00+08:00")
        return value


def sim_of(dev: DeviceConfig) -> SimParams:
    """The device's `sim:` settings (a config `problems` found nothing wrong with)."""
    return SimParams.model_validate(dev.sim)


def hil_of(config: Config) -> HilConfig:
    """The site's `hil:` settings (a config `problems` found nothing wrong with)."""
    return HilConfig.model_validate(config.hil)


class _SimDevice(_Model):
    sim: SimParams


class _SimSections(_Model):
    """The simulator's sections at their places in the site YAML, so that each problem
    names its path there (`devices[2].sim.models`, `hil.start`)."""

    devices: list[_SimDevice]
    hil: HilConfig


def problems(config: Config) -> list[str]:
    """Every problem of the config's `sim:` and `hil:` sections, one `path: what` line each,
    worded as edge.config words the rest."""
    try:
        _SimSections.model_validate(
            {"devices": [{"sim": d.sim} for d in config.devices], "hil": config.hil})
    except ValidationError as exc:
        return config_problems(exc)
    return []

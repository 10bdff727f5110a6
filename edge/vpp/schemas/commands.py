"""Commands (platform -> site, `<prefix>/<site>/cmd/<name>`): strict, frozen models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.vpp.schemas.fields import CmdId, DeviceId, EventId, Kw, Mode, Stamp

EV_ENERGY_MAX_KWH = 200.0  # a sanity bound: above any passenger car's battery


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    cmd_id: CmdId
    sent: Stamp | None = Field(None, description="when the platform sent it (informational)")


class _Window(_Command):
    start: Stamp | None = Field(None, description="window start; omitted = on receipt")
    end: Stamp | None = Field(None, description="window end (exclusive); or give duration_s")
    duration_s: float | None = Field(None, gt=0, le=10_000_000,
                                     description="window length from start; or give end")

    @model_validator(mode="after")
    def _one_end(self) -> _Window:
        if (self.end is None) == (self.duration_s is None):
            raise ValueError("give exactly one of end or duration_s")
        if self.end is not None and self.start is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Dispatch(_Window):
    """Park dispatch for a window: a grid target, or a change from the grid power at
    receipt, and/or grid bounds. Honoured with source `park` (below grid-operator DR)."""

    grid_target_kw: Kw | None = Field(None, description="hold the PCC at this power")
    grid_delta_kw: Kw | None = Field(None, description="target = PCC power at receipt + delta "
                                     "(− = import less / export more)")
    grid_max_kw: Kw | None = Field(None, description="PCC power at most this (+ import)")
    grid_min_kw: Kw | None = Field(None, description="PCC power at least this")

    @model_validator(mode="after")
    def _what(self) -> Dispatch:
        if self.grid_target_kw is not None and self.grid_delta_kw is not None:
            raise ValueError("give grid_target_kw or grid_delta_kw, not both")
        if all(v is None for v in (self.grid_target_kw, self.grid_delta_kw, self.grid_max_kw,
                                   self.grid_min_kw)):
            raise ValueError("give grid_target_kw, grid_delta_kw, grid_max_kw or grid_min_kw")
        lo = -float("inf") if self.grid_min_kw is None else self.grid_min_kw
        hi = float("inf") if self.grid_max_kw is None else self.grid_max_kw
        if lo > hi:
            raise ValueError("grid_min_kw must not exceed grid_max_kw")
        if self.grid_target_kw is not None and not lo <= self.grid_target_kw <= hi:
            raise ValueError("grid_target_kw must lie within grid_min_kw..grid_max_kw")
        return self


class DrEvent(_Window):
    """A demand-response event relayed by the platform from the grid operator. Honoured with
    source `grid_operator`, above park dispatch and the local plan."""

    event_id: EventId
    direction: Literal["reduce", "increase"] = Field(
        description="reduce: peak shaving (import less); increase: valley filling (import more)")
    kw: float | None = Field(None, gt=0, le=100_000,
                             description="amount to reduce/increase from the baseline")
    target_kw: Kw | None = Field(None, description="or: the PCC power to hold")
    baseline_kw: Kw | None = Field(None, description="the platform's baseline; else the site's")
    notice: Literal["day_ahead", "hour", "minute", "second"] = Field(
        description="notice class (日前 / 小时级 / 分钟级 / 秒级)")

    @model_validator(mode="after")
    def _amount(self) -> DrEvent:
        if (self.kw is None) == (self.target_kw is None):
            raise ValueError("give exactly one of kw or target_kw")
        return self


class ModeCommand(_Command):
    """auto: normal operation. hold: hold the PCC at its power at receipt; park dispatches
    are refused until auto. local: the platform lets go; park dispatches are ended and
    refused until auto. Grid-operator DR is honoured in every mode."""

    mode: Mode


class Cancel(_Command):
    """End an accepted dispatch (by its cmd_id) or DR event (by its event_id) now."""

    target_cmd_id: CmdId | None = None
    event_id: EventId | None = None

    @model_validator(mode="after")
    def _one(self) -> Cancel:
        if (self.target_cmd_id is None) == (self.event_id is None):
            raise ValueError("give exactly one of target_cmd_id or event_id")
        return self


class EvSession(_Command):
    """An EV charging session's departure and/or the energy it still needs, from the
    driver (an app, a fleet system): it wins over the car's SoC and the charger's defaults.
    For the car plugged in when the command arrives, else the next car on that charger. The
    decision plans the energy against the departure and charges flat out once the slack is
    gone. Honoured in every mode."""

    device_id: DeviceId
    departure: Stamp | None = Field(None, description="when the car leaves (in the future)")
    energy_kwh: float | None = Field(None, gt=0, le=EV_ENERGY_MAX_KWH,
                                     description="energy it still needs from now")

    @model_validator(mode="after")
    def _something(self) -> EvSession:
        if self.departure is None and self.energy_kwh is None:
            raise ValueError("give departure, energy_kwh or both")
        return self


COMMANDS: dict[str, type[_Command]] = {
    "dispatch": Dispatch, "dr_event": DrEvent, "mode": ModeCommand, "cancel": Cancel,
    "ev_session": EvSession,
}


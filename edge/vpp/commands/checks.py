"""A command's window and what the site can do: the site's import/export limits, for a
grid target what the batteries can reach and hold now (edge/vpp/capability.py), and for an
EV session the charger it names and the session it means."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from edge.config import Config, ControlConfig, VppConfig
from edge.image.image import ProcessImage
from edge.roles import role_of
from edge.vpp.capability import Capability
from edge.vpp.commands.parse import Rejected, iso
from edge.vpp.schemas.commands import Dispatch, DrEvent, EvSession

_REACH_SLACK_KW = 0.5  # reach and energy checks tolerate this much (measurement noise)
REACH_AHEAD = timedelta(minutes=15)  # later windows: limits only, the state then is unknown
DEPARTURE_AHEAD = timedelta(days=7)  # a car's departure further out is a typo, not a plan


def window(cmd: Dispatch | DrEvent, now: datetime, vpp: VppConfig, *, stale_start: bool
           ) -> tuple[datetime, datetime]:
    """The command's window, if it is not over, not stale, not too far ahead, not too long."""
    start = cmd.start or now
    end = cmd.end if cmd.end is not None else start + timedelta(seconds=cmd.duration_s or 0)
    if end <= now:
        raise Rejected(f"window is over: end {iso(end)} is not after now {iso(now)}")
    if stale_start and (now - start).total_seconds() > vpp.past_tolerance_s:
        raise Rejected(f"start {iso(start)} is more than vpp.past_tolerance_s "
                       f"({vpp.past_tolerance_s:g} s) in the past; send a fresh command")
    if (start - now).total_seconds() > vpp.max_ahead_s:
        raise Rejected(f"start {iso(start)} is more than vpp.max_ahead_s "
                       f"({vpp.max_ahead_s:g} s) ahead")
    if (end - start).total_seconds() > vpp.max_window_s:
        raise Rejected(f"window of {(end - start).total_seconds():g} s is longer than "
                       f"vpp.max_window_s ({vpp.max_window_s:g} s)")
    return start, end


def site_limits(c: ControlConfig, what: str, *, target: float | None = None,
                floor: float | None = None, ceiling: float | None = None) -> None:
    """Targets and bounds within the configured import and export limits."""
    imp = math.inf if c.import_limit_kw is None else c.import_limit_kw
    exp = math.inf if c.export_limit_kw is None else c.export_limit_kw
    for name, value in (("target", target), ("floor", floor)):
        if value is not None and value > imp:
            raise Rejected(f"{what} {name} {value:g} kW is above the site import limit "
                           f"{imp:g} kW (control.import_limit_kw)")
    for name, value in (("target", target), ("ceiling", ceiling)):
        if value is not None and value < -exp:
            raise Rejected(f"{what} {name} {value:g} kW is below the site export limit "
                           f"-{exp:g} kW (control.export_limit_kw)")


def reach(cap: Capability, grid_kw: float, target: float, hours: float) -> None:
    """The batteries can move the PCC from `grid_kw` to `target` now and hold it for `hours`,
    with load − PV as it is now (the kernel reports it later if the load moves away).
    Batteries only: the cycle sheds loads and curtails PV for a grid bound, not a target."""
    bats = cap.of("storage")
    native = grid_kw + sum(b.push_kw for b in bats)  # the batteries at 0: load − PV
    lo, hi = native - sum(b.max_kw for b in bats), native - sum(b.min_kw for b in bats)
    if not lo - _REACH_SLACK_KW <= target <= hi + _REACH_SLACK_KW:
        raise Rejected(f"grid target {target:g} kW is beyond what the batteries can reach "
                       f"now ({lo:.1f}..{hi:.1f} kW with load - PV at {native:.1f} kW)")
    need = (native - target) * hours  # + discharge / − charge, kWh
    rest = [replace(b, push_kw=0.0) for b in bats]
    if need > 0 and need > sum(b.up_kw(hours) for b in rest) * hours + _REACH_SLACK_KW:
        raise Rejected(f"holding {target:g} kW for {hours:.2f} h needs {need:.1f} kWh of "
                       f"discharge; the batteries hold {sum(b.up_kwh for b in bats):.1f} kWh "
                       "above soc_min")
    if need < 0 and -need > sum(b.down_kw(hours) for b in rest) * hours + _REACH_SLACK_KW:
        raise Rejected(f"holding {target:g} kW for {hours:.2f} h needs {-need:.1f} kWh of "
                       f"charge; the batteries have room for {sum(b.down_kwh for b in bats):.1f} "
                       "kWh")


def session_request(config: Config, image: ProcessImage | None, cmd: EvSession,
                    now: datetime) -> Any:
    """The standing request an `ev_session` command becomes (its role builds it, for the
    session the charger has now, or the next one), if the device is one with sessions and
    the departure lies ahead."""
    dev = next((d for d in config.devices if d.id == cmd.device_id), None)
    if dev is None:
        raise Rejected(f"no device {cmd.device_id!r} on this site")
    try:
        req = role_of(dev).session_request(dev, image, now, cmd.departure, cmd.energy_kwh)
    except ValueError as exc:
        raise Rejected(str(exc)) from None
    if req is None:
        raise Rejected(f"device {dev.id} is a {dev.role}, not an EV charger: it has no "
                       "charging sessions")
    if cmd.departure is not None and cmd.departure <= now:
        raise Rejected(f"departure {iso(cmd.departure)} is not after now {iso(now)}")
    if cmd.departure is not None and cmd.departure - now > DEPARTURE_AHEAD:
        raise Rejected(f"departure {iso(cmd.departure)} is more than "
                       f"{DEPARTURE_AHEAD.days} days ahead")
    return req

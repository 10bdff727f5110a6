"""OpenADR events without openleadr: signals normalised into `DrRequest`s, requests into
DR events on the daemon's clock, and the opt decision from what the site can deliver."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.app.clock import Clock
from edge.config import Config, ControlConfig
from edge.image.image import ProcessImage
from edge.roles.role import Demand
from edge.vpp.capability import site_capability
from edge.vpp.eventstore import OPT_IN, OPT_OUT, DrRequest
from edge.vpp.shaping import DrEvent, Segment

OPEN_ENDED = timedelta(hours=24)  # an event of duration 0 runs until cancelled; re-sent updates extend it
ID_PREFIX = "oadr:"


def wall_now() -> datetime:
    return datetime.now(UTC)


def to_clock(clock: Clock, wall: datetime) -> datetime:
    """A wall-clock instant on the daemon's clock (identity in real time; under HIL the
    simulated clock runs `speed` times faster from its own start)."""
    if clock.wall:
        return wall  # exactly: two instants converted apart must keep their order
    return clock.now() + (wall - wall_now()) * clock.speed


# -- normalising an openleadr event ---------------------------------------------------------
_SCALE = {"none": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}  # siScaleCode
_UNIT_KW = {"W": 1e-3, "kW": 1.0, "MW": 1e3}


def _kw_factor(signal: dict[str, Any]) -> float:
    """kW per signal unit, from the signal's itemBase; kW when there is none. openleadr 0.5
    parses it as `measurement` {unit, scale}, except in signals after one without an itemBase,
    which keep the raw element (`powerReal` {item_units, si_scale_code})."""
    item = signal.get("measurement")
    if not isinstance(item, dict):
        item = next((v for v in signal.values() if isinstance(v, dict) and "item_units" in v), {})
    unit = _UNIT_KW.get(str(item.get("unit", item.get("item_units"))))
    if unit is None:
        return 1.0  # no itemBase, or not a power unit (a level, a fraction): used as is
    return unit * _SCALE.get(str(item.get("scale", item.get("si_scale_code")) or "none"), 1.0)


def signals(event: dict[str, Any]) -> list[dict[str, Any]]:
    s = event.get("event_signals") or []
    return s["event_signals"] if isinstance(s, dict) else list(s)


def active_window(event: dict[str, Any]) -> tuple[datetime, datetime]:
    ap = event["active_period"]
    start = ap["dtstart"].astimezone(UTC)
    duration = ap.get("duration") or timedelta(0)
    return start, start + (duration if duration > timedelta(0) else OPEN_ENDED)


def normalise(event: dict[str, Any], levels: dict[int, float], baseline_kw: float,
              received: datetime) -> tuple[list[DrRequest], list[str]]:
    """The event's signal intervals as `DrRequest`s, and the names of signals not acted on."""
    event_id = event["event_descriptor"]["event_id"]
    start, end = active_window(event)
    requests: list[DrRequest] = []
    ignored: list[str] = []
    for si, signal in enumerate(signals(event)):
        name, typ = str(signal.get("signal_name")), str(signal.get("signal_type"))
        factor = _kw_factor(signal)
        cursor = start
        for ii, interval in enumerate(signal.get("intervals") or []):
            i_start = (interval.get("dtstart") or cursor).astimezone(UTC)
            duration = interval.get("duration") or timedelta(0)
            i_end = i_start + duration if duration > timedelta(0) else end
            cursor = i_end
            mapped = _map(name, typ, float(interval.get("signal_payload", 0.0)), factor, levels,
                          baseline_kw)
            if mapped is None:
                ignored.append(f"{name}/{typ}")
                break
            direction, kw, target = mapped
            notice = max((i_start - received).total_seconds(), 0.0)
            requests.append(DrRequest(event_id, f"{si}.{ii}", direction, kw, target, i_start,
                                      min(i_end, end), notice))
    return requests, sorted(set(ignored))


def _map(name: str, typ: str, value: float, factor: float, levels: dict[int, float],
         baseline: float) -> tuple[str, float, float] | None:
    """(direction, kw relative to baseline or NaN, absolute target or NaN); None: not acted on."""
    nan = math.nan
    name = name.upper()
    if name == "SIMPLE" and typ == "level":
        level = min(max(round(value), 0), 3)
        return ("reduce", levels[level] if level else 0.0, nan)
    if (name, typ) in (("LOAD_DISPATCH", "setpoint"), ("LOAD_CONTROL", "x-loadControlSetpoint")):
        target = value * factor
        return ("increase" if target > baseline else "reduce", nan, target)
    if name == "LOAD_DISPATCH" and typ == "delta":
        delta = value * factor
        return ("increase", delta, nan) if delta > 0 else ("reduce", -delta, nan)
    if name == "LOAD_CONTROL" and typ == "x-loadControlCapacity":
        change = (value - 1.0) * max(baseline, 0.0)
        return ("increase", change, nan) if change > 0 else ("reduce", -change, nan)
    if name == "LOAD_CONTROL" and typ == "x-loadControlPercentOffset":
        change = value / 100.0 * max(baseline, 0.0)
        return ("increase", change, nan) if change > 0 else ("reduce", -change, nan)
    return None


def needed_kw(r: DrRequest, baseline_kw: float) -> float:
    """How far the request moves the grid power from the baseline, in its direction."""
    if not math.isnan(r.kw):
        return r.kw
    return baseline_kw - r.target_kw if r.direction == "reduce" else r.target_kw - baseline_kw


# -- the seam with DR execution (edge/vpp/dr/) ---------------------------------------------
def _notice(seconds: float) -> str:
    """docs/domain.md §4 notice classes from the time between receipt and start."""
    if seconds >= 6 * 3600:
        return "day_ahead"
    if seconds >= 15 * 60:
        return "hour"
    return "minute" if seconds >= 60 else "second"


def dr_events(event_id: str, requests: list[DrRequest] | tuple[DrRequest, ...],
              clock: Clock) -> list[DrEvent]:
    """One `DrEvent` per signal and direction, its intervals as segments, on the daemon's
    clock; intervals asking for nothing (SIMPLE level 0) are left out."""
    groups: dict[str, list[DrRequest]] = {}
    for r in requests:
        if math.isnan(r.target_kw) and r.kw <= 0:
            continue
        groups.setdefault(dr_event_id(event_id, r), []).append(r)
    out = []
    for did, rs in groups.items():
        rs = sorted(rs, key=lambda r: r.start)
        segments = tuple(Segment(to_clock(clock, r.start), to_clock(clock, r.end),
                                 None if math.isnan(r.kw) else r.kw,
                                 None if math.isnan(r.target_kw) else r.target_kw) for r in rs)
        out.append(DrEvent(did, "grid_operator", rs[0].direction, segments[0].start,
                           segments[-1].end, notice=_notice(rs[0].notice_s),
                           segments=segments))
    return out


def dr_event_id(event_id: str, r: DrRequest) -> str:
    signal = r.key.split(".")[0]
    return f"{ID_PREFIX}{event_id}:{signal}{'-' if r.direction == 'reduce' else '+'}"


# -- flexibility and the opt decision --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Flexibility:
    """What the site can add to a grid-power change, sustained over an event window (kW)."""

    reduce_kw: float
    increase_kw: float
    detail: str


def flexibility(config: Config, image: ProcessImage, hours: float,
                demands: Iterable[Demand] = ()) -> Flexibility:
    """What the site's devices can add from now, held over the event (edge/vpp/capability.py;
    `demands`: the last decision's, so an EV counts its pause only within its slack). How
    far the site's import/export limits let the grid move is the caller's cap: it depends
    on the baseline."""
    cap = site_capability(config, image, hours, demands)
    return Flexibility(cap.up_kw, cap.down_kw, cap.detail)


def decide(requests: list[DrRequest], ignored: list[str], baseline_kw: float, flex: Flexibility,
           committed: dict[str, float], control: ControlConfig,
           min_fraction: float) -> tuple[str, str]:
    """optIn when the site can deliver at least `min_fraction` of every direction the event
    asks for; optOut otherwise, with the reason in words."""
    if not requests:
        what = ", ".join(ignored) or "no signal"
        return OPT_OUT, f"nothing the site can act on ({what})"
    if math.isnan(baseline_kw):
        return OPT_OUT, "no valid PCC reading: cannot tell what the site can deliver"
    lines = []
    for direction in ("reduce", "increase"):
        asked = max((needed_kw(r, baseline_kw) for r in requests if r.direction == direction),
                    default=0.0)
        if asked <= 1e-9:
            continue
        if direction == "reduce":
            room = math.inf if control.export_limit_kw is None else baseline_kw + control.export_limit_kw
            avail = flex.reduce_kw
        else:
            room = math.inf if control.import_limit_kw is None else control.import_limit_kw - baseline_kw
            avail = flex.increase_kw
        claimed = committed.get(direction, 0.0)
        can = max(min(avail - claimed, room), 0.0)
        why = f"{direction} {asked:.1f} kW from a {baseline_kw:.1f} kW baseline: can deliver " \
              f"{can:.1f} kW ({flex.detail}"
        why += f"; {claimed:.1f} kW already committed" if claimed else ""
        why += f"; site limits allow {max(room, 0):.1f} kW" if room < avail - claimed else ""
        why += ")"
        if can < min_fraction * asked:
            return OPT_OUT, f"{why}, below {min_fraction:.0%} of the request"
        lines.append(why)
    return OPT_IN, "; ".join(lines) or "normal operation requested (nothing to change)"

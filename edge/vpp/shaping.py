"""A DR event, protocol-free, and its shape in time as grid instructions.

Reduce: a ceiling on the PCC power; increase (valley filling): a floor.
- ramp-in: over `dr.ramp_in_s` before the start the bound moves linearly, in one-minute
  steps, from the baseline to the event level, so the site is at the level when the event
  begins instead of stepping at the start (a short-notice event ramps over what is left);
- hold: per 15-min interval, level = baseline − declared × target_ratio (reduce) or
  + (increase), as bound and as grid target: the site follows the level (docs/domain.md §4), so
  the battery spends no more energy than the event needs and lasts to its end;
- staggered restore: after the end the bound relaxes in `dr.restore_steps` steps over
  `dr.restore_s` up to the pre-event baseline peak (reduce) or down to its minimum
  (increase), so batteries and loads do not all recover at once: no rebound peak above the
  baseline's. A cancellation mid-event restores the same way from the level in force.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np

from edge.config import ControlConfig, DrConfig
from edge.control.instructions import Instruction
from edge.vpp.baseline import QUARTER, event_intervals

Direction = Literal["reduce", "increase"]
Notice = Literal["day_ahead", "hour", "minute", "second"]
_RAMP_STEP_S = 60.0  # a linear ramp, approximated in one-minute steps


class DrRejected(ValueError):
    """The site will not take this event; the message says why (for the ack / optOut)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Part of an event with its own amount (an OpenADR signal interval): `kw` relative to
    the baseline, or `target_kw` an absolute PCC power."""

    start: datetime
    end: datetime
    kw: float | None = None
    target_kw: float | None = None


@dataclass(frozen=True, slots=True)
class DrEvent:
    """One DR event, protocol-free. Times are on the daemon's clock (aware)."""

    id: str
    source: Literal["grid_operator", "park"]
    direction: Direction
    start: datetime
    end: datetime
    kw: float | None = None  # declared change from the baseline, > 0
    target_kw: float | None = None  # or: the PCC power to hold
    notice: Notice = "hour"
    segments: tuple[Segment, ...] = ()  # per-part amounts; empty = one part (kw/target_kw)
    baseline_kw: float | None = None  # the operator's own baseline, flat; None = the site's
    cmd_id: str | None = None  # the platform command that carried it, for the reports

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise DrRejected(f"event {self.id!r}: {name} {why}")

        if not self.id or not isinstance(self.id, str):
            raise DrRejected("event id must be a non-empty string")
        if self.source not in ("grid_operator", "park"):
            bad("source", f"{self.source!r} must be grid_operator or park")
        if self.direction not in ("reduce", "increase"):
            bad("direction", f"{self.direction!r} must be reduce or increase")
        if self.notice not in ("day_ahead", "hour", "minute", "second"):
            bad("notice", f"{self.notice!r} must be day_ahead, hour, minute or second")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            bad("start/end", "need a UTC offset")
        if self.end <= self.start:
            bad("end", f"{self.end.isoformat()} must be after start {self.start.isoformat()}")
        if self.baseline_kw is not None and not math.isfinite(self.baseline_kw):
            bad("baseline_kw", "must be a finite number")
        for i, s in enumerate(self.parts):
            name = f"segments[{i}]" if self.segments else "kw/target_kw"
            if (s.kw is None) == (s.target_kw is None):
                bad(name, "needs exactly one of kw or target_kw")
            if s.kw is not None and not (math.isfinite(s.kw) and s.kw > 0):
                bad(name, f"kw {s.kw} must be > 0")
            if s.target_kw is not None and not math.isfinite(s.target_kw):
                bad(name, "target_kw must be a finite number")
            if not self.start <= s.start < s.end <= self.end:
                bad(name, "must lie inside the event window, start before end")
        for a, b in zip(self.parts, self.parts[1:], strict=False):
            if b.start < a.end:
                bad("segments", "must be in time order without overlap")

    @property
    def parts(self) -> tuple[Segment, ...]:
        return self.segments or (Segment(self.start, self.end, self.kw, self.target_kw),)

    @property
    def sign(self) -> int:
        """Direction of the grid change: −1 reduce, +1 increase."""
        return -1 if self.direction == "reduce" else 1

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("start", "end"):
            d[k] = d[k].isoformat()
        d["segments"] = [{**s, "start": s["start"].isoformat(), "end": s["end"].isoformat()}
                         for s in d["segments"]]
        return d

    @classmethod
    def from_json(cls, d: dict) -> DrEvent:
        t = datetime.fromisoformat
        segs = tuple(Segment(t(s["start"]), t(s["end"]), s["kw"], s["target_kw"])
                     for s in d.get("segments", ()))
        return cls(**{**d, "start": t(d["start"]), "end": t(d["end"]), "segments": segs})


# -- shaping -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Piece:
    """A stretch of the hold at one level, inside one 15-min interval and one segment."""

    start: datetime
    end: datetime
    interval: int  # index of the event interval
    baseline_kw: float
    declared_kw: float
    level_kw: float


def site_window(control: ControlConfig) -> tuple[float, float]:
    """The PCC window the configured limits allow: (−export limit, import limit)."""
    lo = -math.inf if control.export_limit_kw is None else -control.export_limit_kw
    hi = math.inf if control.import_limit_kw is None else control.import_limit_kw
    return lo, hi


def pieces(event: DrEvent, baseline_kw: np.ndarray, starts: list[datetime],
           target_ratio: float, window: tuple[float, float] = (-math.inf, math.inf)
           ) -> list[Piece]:
    """The hold levels: baseline ± declared × target_ratio per interval and segment, kept
    inside the site's `window` (the margin never pushes a level past a configured limit:
    the kernel would drop a bound outside them). A target segment declares how far the
    target is from the baseline; a target the site is already beyond declares nothing and
    stays a plain cap (reduce) or floor (increase)."""
    out = []
    for i, t in enumerate(starts):
        b = float(baseline_kw[i])
        for s in event.parts:
            lo, hi = max(t, s.start), min(t + QUARTER, s.end)
            if lo >= hi:
                continue
            if s.kw is not None:
                declared = s.kw
                level = b + event.sign * declared * target_ratio
            else:
                declared = max(0.0, event.sign * (s.target_kw - b))
                level = b + event.sign * declared * target_ratio if declared > 0 else s.target_kw
            level = min(max(level, window[0]), window[1])
            out.append(Piece(lo, hi, i, b, declared, level))
    return out


def _bound(event: DrEvent, iid: str, start: datetime, end: datetime, level: float,
           target: bool = False) -> Instruction:
    kw = {"grid_max_kw" if event.direction == "reduce" else "grid_min_kw": level}
    if target:
        # One-sided: aim down (reduce) or up (increase) to the level, never the other way:
        # a site already below a reduce level must not charge from the grid to climb to it.
        kw["grid_target_kw"] = level
        kw["target_side"] = "down" if event.direction == "reduce" else "up"
    return Instruction(iid, event.source, start, end, **kw)


def ramp_instructions(event: DrEvent, from_kw: float, to_kw: float, ramp_in_s: float,
                      now: datetime | None = None) -> list[Instruction]:
    """Bounds moving linearly from `from_kw` to `to_kw` before the event starts, in
    one-minute steps, each step at the value its end reaches (the level holds at start)."""
    begin = event.start - timedelta(seconds=ramp_in_s)
    if now is not None:
        begin = max(begin, now)
    span = (event.start - begin).total_seconds()
    if span < 1.0:
        return []
    n = max(1, math.ceil(span / _RAMP_STEP_S - 1e-9))
    step = timedelta(seconds=span / n)
    return [_bound(event, f"{event.id}#ramp{k}", begin + (k - 1) * step, begin + k * step,
                   from_kw + (to_kw - from_kw) * k / n) for k in range(1, n + 1)]


def restore_instructions(event: DrEvent, from_kw: float, to_kw: float, at: datetime,
                         cfg: DrConfig) -> list[Instruction]:
    """Bounds relaxing from `from_kw` to `to_kw` in `restore_steps` steps over `restore_s`
    from `at`; nothing when `to_kw` is not looser than `from_kw`."""
    if cfg.restore_s <= 0 or event.sign * (from_kw - to_kw) <= 0:
        return []
    m = cfg.restore_steps
    step = timedelta(seconds=cfg.restore_s / m)
    return [_bound(event, f"{event.id}#restore{k}", at + (k - 1) * step, at + k * step,
                   from_kw + (to_kw - from_kw) * k / m) for k in range(1, m + 1)]


def event_instructions(event: DrEvent, baseline_kw, cfg: DrConfig, now: datetime | None = None,
                       window: tuple[float, float] = (-math.inf, math.inf)) -> list[Instruction]:
    """The whole event as instructions: ramp-in, hold (per interval, equal neighbours
    merged), staggered restore. `baseline_kw`: one value per quarter hour of the event
    (`baseline.event_intervals`); `window`: the site's limits (`site_window`). With `now`,
    nothing that is already over is returned and the ramp-in starts no earlier than now."""
    starts, _ = event_intervals(event.start, event.end)
    base = np.asarray(baseline_kw, dtype=float)
    if len(base) != len(starts):
        raise ValueError(f"baseline has {len(base)} values; the event spans {len(starts)} "
                         "quarter hours")
    ps = pieces(event, base, starts, cfg.target_ratio, window)
    if not ps:
        return []
    out = ramp_instructions(event, float(base[0]), ps[0].level_kw, cfg.ramp_in_s, now)
    run = [ps[0]]
    for p in [*ps[1:], None]:
        if p is not None and p.start == run[-1].end and abs(p.level_kw - run[0].level_kw) < 1e-6:
            run.append(p)
            continue
        out.append(_bound(event, f"{event.id}#hold{len(out)}", run[0].start, run[-1].end,
                          run[0].level_kw, target=True))
        if p is not None:
            run = [p]
    out += restore_instructions(event, ps[-1].level_kw, restore_to(event, base), event.end, cfg)
    return [i for i in out if now is None or i.end > now]


def restore_to(event: DrEvent, base: np.ndarray) -> float:
    """Where the restore ends: the pre-event baseline peak (reduce) or minimum (increase)."""
    return float(np.max(base)) if event.direction == "reduce" else float(np.min(base))


def limit_problems(event: DrEvent, ps: list[Piece], control: ControlConfig) -> list[str]:
    """Intervals whose declared amount the site's configured limits forbid (the limits
    protect the connection and always win, so such an event could only be partly met)."""
    out = []
    for p in ps:
        lvl = p.baseline_kw + event.sign * p.declared_kw
        if event.direction == "reduce" and control.export_limit_kw is not None \
                and lvl < -control.export_limit_kw - 1e-6:
            out.append(f"at {p.start:%H:%M} UTC the level {lvl:.1f} kW would export beyond "
                       f"control.export_limit_kw {control.export_limit_kw:g} kW")
        if event.direction == "increase" and control.import_limit_kw is not None \
                and lvl > control.import_limit_kw + 1e-6:
            out.append(f"at {p.start:%H:%M} UTC the level {lvl:.1f} kW is above "
                       f"control.import_limit_kw {control.import_limit_kw:g} kW")
    return out

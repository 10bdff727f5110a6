"""One DR event under way: its phase, its instructions and its live M&V from the site's
15-min history plus the quarter hour still open."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np

from edge.config import Config, DrConfig
from edge.control.instructions import Instruction
from edge.report.history import INTERVAL_S, History, Interval, interval_start
from edge.vpp import mv
from edge.vpp.baseline import QUARTER, Baseline, event_intervals
from edge.vpp.capability import site_capability
from edge.vpp.shaping import (
    Direction,
    DrEvent,
    event_instructions,
    pieces,
    restore_instructions,
    restore_to,
)

_MIN_OPEN_S = 60.0  # the open interval counts for live M&V once this much is measured


class LiveHistory:
    """The stored 15-min history plus the quarter hour still open in the accumulator, so
    live M&V sees the running interval before it closes."""

    def __init__(self, history: History, meter=None) -> None:
        self.history = history
        self.meter = meter

    def _open(self) -> Interval | None:
        iv = self.meter.current() if self.meter is not None else None
        return iv if iv is not None and iv.covered_s >= _MIN_OPEN_S else None

    def series(self, key: str, start: datetime, end: datetime) -> np.ndarray:
        """Mean kW per quarter hour over the part of it that was measured (a gap between
        cycles leaves energy out; spreading the rest over the whole 15 min would count the
        gap as a reduction); NaN where less than half of a closed interval was measured."""
        s = interval_start(start)
        out = np.full(max(0, math.ceil((end - s).total_seconds() / INTERVAL_S)), np.nan)
        for iv in self.history.intervals(s, end):
            if iv.covered_s >= INTERVAL_S / 2:
                _set_mean(out, s, iv, key)
        iv = self._open()
        if iv is not None:
            _set_mean(out, s, iv, key)
        return out

    def day(self, key: str, day: date, tz) -> np.ndarray:
        start = datetime.combine(day, datetime.min.time(), tz)
        return self.series(key, start, datetime.combine(day + timedelta(days=1),
                                                        datetime.min.time(), tz))

    def closed_after(self, t: datetime) -> bool:
        """The interval starting at `t` is closed (the accumulator has moved past it)."""
        iv = self.meter.current() if self.meter is not None else None
        return iv is not None and iv.start > t


def _set_mean(out: np.ndarray, first: datetime, iv: Interval, key: str) -> None:
    i = int((iv.start - first).total_seconds() // INTERVAL_S)
    if 0 <= i < len(out):
        kwh = iv.grid_kwh if key == "grid" else getattr(iv, f"{key}_kwh")
        out[i] = kwh * 3600.0 / iv.covered_s


def battery_state(config: Config, image, direction: Direction) -> tuple[float, float]:
    """What the batteries now put into the event (kW) and can still put in (kWh): discharge
    and energy above soc_min for a reduction, charge and room below soc_max for an increase."""
    if image is None:
        return 0.0, math.inf
    bats = site_capability(config, image, QUARTER.total_seconds() / 3600).of("storage")
    if direction == "reduce":
        return sum(max(b.push_kw, 0.0) for b in bats), sum(b.up_kwh for b in bats)
    return sum(max(-b.push_kw, 0.0) for b in bats), sum(b.down_kwh for b in bats)


def _num(x, nd: int = 3) -> float | None:
    return round(float(x), nd) if x is not None and math.isfinite(x) else None


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class DrExecution:
    """One event on a fixed baseline: its instructions, its phase, its M&V."""

    def __init__(self, event: DrEvent, base: Baseline, cfg: DrConfig,
                 window: tuple[float, float] = (-math.inf, math.inf)) -> None:
        self.event, self.baseline, self.cfg, self.window = event, base, cfg, window
        self.starts, self.hours = event_intervals(event.start, event.end)
        self.pieces = pieces(event, base.kw, self.starts, cfg.target_ratio, window)
        self.declared_kw = np.zeros(len(self.starts))
        for p in self.pieces:
            self.declared_kw[p.interval] += p.declared_kw * (p.end - p.start).total_seconds() / 3600
        self.declared_kw /= self.hours
        self.end = event.end  # the cancellation time when cancelled mid-event
        self.cancelled = False
        self.final: dict | None = None
        self.alarm = False

    @property
    def ramp_start(self) -> datetime:
        return self.event.start - timedelta(seconds=self.cfg.ramp_in_s)

    @property
    def declared_mean_kw(self) -> float:
        return float(np.sum(self.declared_kw * self.hours) / np.sum(self.hours))

    def instructions(self, now: datetime | None = None) -> list[Instruction]:
        return event_instructions(self.event, self.baseline.kw, self.cfg, now, self.window)

    def level_at(self, t: datetime) -> float | None:
        for p in self.pieces:
            if p.start <= t < p.end:
                return p.level_kw
        return None

    def cancel(self, now: datetime) -> list[Instruction]:
        """End the event at `now`; returns the restore from the level in force (none before
        the start). M&V then covers [start, now)."""
        self.cancelled = True
        if now <= self.event.start:
            self.end = self.event.start
            return []
        self.end = min(now, self.end)
        level = self.level_at(self.end - timedelta(microseconds=1))
        if level is None:
            return []
        return restore_instructions(self.event, level, restore_to(self.event, self.baseline.kw),
                                    now, self.cfg)

    def phase(self, now: datetime) -> str:
        if self.final is not None:
            return "done"
        if now < self.ramp_start and now < self.event.start:
            return "scheduled"
        if now < self.event.start:
            return "ramp"
        if now < self.end:
            return "hold"
        return "restore"

    def measure(self, view, now: datetime, image=None, config: Config | None = None
                ) -> mv.Measurement:
        key = self.cfg.baseline_on
        n = len(self.starts)
        actual = view.series(key, self.starts[0], self.starts[-1] + QUARTER)[:n]
        hours = self._hours(self.end)
        elapsed = self._hours(min(now, self.end))
        bkw, bkwh = battery_state(config, image, self.event.direction) if config else (0.0, math.inf)
        return mv.measure(self.baseline.kw, actual, self.declared_kw, hours, elapsed,
                          self.event.direction, planned_ratio=self.cfg.target_ratio,
                          battery_kw=bkw, battery_kwh=bkwh, alarm_ratio=self.cfg.alarm_ratio,
                          penalty_below=self.cfg.penalty_below, pay_cap=self.cfg.pay_cap)

    def _hours(self, until: datetime) -> np.ndarray:
        """Hours of each event interval inside [start, until)."""
        out = np.zeros(len(self.starts))
        for i, t in enumerate(self.starts):
            lo, hi = max(t, self.event.start), min(t + QUARTER, self.end, until)
            out[i] = max(0.0, (hi - lo).total_seconds() / 3600)
        return out

    def report(self, m: mv.Measurement, now: datetime, final: bool) -> dict:
        """The `dr/<event_id>` message (edge/vpp/schemas/reports.py DrReport)."""
        phase = self.phase(now)
        status = ("cancelled" if self.cancelled else "completed") if final else (
            "pending" if phase in ("scheduled", "ramp") else "active")
        n = int(np.count_nonzero(self._hours(self.end) > 0))  # a cancelled event: fewer
        intervals = [{
            "start": iso(self.starts[i]), "baseline_kw": _num(self.baseline.kw[i]),
            "actual_kw": _num(self.baseline.kw[i] + self.event.sign * m.delivered_kw[i]),
            "delivered_kw": _num(m.delivered_kw[i]), "declared_kw": _num(self.declared_kw[i]),
            "response_ratio": _num(m.interval_ratio[i], 4),
        } for i in range(n)]
        ratio = m.response_ratio
        result = None
        if final and ratio is not None:
            result = "met" if ratio >= 1.0 - 1e-9 else (
                "partial" if ratio >= self.cfg.penalty_below else "failed")
        return {
            "ts": iso(now), "event_id": self.event.id, "cmd_id": self.event.cmd_id,
            "source": self.event.source, "direction": self.event.direction, "status": status,
            "phase": phase, "start": iso(self.event.start), "end": iso(self.end),
            "declared_kw": _num(self.declared_mean_kw),
            "baseline_method": self.baseline.method, "baseline_on": self.cfg.baseline_on,
            "baseline_degraded": self.baseline.degraded, "baseline_note": self.baseline.note,
            "baseline_days": [d.isoformat() for d in self.baseline.days],
            "intervals": intervals,
            "delivered_kw": _num(m.delivered_kwh / m.measured_h) if m.measured_h > 0 else None,
            "delivered_kwh": _num(m.delivered_kwh), "declared_kwh": _num(m.declared_kwh),
            "response_ratio": _num(ratio, 4), "projected_ratio": _num(m.projected_ratio, 4),
            "alarm": m.alarm, "alarm_ratio": self.cfg.alarm_ratio, "band": m.band,
            "payable_ratio": _num(m.payable_ratio, 4), "missing_intervals": m.missing,
            "result": result, "final": final,
        }

"""Scenarios: a simulated stretch of a site's life, described in YAML (hil/scenarios/*.yaml).

A scenario says when it starts and how long it runs, what the PV and the building really do
(one value per step, inline or from a CSV next to the scenario, scaled so one profile fits
several sites), which tariff and limits apply (overriding the site config), and what
happens on the way (a device falling silent, a grid-operator DR event, a price spike).

`load(path)` validates the file and every series it points to and returns a `Scenario`;
errors name the field (`series.pv_kw.column: ...`) and the fix. `Scenario.apply(config)`
gives the site config the run uses, and `Scenario.truth(config)` the `Truth`: the series
and prices the HIL physics, the perfect forecast and the reference costs all read, so the
controller and its references see one world.

The keys (hil/scenarios/*.yaml use them all):

    name, description
    start: 2026-07-01T00:00:00+08:00   # on a quarter hour, with its UTC offset
    step_s: 900                        # one value per step; divides 900 or a multiple of it
    duration_h: 24                     # whole quarter hours and whole steps
    history_days: 7                    # series before `start` -> the site history (forecasts)
    series:                            # per step, kW, piecewise constant over the step
      pv_kw:   {csv: data/x.csv, column: pv_kw_per_kwp, scale: 120}   # available PV
      load_kw: [30, 31, ...]           # or inline; {values: [...], scale: 2} scales too
    tariff: {periods: [...], export_price: 0.39, demand_charge_per_kw: 1.33, currency: CNY}
    limits: {import_limit_kw: 80, export_limit_kw: null}   # null removes the site's limit
    initial_soc_pct: 30                # every battery
    terminal_value_per_kwh: 0.30       # worth of energy left at the end (default: min price)
    events:
      - {type: device_offline, device: load, at: "14:00", duration_min: 15}
      - {type: dr_event, id: dr-1, at: "17:00", duration_min: 60, grid_max_kw: 40,
         notice_min: 120}              # or grid_min_kw / grid_target_kw
      - {type: price_spike, at: "19:00", duration_min: 30, import_price: 3.0}

A CSV may carry a `time` column (ISO with offset): it must then start at start −
history_days and advance by step_s. The series the PV inverters share (by rating) is the
available power, capped by each inverter's rating; the load is shared by the load meters
(by `sim.day_kw`) or drawn behind the PCC meter when the site has none.
"""


from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import ValidationError

from drivers.fileerrors import or_shipped, read_yaml, validation_problems
from edge.config import HINTS, Config, DeviceConfig, config_problems
from hil.config import problems as sim_problems
from hil.config import sim_of
from hil.devices import simulator_for
from hil.scenario.spec import (
    BILLING_S,
    DeviceOffline,
    DrEvent,
    GridOutage,
    PriceSpike,
    ScenarioError,
    ScenarioFile,
    SeriesSpec,
)
from hil.scenario.truth import Truth, Window


@dataclass(frozen=True)
class Scenario:
    path: Path
    spec: ScenarioFile
    pv_kw: np.ndarray  # the whole scenario from `start`, per step (a truncated run keeps it)
    load_kw: np.ndarray
    history_pv_kw: np.ndarray  # the `history_days` before the start, per step
    history_load_kw: np.ndarray
    windows: tuple[Window, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def start(self) -> datetime:
        return self.spec.start

    @property
    def step_s(self) -> int:
        return self.spec.step_s

    @property
    def duration_s(self) -> float:
        return self.spec.duration_h * 3600

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)

    def truncated(self, hours: float) -> Scenario:
        """A run over the first `hours` (whole quarter hours) of the scenario, for short
        runs. The world stays the whole scenario: a planner looking past the end of the
        short run sees the rest of the scenario, not its start again."""
        quarters = max(1, min(int(round(hours * 4)), int(self.duration_s // BILLING_S)))
        spec = self.spec.model_copy(update={"duration_h": quarters / 4})
        end = self.start + timedelta(seconds=quarters * BILLING_S)
        return Scenario(self.path, spec, self.pv_kw, self.load_kw, self.history_pv_kw,
                        self.history_load_kw, tuple(w for w in self.windows if w.start < end))

    def apply(self, config: Config, *, planner: bool | None = None,
              storage_dir: Path | None = None) -> Config:
        """The site config of the run: start, tariff, limits, SoC and event devices
        checked against the site. Raises ScenarioError naming the field."""
        problems = []
        ids = {d.id for d in config.devices}
        for w in self.windows:
            if isinstance(w.event, DeviceOffline) and w.event.device not in ids:
                problems.append(f"events[{w.index}].device: no device {w.event.device!r} in "
                                f"the site config; known: {', '.join(sorted(ids))}")
            if isinstance(w.event, GridOutage) and not any(d.role == "breaker"
                                                           for d in config.devices):
                problems.append(f"events[{w.index}]: a grid_outage needs a site with a PCC "
                                "breaker (role: breaker), e.g. configs/microgrid.yaml")
        if problems:
            raise ScenarioError(str(self.path), problems)
        data = config.model_dump()
        data["hil"]["start"] = self.start
        s = self.spec
        if s.tariff is not None:
            data["tariff"].update(s.tariff.model_dump(exclude_unset=True))
        if s.limits is not None:
            data["control"].update(s.limits.model_dump(exclude_unset=True))
        for dev, d in zip(config.devices, data["devices"], strict=True):
            if _stores(dev) and s.initial_soc_pct is not None:
                d["sim"]["initial_soc_pct"] = s.initial_soc_pct
        if planner is not None:
            data["planner"]["enabled"] = planner
        if storage_dir is not None:
            data["storage"]["dir"] = storage_dir
        try:
            applied = Config.model_validate(data)
        except ValidationError as exc:
            problems = config_problems(exc)
        else:
            if not (problems := sim_problems(applied)):
                return applied
        raise ScenarioError(str(self.path), [
            f"{p} (after applying the scenario to the site config)" for p in problems])

    def truth(self, config: Config) -> Truth:
        """The world of the run, for a config returned by `apply`."""
        spikes = [w for w in self.windows if isinstance(w.event, PriceSpike)]
        return Truth(self.start.astimezone(ZoneInfo("UTC")), self.step_s, self.pv_kw,
                     self.load_kw, config.tariff, ZoneInfo(config.site.timezone), spikes)

    def dr_windows(self) -> list[Window]:
        return [w for w in self.windows if isinstance(w.event, DrEvent)]

    def initial_soc(self, config: Config) -> dict[str, float]:
        return {d.id: sim_of(d).initial_soc_pct for d in config.devices if _stores(d)}


def _stores(cfg: DeviceConfig) -> bool:
    """The device is an energy store (its simulator books on the battery account): the
    scenario's initial state of charge is its."""
    return simulator_for(cfg).account == "battery"


# -- loading ----------------------------------------------------------------------------------
_SHIPPED = Path(__file__).resolve().parent.parent / "scenarios"
_EVENT_TYPES = ("device_offline", "dr_event", "price_spike")
_HINTS = {
    **HINTS,
    "union_tag_invalid": f"type must be one of: {', '.join(_EVENT_TYPES)}",
    "union_tag_not_found": f"type must be one of: {', '.join(_EVENT_TYPES)}",
    "extra_forbidden": "is not a scenario key (check the spelling; hil/scenarios/*.yaml show "
                       "them all)",
}


def _read_csv(path: Path, field: str) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ScenarioError(str(path), [f"{field}: cannot read {path}: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ScenarioError(str(path), [f"{field}: {path.name} is not UTF-8 text"]) from None
    if not rows:
        raise ScenarioError(str(path), [f"{field}: {path.name} is empty"])
    return [h.strip() for h in rows[0]], rows[1:]


def _series(spec: SeriesSpec, field: str, base: Path, first: datetime, step_s: int,
            n: int) -> tuple[np.ndarray | None, list[str]]:
    """`n` values from `first`; (None, problems) when they cannot be had."""
    if spec.values is not None:
        values = np.asarray(spec.values, dtype=float)
        where = f"{field}.values"
    else:
        path = (base / spec.csv).resolve()
        where = f"{field}.column"
        if not path.is_file():
            return None, [f"{field}.csv: no file {path} (paths are relative to the scenario)"]
        header, rows = _read_csv(path, f"{field}.csv")
        if spec.column not in header:
            return None, [f"{where}: {path.name} has no column {spec.column!r}; it has "
                          f"{', '.join(header)}"]
        col = header.index(spec.column)
        if "time" in header:  # then it must line up with the scenario's steps
            ti = header.index("time")
            try:
                t0 = datetime.fromisoformat(rows[0][ti])
                t1 = datetime.fromisoformat(rows[1][ti]) if len(rows) > 1 else None
            except (ValueError, IndexError):
                return None, [f"{field}.csv: {path.name} row 2: time is not an ISO time"]
            if t0.tzinfo is None or t0 != first:
                return None, [f"{field}.csv: {path.name} starts at {rows[0][ti]}, the scenario "
                              f"needs {first.isoformat()} (start minus history_days)"]
            if t1 is not None and (t1 - t0).total_seconds() != step_s:
                return None, [f"{field}.csv: {path.name} has a step of "
                              f"{(t1 - t0).total_seconds():g} s; step_s is {step_s}"]
        try:
            values = np.array([float(r[col]) for r in rows if r], dtype=float)
        except (ValueError, IndexError):
            bad = next(i for i, r in enumerate(rows) if not _is_float(r, col))
            return None, [f"{where}: {path.name} row {bad + 2}: not a number"]
    problems = []
    if len(values) < n:
        problems.append(f"{where}: {len(values)} values, the scenario needs {n} (history_days "
                        f"and duration_h at step_s {step_s})")
    elif not np.all(np.isfinite(values[:n])) or np.any(values[:n] < 0):
        bad = int(np.flatnonzero(~np.isfinite(values[:n]) | (values[:n] < 0))[0])
        problems.append(f"{where}: value {bad} is {values[bad]}; series must be finite and >= 0")
    return (None if problems else values[:n] * spec.scale), problems


def _is_float(row: list[str], col: int) -> bool:
    try:
        float(row[col])
        return True
    except (ValueError, IndexError):
        return False


def _windows(spec: ScenarioFile) -> tuple[list[Window], list[str]]:
    out, problems = [], []
    end = spec.start + timedelta(hours=spec.duration_h)
    for i, e in enumerate(spec.events):
        if len(e.at) <= 5:
            t = datetime.combine(spec.start.date(), time.fromisoformat(e.at), spec.start.tzinfo)
            if t < spec.start:
                t += timedelta(days=1)
        else:
            t = datetime.fromisoformat(e.at)
        if not spec.start <= t < end:
            problems.append(f"events[{i}].at: {t.isoformat()} is outside the run "
                            f"({spec.start.isoformat()} + {spec.duration_h:g} h)")
            continue
        out.append(Window(t, t + timedelta(minutes=e.duration_min), e, i))
    return out, problems


def parse(data: object, source: str, base: Path) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(source, ["(top level): must be a mapping with name, start, "
                                     "duration_h, series"])
    try:
        spec = ScenarioFile.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, validation_problems(exc, _HINTS, tags=_EVENT_TYPES)) from None
    n_hist = spec.history_days * 86400 // spec.step_s
    n = int(round(spec.duration_h * 3600 / spec.step_s))
    first = spec.start - timedelta(days=spec.history_days)
    pv, p1 = _series(spec.series.pv_kw, "series.pv_kw", base, first, spec.step_s, n_hist + n)
    load, p2 = _series(spec.series.load_kw, "series.load_kw", base, first, spec.step_s,
                       n_hist + n)
    windows, p3 = _windows(spec)
    if p1 or p2 or p3:
        raise ScenarioError(source, p1 + p2 + p3)
    return Scenario(Path(source), spec, pv[n_hist:], load[n_hist:], pv[:n_hist], load[:n_hist],
                    tuple(windows))


def load(path: str | Path) -> Scenario:
    """A scenario file, or a shipped scenario by name (`summer_weekday_tou`) from anywhere."""
    p = or_shipped(path, _SHIPPED)
    data = read_yaml(p, ScenarioError)
    return parse(data, str(p), p.resolve().parent)


def shipped() -> list[Path]:
    """The scenarios shipped with the project."""
    return sorted(_SHIPPED.glob("*.yaml"))


__all__ = ["BILLING_S", "GridOutage", "Scenario", "ScenarioError", "Truth", "Window", "load",
           "parse", "shipped"]

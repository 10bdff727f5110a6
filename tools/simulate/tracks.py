"""What a run records beside the HIL ledger: limit and DR excursions, 15-min means, the
plans the daemon adopted and the forecasts it was given."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from edge.config import Config
from edge.report.history import INTERVAL_S
from hil.scenario import Truth, Window
from hil.site import Sample

VIOLATION_TOL_KW = 0.1  # an excursion smaller than this is metering noise


@dataclass
class Excess:
    """Excursions beyond a bound: episodes, seconds, the worst kW and the energy beyond."""

    count: int = 0
    seconds: float = 0.0
    worst_kw: float = 0.0
    kwh: float = 0.0
    _on: bool = field(default=False, repr=False)

    def add(self, excess_kw: float, dt_s: float) -> None:
        if excess_kw > VIOLATION_TOL_KW:
            self.count += 0 if self._on else 1
            self._on = True
            self.seconds += dt_s
            self.kwh += excess_kw * dt_s / 3600
            self.worst_kw = max(self.worst_kw, excess_kw)
        else:
            self._on = False

    def as_dict(self) -> dict:
        return {"count": self.count, "seconds": self.seconds, "worst_kw": self.worst_kw,
                "kwh": self.kwh}


class Recorder:
    """Sees every physics sub-step of the HIL: limit and DR excursions at 1 s resolution,
    the SoC range, and per-15-min means for plan-vs-actual. With `ev` (an EV ledger,
    tools/simulate/evkpis.py) and `chargers` ([(charger config, its connectors)]) it
    follows the car park too."""

    def __init__(self, config: Config, start: datetime, duration_s: float,
                 dr: list[Window]) -> None:
        c = config.control
        self.import_limit = math.inf if c.import_limit_kw is None else c.import_limit_kw
        self.export_limit = math.inf if c.export_limit_kw is None else c.export_limit_kw
        self.t0 = start.timestamp()
        self.dr = [(w.start.timestamp() - self.t0, w.end.timestamp() - self.t0, w.event)
                   for w in dr]
        n = math.ceil(duration_s / INTERVAL_S)
        self.sums = {k: np.zeros(n) for k in ("grid", "bess", "pv", "pv_available", "load")}
        self.soc_end = np.full(n, np.nan)
        self.imports, self.exports, self.dr_excess = Excess(), Excess(), Excess()
        self.soc_min = math.inf
        self.soc_max = -math.inf
        self.ev = None
        self.chargers: list = []
        self.comfort = None  # tools/simulate/thermal.py Comfort, on a site with HVAC
        self.zones = None  # () -> {hvac id: zone °C}

    def __call__(self, s: Sample, dt_s: float) -> None:
        t = s.t.timestamp() - self.t0 - dt_s  # start of the sub-step
        k = int(t // INTERVAL_S)
        if not 0 <= k < len(self.soc_end):
            return
        for key, v in (("grid", s.grid_kw), ("bess", s.bess_kw), ("pv", s.pv_kw),
                       ("pv_available", s.pv_available_kw), ("load", s.load_kw)):
            self.sums[key][k] += v * dt_s
        if s.soc_pct is not None:
            self.soc_end[k] = s.soc_pct
            self.soc_min = min(self.soc_min, s.soc_pct)
            self.soc_max = max(self.soc_max, s.soc_pct)
        self.imports.add(s.grid_kw - self.import_limit, dt_s)
        if self.ev is not None:
            self.ev.see(s.t - timedelta(seconds=dt_s), dt_s, self.chargers)
        if self.comfort is not None:
            self.comfort.see(s.t - timedelta(seconds=dt_s), dt_s, self.zones())
        self.exports.add(-s.grid_kw - self.export_limit, dt_s)
        worst = 0.0
        for a, b, e in self.dr:
            if a <= t < b:
                if e.grid_max_kw is not None:
                    worst = max(worst, s.grid_kw - e.grid_max_kw)
                if e.grid_min_kw is not None:
                    worst = max(worst, e.grid_min_kw - s.grid_kw)
        self.dr_excess.add(worst, dt_s)

    def means(self) -> dict[str, np.ndarray]:
        return {k: v / INTERVAL_S for k, v in self.sums.items()}


@dataclass
class PlanTrack:
    """Every plan the daemon adopted, in order (seen by polling `planner.last`)."""

    plans: list = field(default_factory=list)

    def see(self, plan) -> None:
        if plan is not None and (not self.plans or plan is not self.plans[-1]):
            self.plans.append(plan)

    def in_force(self, start: datetime, n: int, step_s: int) -> dict[str, np.ndarray]:
        """Per step: what the latest plan made before the step began said for it."""
        out = {k: np.full(n, np.nan) for k in ("grid", "bess", "soc")}
        made = [(p.start + timedelta(seconds=(p.step_s - (p.first_step_s or p.step_s))), p)
                for p in self.plans]
        for i in range(n):
            t = start + timedelta(seconds=i * step_s)
            mid = t + timedelta(seconds=step_s / 2)
            cands = [p for at, p in made if at <= t + timedelta(seconds=1)]
            if not cands:
                continue
            p = cands[-1]
            k = p.step_at(mid)
            if k is not None:
                out["grid"][i], out["bess"][i] = p.grid_kw[k], p.bess_kw[k]
                out["soc"][i] = p.soc_pct[k + 1]
        return out


class ForecastLog:
    """Wraps the planner's forecast callable and keeps every forecast issued, to score it
    against the true series afterwards."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.issued: list[tuple[datetime, int, np.ndarray, np.ndarray]] = []

    def __call__(self, start: datetime, n: int, step_s: int):
        load, pv = self.inner(start, n, step_s)
        self.issued.append((start, step_s, np.asarray(load, float), np.asarray(pv, float)))
        return load, pv

    def errors(self, truth: Truth, end: datetime) -> dict:
        """MAE over every (forecast, step) pair inside the run, as the forecaster's own
        tracker counts; nMAE on the mean load and on the PV peak of the run."""
        err = {"load": [], "pv": []}
        for start, step_s, load, pv in self.issued:
            n = min(len(load), int((end - start).total_seconds() // step_s))
            if n <= 0:
                continue
            t_load, t_pv = truth.averages(start, n, step_s)
            err["load"].append(np.abs(load[:n] - t_load))
            err["pv"].append(np.abs(pv[:n] - t_pv))
        scale = {"load": float(np.mean(truth.load_kw)), "pv": float(np.max(truth.pv_kw))}
        out: dict = {"forecasts": len(self.issued)}
        for k, parts in err.items():
            if not parts:
                out[k] = {"mae_kw": None, "nmae": None}
                continue
            mae = float(np.mean(np.concatenate(parts)))
            out[k] = {"mae_kw": mae, "nmae": mae / scale[k] if scale[k] > 0 else None}
        return out



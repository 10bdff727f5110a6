"""What the planner reports about its rounds and plans, in types the control process can
hold without the solver: the worker (edge/plan/worker.py) sends these, never a `Plan`, so
the control process never imports HiGHS, scipy or pandas."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np


@dataclass
class PlannerStats:
    solves: int = 0  # plans adopted
    warm_solves: int = 0  # of which solved from the previous round's basis (warm.py)
    failures: int = 0  # rounds that fell back
    last_at: datetime | None = None  # (simulated) time of the last round
    last_trigger: str = ""  # "schedule" or the event that asked for it
    last_status: str = ""  # the last round's outcome: optimal, time_limit, fallback, rule-based
    last_reason: str = ""  # why the last round fell back, or what its plan could not meet
    last_solve_s: float = math.nan
    last_build_s: float = math.nan
    rounds: deque = field(default_factory=lambda: deque(maxlen=100))  # (at, trigger, status)
    # The last plan's energy demands (EV sessions): kWh over the horizon, of which in the
    # valley (the cheapest tariff period), and the kWh each device falls short.
    demand_kwh: float = 0.0
    demand_valley_kwh: float = 0.0
    demand_short_kwh: dict[str, float] = field(default_factory=dict)
    # Per HVAC zone, the model the plans use (edge/plan/learn.py ZoneModelStatus.as_dict).
    zones: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class PlanSummary:
    """The parts of a `Plan` (edge/plan/result.py) the control process reads: flex
    (edge/vpp/flex.py) and whoever watches the plan in force."""

    start: datetime
    step_s: int
    grid_kw: np.ndarray
    bess_kw: np.ndarray
    soc_pct: np.ndarray
    pv_kw: np.ndarray
    status: str = "optimal"
    reason: str = ""
    objective: float = math.nan
    peak_kw: float = 0.0
    demand_kw: dict[str, np.ndarray] = field(default_factory=dict)  # (n,) per EV charger
    first_step_s: float | None = None

    @classmethod
    def of(cls, plan) -> PlanSummary:
        return cls(plan.start, plan.step_s, plan.grid_kw, plan.bess_kw, plan.soc_pct,
                   plan.pv_kw, plan.status, plan.reason, plan.objective, plan.peak_kw,
                   dict(plan.demand_kw), plan.first_step_s)

    @property
    def n(self) -> int:
        return len(self.grid_kw)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.n * self.step_s)

"""The `plan` report: an adopted plan as the platform and the operator read it, built where
the plan is made (the planner worker, or the daemon with an in-process planner) and sent
once per adoption. It carries what the plan was made from (the PV and load forecasts, the
prices) next to what it decided, step by step, so a plan can be judged without the site."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from edge.plan.inputs import PlanInput
from edge.plan.result import Plan

_EV_MIN_KW = 1e-3  # below this a charger is not planned to charge in that step


def plan_id(made_at: datetime) -> str:
    """When the plan was made (UTC, to the millisecond): unique per site, sortable."""
    t = made_at.astimezone(UTC)
    return t.strftime("%Y%m%dT%H%M%S.") + f"{t.microsecond // 1000:03d}Z"


def build(plan: Plan, inp: PlanInput, made_at: datetime, now: datetime, trigger: str,
          currency: str, zone_models: list[dict] = ()) -> dict:
    """The message without its msg_id (the outbox adds it). `zone_models`: the model each
    HVAC zone was planned with (edge/plan/learn.py)."""
    steps = []
    for k in range(plan.n):
        ev = {dev: _r(kw[k]) for dev, kw in plan.demand_kw.items() if kw[k] >= _EV_MIN_KW}
        steps.append({
            "start": _iso(plan.start + timedelta(seconds=k * plan.step_s)),
            "grid_kw": _r(plan.grid_kw[k]),
            "bess_kw": _r(plan.bess_kw[k]),
            "soc_pct": _opt(plan.soc_pct[k + 1]),
            "import_price": _r(inp.import_price[k], 4),
            "export_price": _r(inp.export_price[k], 4),
            "pv_kw": _r(max(float(inp.pv_kw[k]), 0.0)),
            "pv_used_kw": _r(max(float(plan.pv_kw[k]), 0.0)),
            "load_kw": _r(inp.load_kw[k]),
            "ev_kw": ev,
        })
    return {
        "ts": _iso(now),
        "plan_id": plan_id(made_at),
        "made_at": _iso(made_at),
        "status": plan.status,
        "trigger": trigger,
        "reason": plan.reason,
        "currency": currency,
        "objective": _r(plan.objective, 2),
        "energy_cost": _r(plan.energy_cost, 2),
        "demand_charge": _r(plan.demand_charge, 2),
        "peak_kw": _r(plan.peak_kw),
        "ev_short_kwh": {d: _r(v) for d, v in plan.demand_short_kwh.items() if v > 1e-3},
        "start": _iso(plan.start),
        "step_s": plan.step_s,
        "soc_start_pct": _opt(plan.soc_pct[0]) if len(plan.soc_pct) else None,
        "zone_models": [dict(z) for z in zone_models],
        "steps": steps,
    }


def _r(x, digits: int = 3) -> float:
    return round(float(x), digits) + 0.0  # + 0.0: no -0.0 on the wire


def _opt(x) -> float | None:
    """SoC: None without a battery (the plan holds NaN then)."""
    return _r(x, 2) if math.isfinite(float(x)) else None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

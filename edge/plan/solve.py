"""Solve the planning LP with HiGHS (highspy) and map the solution to a `Plan`.

A DR or dispatch commitment the site cannot fully meet is not a failure: the plan meets
as much of it as it can and its `reason` says by how many kWh it falls short, where (see
model.py). No usable solution raises `PlanInfeasible` with a reason a person can act on: the
configured limits cannot hold (an elastic re-solve with them softened names the steps and
by how much), bad input, or a time limit without a feasible solution. A time limit that
leaves a feasible solution returns it with status "time_limit".
"""

from __future__ import annotations

import logging
import time

import highspy
import numpy as np

from edge.plan.model import Lp, PlanInput, build
from edge.plan.result import Plan, infeasibility_reason, to_plan

__all__ = ["Plan", "PlanInfeasible", "solve"]

log = logging.getLogger(__name__)

_FEASIBLE = 2  # HiGHS SolutionStatus kSolutionStatusFeasible


class PlanInfeasible(Exception):
    """No plan could be made; `reason` says why (logged by the planner with its fallback)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _highs(lp: Lp, time_limit_s: float) -> highspy.Highs:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    # 0.1 %: far inside what forecasts can promise, and 40x faster than HiGHS's 0.01 %
    # default on the 48 h @ 5 min MILP (direction binaries in every valley step).
    h.setOptionValue("mip_rel_gap", 1e-3)
    model = highspy.HighsLp()
    model.num_col_ = len(lp.cost)
    model.num_row_ = len(lp.row_lo)
    model.col_cost_ = lp.cost
    model.col_lower_ = lp.col_lo
    model.col_upper_ = lp.col_hi
    model.row_lower_ = lp.row_lo
    model.row_upper_ = lp.row_hi
    a = lp.a
    model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    model.a_matrix_.start_ = a.indptr
    model.a_matrix_.index_ = a.indices
    model.a_matrix_.value_ = a.data
    if len(lp.integer):
        kinds = [highspy.HighsVarType.kContinuous] * len(lp.cost)
        for j in lp.integer:
            kinds[j] = highspy.HighsVarType.kInteger
        model.integrality_ = kinds
    h.passModel(model)
    return h


def _run(lp: Lp, time_limit_s: float) -> tuple[str, np.ndarray | None, float]:
    h = _highs(lp, time_limit_s)
    t0 = time.perf_counter()
    h.run()
    took = time.perf_counter() - t0
    status = h.getModelStatus()
    has_x = h.getInfo().primal_solution_status == _FEASIBLE
    x = np.asarray(h.getSolution().col_value) if has_x else None
    if status == highspy.HighsModelStatus.kOptimal:
        return "optimal", x, took
    if status == highspy.HighsModelStatus.kTimeLimit:
        return "time_limit", x, took
    if status in (highspy.HighsModelStatus.kInfeasible,
                  highspy.HighsModelStatus.kUnboundedOrInfeasible):
        return "infeasible", None, took
    return h.modelStatusToString(status), None, took


def solve(inp: PlanInput, time_limit_s: float = 10.0) -> Plan:
    """The cheapest schedule for `inp` within `time_limit_s` of solver time."""
    t0 = time.perf_counter()
    lp = build(inp)
    build_s = time.perf_counter() - t0
    status, x, took = _run(lp, time_limit_s)
    if x is not None and status in ("optimal", "time_limit"):
        return to_plan(inp, lp, x, status, took, build_s)
    if status == "time_limit":
        raise PlanInfeasible(f"time limit {time_limit_s:g} s reached without a feasible plan")
    if status != "infeasible":
        raise PlanInfeasible(f"solver ended with status {status!r}")
    elastic = build(inp, elastic=True)
    e_status, ex, _ = _run(elastic, max(time_limit_s - took, 1.0))
    detail = (infeasibility_reason(inp, elastic, ex) if ex is not None
              else "no schedule satisfies the SoC and grid bounds")
    raise PlanInfeasible(f"infeasible: {detail}")

"""Solve the planning LP with HiGHS (highspy) and map the solution to a `Plan`.

A DR or dispatch commitment the site cannot fully meet is not a failure: the plan meets
as much of it as it can and its `reason` says by how many kWh it falls short, where (see
model.py). No usable solution raises `PlanInfeasible` with a reason a person can act on: the
configured limits cannot hold (an elastic re-solve with them softened names the steps and
by how much), bad input, or a time limit without a feasible solution. A time limit that
leaves a feasible solution returns it with status "time_limit".

A plan with direction binaries (model.py) is solved in up to three steps, cheapest first:
the LP relaxation (when its directions come out whole it is the optimum, exactly); the
relaxation's directions rounded and fixed, an LP again, which gives a plan and, against the
relaxation's bound, a proven gap - kept when within `MIP_GAP`; only otherwise the MILP,
started from that plan, which it keeps if the time limit ends the search. The rounded plan's
LP re-runs the relaxation's HiGHS from its basis; the planner's re-plans start the
relaxation (or the LP) from the previous round's basis, shifted (warm.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import highspy
import numpy as np

from edge.plan.model import Lp, PlanInput, build
from edge.plan.result import Plan, infeasibility_reason, to_plan
from edge.plan.warm import WarmStart

__all__ = ["Plan", "PlanInfeasible", "solve"]

log = logging.getLogger(__name__)

_FEASIBLE = 2  # HiGHS SolutionStatus kSolutionStatusFeasible
# A plan proven within 0.5 % of the optimum is kept: forecast errors cost more than that
# (bench_scenarios.py: own forecasts 0.3-7.6 % above the perfect-forecast optimum), and the
# 48 h @ 5 min MILP then needs no branch and bound (its rounded plan is 0.3 % from the
# relaxation's bound, 0.03 % from the optimum).
MIP_GAP = 5e-3
_INT_TOL = 1e-6


class PlanInfeasible(Exception):
    """No plan could be made; `reason` says why (logged by the planner with its fallback)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _highs(lp: Lp, time_limit_s: float) -> highspy.Highs:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", MIP_GAP)
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


def _run(lp: Lp, time_limit_s: float,
         start: np.ndarray | None = None) -> tuple[str, np.ndarray | None, float]:
    return _run_h(lp, time_limit_s, start)[:3]


def _run_h(lp: Lp, time_limit_s: float, start: np.ndarray | None = None,
           basis: highspy.HighsBasis | None = None, h: highspy.Highs | None = None,
           ) -> tuple[str, np.ndarray | None, float, highspy.Highs]:
    """Solve `lp` and return the Highs too; `h` (holding `lp` already, with its last basis)
    is re-run, `basis` starts the simplex where HiGHS accepts it (a refused one is marked
    invalid and the solve starts cold)."""
    if h is None:
        h = _highs(lp, time_limit_s)
    else:
        h.setOptionValue("time_limit", float(time_limit_s))
    if start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = start
        sol.value_valid = True
        h.setSolution(sol)
    if basis is not None and h.setBasis(basis) != highspy.HighsStatus.kOk:
        log.debug("HiGHS refused the warm-start basis: solving cold")
        basis.valid = False
        h.clearSolver()
    t0 = time.perf_counter()
    h.run()
    took = time.perf_counter() - t0
    status = h.getModelStatus()
    has_x = h.getInfo().primal_solution_status == _FEASIBLE
    x = np.asarray(h.getSolution().col_value) if has_x else None
    if status == highspy.HighsModelStatus.kOptimal:
        return "optimal", x, took, h
    if status == highspy.HighsModelStatus.kTimeLimit:
        return "time_limit", x, took, h
    if status in (highspy.HighsModelStatus.kInfeasible,
                  highspy.HighsModelStatus.kUnboundedOrInfeasible):
        return "infeasible", None, took, h
    return h.modelStatusToString(status), None, took, h


def _fixed(lp: Lp, d: np.ndarray | None) -> Lp:
    """`lp` without integrality: the direction binaries relaxed, or fixed to `d`."""
    lo, hi = lp.col_lo.copy(), lp.col_hi.copy()
    if d is not None:
        lo[lp.integer] = hi[lp.integer] = d
    return replace(lp, col_lo=lo, col_hi=hi, integer=np.zeros(0, dtype=int))


def _run_mip(lp: Lp, time_limit_s: float, basis: highspy.HighsBasis | None = None,
             keep=None) -> tuple[str, np.ndarray | None, float]:
    """Relaxation, rounding, MILP - each only when the one before cannot prove the plan
    good enough (see the module docstring). The rounded plan's LP re-runs the relaxation's
    HiGHS with the binaries fixed, starting from the relaxation's basis (a few hundred
    simplex iterations instead of a solve from scratch). `keep(relaxed, h)` sees the
    relaxation once it is optimal."""
    relaxed = _fixed(lp, None)
    status, xr, took, h = _run_h(relaxed, time_limit_s, basis=basis)
    if xr is None or status != "optimal":
        return status, xr if status == "time_limit" else None, took
    if keep is not None:
        keep(relaxed, h)
    d = xr[lp.integer]
    if np.all(np.minimum(d, 1.0 - d) <= _INT_TOL):
        x = xr.copy()
        x[lp.integer] = np.round(d)
        return "optimal", x, took
    bound = float(lp.cost @ xr)
    imp, exp = xr[lp.cols["imp"]][lp.dir_steps], xr[lp.cols["exp"]][lp.dir_steps]
    d = (imp >= exp).astype(float)
    h.changeColsBounds(len(d), lp.integer.astype(np.int32), d, d)
    s2, xf, t2, _ = _run_h(lp, max(time_limit_s - took, 1e-3), h=h)
    took += t2
    if xf is not None and s2 == "optimal":
        best = float(lp.cost @ xf)
        if best - bound <= MIP_GAP * max(abs(best), 1e-9):
            return "optimal", xf, took
    s3, xm, t3 = _run(lp, max(time_limit_s - took, 1e-3), start=xf)
    took += t3
    if xm is None and xf is not None and s2 == "optimal":
        return "time_limit", xf, took
    return s3, xm, took


def solve(inp: PlanInput, time_limit_s: float = 10.0, warm: WarmStart | None = None) -> Plan:
    """The cheapest schedule for `inp` within `time_limit_s` of solver time. With `warm`
    (the planner's, kept between rounds) the LP starts from the previous round's basis
    where it maps (warm.py), and keeps this round's for the next."""
    t0 = time.perf_counter()
    lp = build(inp)
    basis = warm.basis(inp, lp) if warm is not None else None
    build_s = time.perf_counter() - t0

    def keep(solved: Lp, h: highspy.Highs) -> None:
        if warm is not None:
            warm.keep(inp, solved, h)

    if len(lp.integer):
        status, x, took = _run_mip(lp, time_limit_s, basis, keep)
    else:
        status, x, took, h = _run_h(lp, time_limit_s, basis=basis)
        if status == "optimal":
            keep(lp, h)
    if basis is not None and not basis.valid:
        warm.used, warm.why = False, "HiGHS refused the mapped basis"
    if x is not None and status in ("optimal", "time_limit"):
        return to_plan(inp, lp, x, status, took, build_s)
    if warm is not None:
        warm.forget()
    if status == "time_limit":
        raise PlanInfeasible(f"time limit {time_limit_s:g} s reached without a feasible plan")
    if status != "infeasible":
        raise PlanInfeasible(f"solver ended with status {status!r}")
    elastic = build(inp, elastic=True)
    e_status, ex, _ = _run(elastic, max(time_limit_s - took, 1.0))
    detail = (infeasibility_reason(inp, elastic, ex) if ex is not None
              else "no schedule satisfies the SoC and grid bounds")
    raise PlanInfeasible(f"infeasible: {detail}")

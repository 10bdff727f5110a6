"""The direction binaries solved the fast way (solve.py: relaxation, rounding, MILP) against
the same MILP solved to proven optimality by HiGHS alone, and the tightening rows of
model.py against the MILP without them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import highspy
import numpy as np
import pytest

from edge.plan.model import Lp, PlanBattery, PlanInput, build
from edge.plan.solve import MIP_GAP, _highs, _run, solve

T0 = datetime(2026, 6, 22, tzinfo=UTC)


def exact(lp: Lp) -> float:
    """The MILP's optimum, proven (no gap allowed)."""
    h = _highs(lp, 120.0)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 1e-9)
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return h.getInfo().objective_function_value


def random_day(seed: int, n: int = 24) -> PlanInput:
    """A day of hourly steps where export pays more than import in the night valley, with
    load, PV and one or two batteries drawn at random."""
    rng = np.random.default_rng(seed)
    hour = np.arange(n)
    price = np.where((hour < 7) | (hour >= 23), 0.31, np.where(hour >= 18, 1.2, 0.7))
    pv = np.clip(60 * np.sin((hour - 6) / 12 * np.pi), 0, None) * rng.uniform(0.3, 1.0, n)
    load = rng.uniform(10, 40, n)
    bats = tuple(PlanBattery(f"b{i}", rng.uniform(50, 200), rng.uniform(10, 90), 10.0, 95.0,
                             rng.uniform(20, 80), rng.uniform(20, 80), 0.95, 0.95)
                 for i in range(1 + seed % 2))
    return PlanInput(T0, 3600, load, pv, price, np.full(n, 0.39), bats,
                     import_limit_kw=200.0, export_limit_kw=rng.uniform(5, 100),
                     demand_charge_per_kw=float(rng.choice([0.0, 40.0])))


@pytest.mark.parametrize("seed", range(12))
def test_fast_solve_is_within_its_gap_of_the_proven_milp_optimum(seed: int) -> None:
    inp = random_day(seed)
    lp = build(inp)
    assert len(lp.integer)  # the valley steps carry direction binaries
    best = exact(lp)
    plan = solve(inp)
    assert plan.status == "optimal"
    # The plan's full objective (penalties and tie-breaks included), from its schedule.
    got = _objective_of(plan, lp, inp)
    assert best - 1e-6 <= got <= best + MIP_GAP * abs(best) + 1e-6, (got, best)
    # Never importing and exporting in one step: the plan's grid is one number per step,
    # and its energy cost is that number priced by direction.
    dt = inp.dt_h
    g = plan.grid_kw
    bill = float(np.sum(dt * (inp.import_price * g.clip(min=0)
                              - inp.export_price * (-g).clip(min=0))))
    assert plan.energy_cost == pytest.approx(bill, rel=1e-7, abs=1e-7)


def _objective_of(plan, lp: Lp, inp: PlanInput) -> float:
    """The MILP objective of the schedule `plan` describes: the LP with each step's grid
    direction and the batteries' power fixed to the plan's, solved for the rest."""
    lo, hi = lp.col_lo.copy(), lp.col_hi.copy()
    g = plan.grid_kw
    imp = np.arange(lp.cols["imp"].start, lp.cols["imp"].stop)
    exp = np.arange(lp.cols["exp"].start, lp.cols["exp"].stop)
    lo[imp] = hi[imp] = g.clip(min=0)
    lo[exp] = hi[exp] = (-g).clip(min=0)
    d = (g[lp.dir_steps] >= 0).astype(float)
    lo[lp.integer] = hi[lp.integer] = d
    n = inp.n
    ch = np.arange(lp.cols["ch"].start, lp.cols["ch"].stop)
    dis = np.arange(lp.cols["dis"].start, lp.cols["dis"].stop)
    for k, b in enumerate(inp.batteries):
        net = plan.bess_kw_by_id[b.id]
        sl = slice(k * n, (k + 1) * n)
        lo[ch[sl]] = hi[ch[sl]] = (-net).clip(min=0)
        lo[dis[sl]] = hi[dis[sl]] = net.clip(min=0)
    fixed = replace(lp, col_lo=lo, col_hi=hi, integer=np.zeros(0, dtype=int))
    status, x, _ = _run(fixed, 60)
    assert status == "optimal" and x is not None
    return float(lp.cost @ x)


@pytest.mark.parametrize("seed", range(12))
def test_tightening_rows_keep_the_milp_optimum(seed: int) -> None:
    """The rows that bound import and export by the balance seen from each side are valid
    for every whole direction: dropping them leaves the proven optimum where it was."""
    lp = build(random_day(seed))
    loose_lo, loose_hi = lp.row_lo.copy(), lp.row_hi.copy()
    for name in ("dir_imp_bal", "dir_exp_bal"):
        loose_lo[lp.rows[name]], loose_hi[lp.rows[name]] = -np.inf, np.inf
    loose = replace(lp, row_lo=loose_lo, row_hi=loose_hi)
    assert exact(lp) == pytest.approx(exact(loose), rel=1e-7, abs=1e-7)


def test_tightening_rows_raise_the_relaxation_bound() -> None:
    lp = build(random_day(3))
    relaxed = replace(lp, integer=np.zeros(0, dtype=int))
    loose_hi = lp.row_hi.copy()
    for name in ("dir_imp_bal", "dir_exp_bal"):
        loose_hi[lp.rows[name]] = np.inf
    _, tight, _ = _run(relaxed, 60)
    _, loose, _ = _run(replace(relaxed, row_hi=loose_hi), 60)
    assert lp.cost @ tight > lp.cost @ loose + 1e-3


def test_whole_directions_from_the_relaxation_are_the_exact_optimum() -> None:
    # Export pays more than import and the battery could export, but its losses make every
    # round trip lose money: the relaxation already imports in every step, no MILP needed.
    inp = PlanInput(T0, 3600, np.full(3, 5.0), np.zeros(3), np.full(3, 0.31),
                    np.full(3, 0.39), (PlanBattery("b", 10, 50, 0, 100, 8, 8, 0.5, 0.5),),
                    export_limit_kw=10.0)
    lp = build(inp)
    assert len(lp.integer) == 3
    plan = solve(inp)
    assert plan.status == "optimal" and (plan.grid_kw > 0).all()
    relaxed = replace(lp, integer=np.zeros(0, dtype=int))
    _, x, _ = _run(relaxed, 60)
    assert set(np.round(x[lp.integer], 9)) == {1.0}  # whole already
    assert _objective_of(plan, lp, inp) == pytest.approx(exact(lp), rel=1e-7, abs=1e-7)

"""The planning problem: what goes in (`PlanInput`), and the LP built from it in one
vectorised pass (scipy.sparse, no per-step Python loops), ready for HiGHS.

Variables per step t (kW averages over the step; dt in hours):
  imp, exp >= 0   grid import / export (grid = imp - exp)
  pv              PV used, 0..available (the rest is curtailed)
  ch, dis >= 0    per battery; e = stored energy (kWh) at the end of the step
  peak            billing peak, >= peak_so_far and >= every 15-min block mean of net import
  short           per battery and step: kWh below the reserve SoC (soft, see below)
  tshort          per battery: kWh the horizon ends below the starting energy
  c_over, c_under kW above / below a commitment's grid bound in a step (soft, see below)
  dem, dem_short  per energy demand (EV session): its power per step, its shortfall (kWh);
                  demands.py has them, and they add to the load in the balance
Objective: sum dt*(price_imp*imp - price_exp*exp) + demand*peak + degradation*dt*(ch+dis)
  + penalties. Choices that matter:
- The demand peak is what the bill counts (hil/site.py `Ledger`, the site history): the
  highest mean of net import (import - export) over a 15-min interval of the UTC clock. With
  steps shorter than 15 min the LP bounds each block's mean, so a short spike inside a
  quarter hour costs only its share of that mean. With steps of 15 min or more the LP takes
  each step as flat, so a block's mean is its step's: exact at 15 min; at 30 or 60 min the
  plan cannot see (or shave) peaks inside a step and relies on the cycle's cap (see
  planner.py `peak_cap_kw`). A block cut by the start or the end of the horizon counts as
  the mean over the part the plan covers.
- Configured import/export limits and the device limits are hard. DR and dispatch
  commitments (`grid_max_kw`/`grid_min_kw`) are soft at a price above anything else in the
  objective, reserve included (docs/domain.md §3: commitments rank above the reserve): a DR event
  the battery can only partly deliver is normal (settlement penalises below 50 %), so the
  plan delivers as much as it can and says how much it falls short, instead of failing.
- Import and export are separate so the LP prices each direction. When the export price is
  <= the import price, importing and exporting in one step only loses money and the LP never
  does it. In steps where export pays more than import (and exporting is possible) a binary
  picks the direction, making the problem a small MILP. Two rows per such step bound import
  by the load, demands and charging and export by the PV surplus and discharging, scaled by
  the binary: valid for whole directions, they keep the relaxation from importing and
  exporting at once, which is what lets solve.py settle most plans without branching.
- Simultaneous charge and discharge only burns energy through the efficiencies, so it is
  never chosen unless burning earns money (negative prices, or a grid floor the site cannot
  otherwise absorb). It is not forbidden (that would need a binary per step); solve.py nets
  the two and says so in the plan's reason.
- The reserve SoC is a duty above economics but below grid-operator commitments (docs/domain.md §3):
  going below it costs far more than any price can earn, so the plan never trades it for
  money, yet a battery that starts below it, or a DR event that needs it, does not make the
  plan infeasible. The device window (soc_min..soc_max) is hard.
- End of horizon: with `terminal_value_per_kwh` the stored energy is worth that much; with
  None (default) each battery should end with at least its starting energy, and a shortfall
  is charged as if bought back at the highest import price of the horizon (so a rolling
  plan neither dumps the battery at the horizon's end nor becomes infeasible because of it)
  Thermal storage tanks likewise, per electric kWh it takes to make their energy (thermal.py).
- Tiny tie-breaks (1e-5 per kWh of throughput, 1e-7 per kWh of PV used) make degenerate
  optima deterministic: rest rather than cycle, use PV rather than curtail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from edge.plan import demands, thermal
from edge.plan.inputs import PlanBattery, PlanInput, build_input, check

__all__ = ["PlanBattery", "PlanInput", "Lp", "build", "build_input", "check",
           "demand_blocks", "BLOCK_S"]

inf = math.inf
BLOCK_S = 900  # the billing interval of the demand charge
_EPS_THROUGHPUT = 1e-5
_EPS_PV = 1e-7


@dataclass
class Lp:
    """The LP in HiGHS's terms plus where each variable block lives."""

    cost: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    a: sp.csc_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    integer: np.ndarray  # column indices that are binary
    dir_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # theirs
    cols: dict[str, slice] = field(default_factory=dict)
    rows: dict[str, slice] = field(default_factory=dict)
    e0_kwh: np.ndarray = field(default_factory=lambda: np.zeros(0))
    elastic: bool = False


class _Blocks:
    """Allocates column and row index ranges and collects COO triplets."""

    def __init__(self) -> None:
        self.ncol = 0
        self.nrow = 0
        self.cols: dict[str, slice] = {}
        self.rows: dict[str, slice] = {}
        self.cost: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.rlo: list[np.ndarray] = []
        self.rhi: list[np.ndarray] = []
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []

    def col(self, name: str, cost, lo, hi, size: int) -> np.ndarray:
        idx = np.arange(self.ncol, self.ncol + size)
        self.cols[name] = slice(self.ncol, self.ncol + size)
        self.ncol += size
        for dst, val in ((self.cost, cost), (self.lo, lo), (self.hi, hi)):
            dst.append(np.broadcast_to(np.asarray(val, dtype=float), (size,)).copy())
        return idx

    def row(self, name: str, lo, hi, size: int) -> np.ndarray:
        idx = np.arange(self.nrow, self.nrow + size)
        self.rows[name] = slice(self.nrow, self.nrow + size)
        self.nrow += size
        self.rlo.append(np.broadcast_to(np.asarray(lo, dtype=float), (size,)).copy())
        self.rhi.append(np.broadcast_to(np.asarray(hi, dtype=float), (size,)).copy())
        return idx

    def coef(self, rows, cols, vals) -> None:
        rows, cols = np.asarray(rows).ravel(), np.asarray(cols).ravel()
        self.r.append(rows)
        self.c.append(cols)
        self.v.append(np.broadcast_to(np.asarray(vals, dtype=float), rows.shape).ravel().copy())

    def matrix(self) -> sp.csc_matrix:
        cat = (lambda xs: np.concatenate(xs)) if self.r else (lambda xs: np.zeros(0))
        return sp.csc_matrix((cat(self.v), (cat(self.r), cat(self.c))),
                             shape=(self.nrow, self.ncol))


def grid_window(inp: PlanInput, limits: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-step bounds on grid power from the commitments and (with `limits`) the configured
    limits. A commitment beyond the configured limits is cut to them (the limits always
    hold). Without `limits`, steps and sides without a commitment are unbounded."""
    n = inp.n
    i_lim, e_lim = inp.import_limit_kw, -inp.export_limit_kw
    hi = np.full(n, i_lim if limits else inf, dtype=float)
    lo = np.full(n, e_lim if limits else -inf, dtype=float)
    if inp.grid_max_kw is not None:
        g = np.asarray(inp.grid_max_kw, dtype=float)
        hi = np.where(np.isnan(g), hi, np.minimum(i_lim, np.maximum(g, e_lim)))
    if inp.grid_min_kw is not None:
        g = np.asarray(inp.grid_min_kw, dtype=float)
        lo = np.where(np.isnan(g), lo, np.maximum(e_lim, np.minimum(g, np.minimum(hi, i_lim))))
    return lo, hi


def committed(inp: PlanInput) -> np.ndarray:
    """Steps with a DR or dispatch bound (bool per step)."""
    out = np.zeros(inp.n, dtype=bool)
    for arr in (inp.grid_max_kw, inp.grid_min_kw):
        if arr is not None:
            out |= np.isfinite(np.asarray(arr, dtype=float))
    return out


def demand_blocks(inp: PlanInput) -> sp.csr_matrix:
    """Weights (blocks x steps) that turn step powers into the means of the 15-min billing
    blocks (UTC clock) they fall in; a block the horizon covers only in part is the mean over
    the covered part. Steps that are whole multiples of 15 min map one to one (flat inside a
    step, the block mean is the step mean)."""
    n, step = inp.n, inp.step_s
    if step % BLOCK_S == 0:
        return sp.identity(n, format="csr")
    b = inp.start.timestamp() + np.arange(1, n + 1) * float(step)
    a = b - step
    if inp.first_step_s is not None:
        a[0] = b[0] - inp.first_step_s
    first = np.floor(a / BLOCK_S)
    rows, cols, vals = [], [], []
    for j in range(step // BLOCK_S + 2):  # the blocks a step can touch
        blk = first + j
        overlap = np.minimum(b, (blk + 1) * BLOCK_S) - np.maximum(a, blk * BLOCK_S)
        keep = overlap > 1e-6
        rows.append(blk[keep])
        cols.append(np.flatnonzero(keep))
        vals.append(overlap[keep])
    blocks, r = np.unique(np.concatenate(rows), return_inverse=True)
    w = np.concatenate(vals)
    w = w / np.bincount(r, w)[r]
    return sp.csr_matrix((w, (r, np.concatenate(cols))), shape=(len(blocks), n))


def build(inp: PlanInput, elastic: bool = False) -> Lp:
    """The LP of `inp`. `elastic=True` lets the grid break the configured import/export
    limits too, at a price above everything else, which turns an infeasible plan into one
    that shows where and by how much (for the reason)."""
    check(inp)
    thermal.check(inp)
    n, nb = inp.n, len(inp.batteries)
    dt = inp.dt_h
    load = np.asarray(inp.load_kw, dtype=float)
    pv = np.asarray(inp.pv_kw, dtype=float)
    pi = np.asarray(inp.import_price, dtype=float)
    pe = np.asarray(inp.export_price, dtype=float)
    bat = inp.batteries
    cap = np.array([b.capacity_kwh for b in bat])
    e_lo = np.array([b.soc_min_pct for b in bat]) * cap / 100
    e_hi = np.array([b.soc_max_pct for b in bat]) * cap / 100
    e0 = np.array([b.soc0_pct for b in bat]) * cap / 100
    e_lo, e_hi = np.minimum(e_lo, e0), np.maximum(e_hi, e0)  # a battery outside its window
    ch_max = np.array([b.max_charge_kw for b in bat])
    dis_max = np.array([b.max_discharge_kw for b in bat])
    eta_c = np.array([b.charge_efficiency for b in bat])
    eta_d = np.array([b.discharge_efficiency for b in bat])
    deg = max(inp.degradation_cost_per_kwh, _EPS_THROUGHPUT)
    g_lo, g_hi = grid_window(inp, limits=False)

    # Physical reach of the grid each step (PV can be curtailed to zero), inside the limits.
    dem_cap = demands.caps(inp)
    imp_ub = np.maximum(load + ch_max.sum() + dem_cap.sum(axis=0) + thermal.max_draw_kw(inp),
                        0.0)
    exp_ub = np.maximum(pv + dis_max.sum() + sum(t.max_discharge_kw for t in inp.tanks) - load,
                        0.0)
    if not elastic:
        imp_ub = np.minimum(imp_ub, inp.import_limit_kw)
        exp_ub = np.minimum(exp_ub, inp.export_limit_kw)

    m = _Blocks()
    imp = m.col("imp", dt * pi, 0.0, imp_ub, n)
    exp = m.col("exp", -dt * pe, 0.0, exp_ub, n)
    pvu = m.col("pv", -_EPS_PV * dt, 0.0, pv, n)
    # battery blocks are battery-major: index b*n + t
    bt_dt = np.tile(dt, nb)
    ch = m.col("ch", deg * bt_dt, 0.0, np.repeat(ch_max, n), nb * n)
    dis = m.col("dis", deg * bt_dt, 0.0, np.repeat(dis_max, n), nb * n)
    e_cost = np.zeros(nb * n)
    if inp.terminal_value_per_kwh is not None and nb:
        e_cost[np.arange(nb) * n + n - 1] = -inp.terminal_value_per_kwh
    e = m.col("e", e_cost, np.repeat(e_lo, n), np.repeat(e_hi, n), nb * n)

    # Balance: imp - exp + pv + sum_b (dis - ch) - sum_d dem = load (dem: demands.add)
    bal = m.row("balance", load, load, n)
    m.coef(bal, imp, 1.0)
    m.coef(bal, exp, -1.0)
    m.coef(bal, pvu, 1.0)
    if nb:
        bal_b = np.tile(bal, nb)
        m.coef(bal_b, dis, 1.0)
        m.coef(bal_b, ch, -1.0)

    # SoC: e[t] - e[t-1] - dt*eta_c*ch + dt/eta_d*dis = (e0 at t == 0, else 0)
    if nb:
        rhs = np.zeros(nb * n)
        rhs[np.arange(nb) * n] = e0
        soc = m.row("soc", rhs, rhs, nb * n)
        m.coef(soc, e, 1.0)
        later = soc.reshape(nb, n)[:, 1:].ravel()
        m.coef(later, e.reshape(nb, n)[:, :-1].ravel(), -1.0)
        m.coef(soc, ch, -bt_dt * np.repeat(eta_c, n))
        m.coef(soc, dis, bt_dt / np.repeat(eta_d, n))

    # Demand charge on the highest 15-min mean net import (never below the period's peak so
    # far): block . (imp - exp) - peak <= 0 per block.
    if inp.demand_charge_per_kw > 0:
        w = demand_blocks(inp).tocoo()
        nblk = w.shape[0]
        peak = m.col("peak", inp.demand_charge_per_kw, max(inp.peak_so_far_kw, 0.0), inf, 1)
        pr = m.row("peak", -inf, 0.0, nblk)
        m.coef(pr[w.row], imp[w.col], w.data)
        m.coef(pr[w.row], exp[w.col], -w.data)
        m.coef(pr, np.repeat(peak, nblk), -1.0)

    # Worth more than any kWh can earn in a step (prices, degradation, a step's share of the
    # demand charge), so the soft bounds below give way only when nothing else can.
    big = 100.0 * (np.abs(pi).max() + np.abs(pe).max() + deg + 1.0
                   + inp.demand_charge_per_kw * 3600.0 / inp.step_s)

    demands.add(m, inp, dt, dem_cap, big, {"balance": bal, "imp": imp, "exp": exp, "pv": pvu})
    thermal.add(m, inp, dt, big * (n + 1), bal, max(pi.max(), pe.max(), 0.0))

    # Reserve SoC, soft: e + short >= reserve
    if nb:
        reserve = np.maximum(inp.reserve_soc_pct * cap / 100, e_lo)
        need = reserve > e_lo + 1e-9
        if need.any():
            rb = np.flatnonzero(need)
            k = len(rb)
            short = m.col("short", big, 0.0, np.repeat(reserve[rb] - e_lo[rb], n), k * n)
            rr = m.row("reserve", np.repeat(reserve[rb], n), inf, k * n)
            m.coef(rr, short, 1.0)
            m.coef(rr, (rb[:, None] * n + np.arange(n)).ravel() + e[0], 1.0)

    # End of horizon (default): e[n-1] + tshort >= e0, shortfall bought back at the top price.
    if nb and inp.terminal_value_per_kwh is None:
        buyback = (max(pi.max(), pe.max(), 0.0) + 2 * deg) / eta_c
        tshort = m.col("tshort", buyback, 0.0, inf, nb)
        tr = m.row("terminal", e0, inf, nb)
        m.coef(tr, tshort, 1.0)
        m.coef(tr, e[np.arange(nb) * n + n - 1], 1.0)

    # Commitments, soft: g_lo <= imp - exp - c_over + c_under <= g_hi. A kWh of shortfall
    # costs more than keeping a kWh below the reserve for the whole horizon (n steps of
    # `big`), so the plan gives up the reserve before it gives up a commitment.
    commit = big * (n + 1)
    rows_t = np.flatnonzero(committed(inp))
    if len(rows_t):
        k = len(rows_t)
        gr = m.row("commit", g_lo[rows_t], g_hi[rows_t], k)
        m.coef(gr, imp[rows_t], 1.0)
        m.coef(gr, exp[rows_t], -1.0)
        m.coef(gr, m.col("c_over", commit * dt[rows_t], 0.0, inf, k), -1.0)
        m.coef(gr, m.col("c_under", commit * dt[rows_t], 0.0, inf, k), 1.0)

    # Elastic (diagnosis only): the configured limits as soft rows, above everything else.
    if elastic:
        lim = m.row("limit", -inp.export_limit_kw, inp.import_limit_kw, n)
        m.coef(lim, imp, 1.0)
        m.coef(lim, exp, -1.0)
        m.coef(lim, m.col("over", 100.0 * commit * dt, 0.0, inf, n), -1.0)
        m.coef(lim, m.col("under", 100.0 * commit * dt, 0.0, inf, n), 1.0)

    # Direction binaries where exporting pays more than importing.
    integer = np.zeros(0, dtype=int)
    both = np.flatnonzero((pe > pi) & (exp_ub > 0) & (imp_ub > 0))
    if len(both):
        k = len(both)
        d = m.col("import_dir", 0.0, 0.0, 1.0, k)
        integer = d
        r1 = m.row("dir_imp", -inf, 0.0, k)  # imp - U_imp*d <= 0
        m.coef(r1, imp[both], 1.0)
        m.coef(r1, d, -imp_ub[both])
        r2 = m.row("dir_exp", -inf, exp_ub[both], k)  # exp + U_exp*d <= U_exp
        m.coef(r2, exp[both], 1.0)
        m.coef(r2, d, exp_ub[both])
        # The balance seen from each side (valid for d in {0, 1}, far tighter when d is
        # fractional): importing, the grid brings at most the load, the demands and the
        # charging; exporting, at most the PV surplus and the discharging. Without these
        # the relaxation imports and exports at once and the bound is loose.
        r3 = m.row("dir_imp_bal", -inf, 0.0, k)  # imp - sum ch - d*(load + dem cap) <= 0
        m.coef(r3, imp[both], 1.0)
        m.coef(r3, d, -(load + dem_cap.sum(axis=0))[both])
        r4 = m.row("dir_exp_bal", -inf, (pv - load)[both], k)  # exp - sum dis + (pv-load)*d
        m.coef(r4, exp[both], 1.0)
        m.coef(r4, d, (pv - load)[both])
        if nb:
            bsteps = (np.arange(nb)[:, None] * n + both).ravel()
            m.coef(np.tile(r3, nb), ch[bsteps], -1.0)
            m.coef(np.tile(r4, nb), dis[bsteps], -1.0)

    return Lp(
        cost=np.concatenate(m.cost), col_lo=np.concatenate(m.lo), col_hi=np.concatenate(m.hi),
        a=m.matrix(), row_lo=np.concatenate(m.rlo), row_hi=np.concatenate(m.rhi),
        integer=integer, dir_steps=both, cols=m.cols, rows=m.rows, e0_kwh=e0, elastic=elastic,
    )

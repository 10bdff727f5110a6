"""Warm start for the rolling re-plan: the previous round's simplex basis, shifted by the
steps the horizon moved, starts the next round's LP (the relaxation, for a plan with
direction binaries).

A re-plan one period later solves nearly the same LP: the same blocks of variables and
rows, each moved along the time axis, with a slightly different SoC and forecast. HiGHS
proves optimality from any starting basis, so a warm start changes how many simplex
iterations the solve takes, never the optimum it reaches (a degenerate LP may return
another schedule of the same cost). A basis that cannot be mapped - another horizon length
or step, other batteries, zones, tanks or energy demands, a horizon that moved backwards or
by more than its length - is not tried: the round solves cold and `why` says so.

Mapping, block by block (model.py's `cols` and `rows`): a block of one entry per step (or
per battery, demand or zone and step) takes entry t from the previous t + shift, the last
steps repeating the previous last; a block over the direction steps matches by step; any
other block of the same size is kept as it was, one that shrank keeps its tail (the
demand-charge blocks that left at the front), one that grew starts new entries as basic
rows or columns at a bound. The count of basic entries must equal the row count: surplus
or missing row slacks are made nonbasic or basic from the last rows backwards; HiGHS
repairs a singular basis itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np

from edge.plan.inputs import PlanInput
from edge.plan.model import Lp

__all__ = ["WarmStart"]

_LOWER, _BASIC, _UPPER, _ZERO = 0, 1, 2, 3  # HighsBasisStatus values
_STATUS = np.array([highspy.HighsBasisStatus(v) for v in range(5)], dtype=object)
_DIR_BLOCKS = ("import_dir", "dir_imp", "dir_exp", "dir_imp_bal", "dir_exp_bal")


def structure(inp: PlanInput, lp: Lp) -> tuple:
    """What must be equal for a basis to carry over (everything but the time and data)."""
    return (inp.n, inp.step_s, lp.elastic,
            tuple(b.id for b in inp.batteries), tuple(d.id for d in inp.demands),
            tuple(z.id for z in inp.zones), tuple(t.id for t in inp.tanks),
            tuple(lp.cols), tuple(lp.rows))


@dataclass
class _Basis:
    key: tuple
    start_s: float
    cols: dict[str, slice]
    rows: dict[str, slice]
    dir_steps: np.ndarray
    col_status: np.ndarray
    row_status: np.ndarray


class WarmStart:
    """The previous round's basis, kept where the solver runs (the planner, in the daemon or
    its worker process). `used` says whether the last solve started warm, `why` if not;
    `iterations` is the simplex iterations of the LP whose basis was kept (the relaxation,
    where the plan has direction binaries)."""

    def __init__(self) -> None:
        self._prev: _Basis | None = None
        self.used = False
        self.why = "no previous plan"
        self.iterations = 0

    def basis(self, inp: PlanInput, lp: Lp) -> highspy.HighsBasis | None:
        """The previous basis mapped onto `lp`, or None (and `why`) when it cannot be."""
        self.used = False
        prev = self._prev
        if prev is None:
            self.why = "no previous plan"
            return None
        if prev.key != structure(inp, lp):
            self.why = "the model's structure changed (horizon, step, devices, zones or demands)"
            return None
        moved = (inp.start.timestamp() - prev.start_s) / inp.step_s
        shift = round(moved)
        if abs(moved - shift) > 1e-6 or not 0 <= shift < inp.n:
            self.why = f"the horizon moved by {moved:g} steps"
            return None
        cols = _map(lp.cols, prev.cols, prev.col_status, inp.n, shift, lp.dir_steps,
                    prev.dir_steps, default=_LOWER)
        rows = _map(lp.rows, prev.rows, prev.row_status, inp.n, shift, lp.dir_steps,
                    prev.dir_steps, default=_BASIC)
        _settle(cols, lp.col_lo, lp.col_hi)
        _settle(rows, lp.row_lo, lp.row_hi)
        _balance(rows, cols, lp)
        b = highspy.HighsBasis()
        b.col_status = list(_STATUS[cols])
        b.row_status = list(_STATUS[rows])
        b.valid = True
        self.used, self.why = True, ""
        return b

    def keep(self, inp: PlanInput, lp: Lp, h: highspy.Highs) -> None:
        """Remember the optimal basis of `h`, the LP solved for `inp` (`lp`'s structure)."""
        self.iterations = h.getInfo().simplex_iteration_count
        b = h.getBasis()
        if not b.valid:
            self._prev = None
            return
        self._prev = _Basis(structure(inp, lp), inp.start.timestamp(), dict(lp.cols),
                            dict(lp.rows), lp.dir_steps.copy(),
                            np.array([s.value for s in b.col_status], dtype=np.int8),
                            np.array([s.value for s in b.row_status], dtype=np.int8))

    def forget(self) -> None:
        self._prev = None


def _map(new: dict[str, slice], old: dict[str, slice], status: np.ndarray, n: int, shift: int,
         new_dir: np.ndarray, old_dir: np.ndarray, default: int) -> np.ndarray:
    size = max((s.stop for s in new.values()), default=0)
    out = np.full(size, default, dtype=np.int8)
    for name, s in new.items():
        o = old[name]
        k_new, k_old = s.stop - s.start, o.stop - o.start
        if name in _DIR_BLOCKS and len(old_dir):
            pos = np.searchsorted(old_dir, new_dir + shift)
            ok = (pos < len(old_dir)) & (old_dir[np.minimum(pos, len(old_dir) - 1)]
                                         == new_dir + shift)
            src = np.where(ok, pos, -1)
        elif k_new == k_old and k_new % n == 0 and k_new:
            i = np.arange(k_new)
            src = (i // n) * n + np.minimum(i % n + shift, n - 1)
        elif k_new <= k_old:
            src = np.arange(k_new) + (k_old - k_new)
        else:
            src = np.where(np.arange(k_new) < k_old, np.arange(k_new), -1)
        ok = src >= 0
        block = out[s]
        block[ok] = status[o.start + src[ok]]
    return out


def _settle(status: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """A nonbasic entry sits at a bound it has: its own, else lower, else upper, else zero."""
    nonbasic = status != _BASIC
    up = nonbasic & (status == _UPPER) & np.isfinite(hi)
    low = nonbasic & ~up & np.isfinite(lo)
    high = nonbasic & ~up & ~low & np.isfinite(hi)
    status[nonbasic] = _ZERO
    status[up | high] = _UPPER
    status[low] = _LOWER


def _balance(rows: np.ndarray, cols: np.ndarray, lp: Lp) -> None:
    """As many basic entries as rows: row slacks (then columns) made nonbasic or basic,
    latest first."""
    excess = int((rows == _BASIC).sum() + (cols == _BASIC).sum()) - len(rows)
    if excess < 0:
        rows[np.flatnonzero(rows != _BASIC)[::-1][:-excess]] = _BASIC
        return
    for status, lo, hi in ((rows, lp.row_lo, lp.row_hi), (cols, lp.col_lo, lp.col_hi)):
        if excess <= 0:
            return
        pick = np.flatnonzero(status == _BASIC)[::-1][:excess]
        status[pick] = _ZERO
        _settle(status, lo, hi)
        excess -= len(pick)

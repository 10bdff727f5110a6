"""Forecast error, measured the honest way: every forecast issued is kept until the
intervals it covered have been metered, and each (forecast, interval) pair counts, so the
figure is the error over the planning horizon, not just of the next quarter hour."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from edge.report.history import INTERVAL_S, Interval


@dataclass(slots=True)
class _Issued:
    start: datetime
    step_s: int
    load_kw: np.ndarray
    pv_kw: np.ndarray


@dataclass(slots=True)
class _Sums:
    abs_err: float = 0.0
    actual: float = 0.0
    n: int = 0

    def figures(self) -> dict:
        if not self.n:
            return {"mae_kw": None, "nmae": None, "n": 0}
        mae = self.abs_err / self.n
        mean = self.actual / self.n
        return {"mae_kw": round(mae, 3), "nmae": round(mae / mean, 4) if mean > 0 else None,
                "n": self.n}


class ForecastErrors:
    def __init__(self, keep: int = 200) -> None:
        self._issued: deque[_Issued] = deque(maxlen=keep)
        self.load = _Sums()
        self.pv = _Sums()

    def issued(self, start: datetime, step_s: int, load_kw: np.ndarray, pv_kw: np.ndarray) -> None:
        self._issued.append(_Issued(start, step_s, np.asarray(load_kw), np.asarray(pv_kw)))

    def metered(self, iv: Interval) -> None:
        """Compare a closed interval with every kept forecast that covered all of it."""
        end = iv.start + timedelta(seconds=INTERVAL_S)
        for f in self._issued:
            off = (iv.start - f.start).total_seconds()
            if off < 0 or f.step_s > INTERVAL_S or INTERVAL_S % f.step_s or off % f.step_s:
                continue
            i0, k = int(off // f.step_s), INTERVAL_S // f.step_s
            if i0 + k > len(f.load_kw):
                continue
            for sums, fc, actual in ((self.load, f.load_kw, iv.mean_kw("load")),
                                     (self.pv, f.pv_kw, iv.mean_kw("pv"))):
                value = float(np.mean(fc[i0:i0 + k]))
                if np.isfinite(value) and np.isfinite(actual):
                    sums.abs_err += abs(value - actual)
                    sums.actual += actual
                    sums.n += 1
        while self._issued and self._issued[0].start + timedelta(
                seconds=self._issued[0].step_s * len(self._issued[0].load_kw)) <= end:
            self._issued.popleft()

    def figures(self) -> dict:
        return {"load": self.load.figures(), "pv": self.pv.figures()}

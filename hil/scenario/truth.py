"""What really happens during a scenario: its events resolved to windows, and the per-step
PV, load and prices the simulated site follows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from edge.config import TariffConfig
from hil.scenario.spec import DeviceOffline, DrEvent, PriceSpike


@dataclass(frozen=True)
class Window:
    """A resolved event: its kind, UTC window and the event it came from."""

    start: datetime
    end: datetime
    event: DeviceOffline | DrEvent | PriceSpike
    index: int

    @property
    def kind(self) -> str:
        return self.event.type

    @property
    def id(self) -> str:
        e = self.event
        return (e.id if isinstance(e, DrEvent) and e.id else f"{e.type}-{self.index}")


class Truth:
    """What really happens: per-step PV and load (piecewise constant over each step) and the
    import price of every instant. Times past the end wrap around to the start, so a planner
    whose horizon reaches beyond the run sees another day like this one."""

    def __init__(self, start: datetime, step_s: int, pv_kw: np.ndarray, load_kw: np.ndarray,
                 tariff: TariffConfig, tz: ZoneInfo, spikes: list[Window]) -> None:
        self.start = start
        self.step_s = step_s
        self.pv_kw = pv_kw
        self.load_kw = load_kw
        self.tariff = tariff
        self.tz = tz
        self.spikes = [(w.start, w.end, w.event.import_price) for w in spikes]
        self._t0 = start.timestamp()

    @property
    def n(self) -> int:
        return len(self.pv_kw)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.n * self.step_s)

    def _index(self, t: datetime) -> int:
        return int((t.timestamp() - self._t0 + 1e-6) // self.step_s) % self.n

    def pv_at(self, t: datetime) -> float:
        return float(self.pv_kw[self._index(t)])

    def load_at(self, t: datetime) -> float:
        return float(self.load_kw[self._index(t)])

    def price_at(self, t: datetime) -> float:
        for a, b, price in self.spikes:
            if a <= t < b:
                return price
        return self.tariff.price_at(t.astimezone(self.tz).time())

    def averages(self, start: datetime, n: int, step_s: int) -> tuple[np.ndarray, np.ndarray]:
        """(load_kw, pv_kw) means over `n` steps of `step_s` from `start` (wrapping)."""
        sub = math.gcd(step_s, self.step_s)
        k = step_s // sub
        offs = (start.timestamp() - self._t0) + np.arange(n * k) * sub
        idx = (np.floor((offs + 1e-6) / self.step_s).astype(int)) % self.n
        return self.load_kw[idx].reshape(n, k).mean(1), self.pv_kw[idx].reshape(n, k).mean(1)

    def forecast(self, start: datetime, n: int, step_s: int) -> tuple[np.ndarray, np.ndarray]:
        """The perfect forecast: the planner's callable `(start, n, step_s) -> (load, pv)`."""
        return self.averages(start, n, step_s)

    def import_prices(self, start: datetime, n: int, step_s: int) -> np.ndarray:
        """Mean import price of each step (per-minute average: a step straddling a period
        boundary or a spike pays the blend, as the metered bill does)."""
        minutes = max(1, step_s // 60)
        out = np.empty(n)
        for i in range(n):
            t0 = start + timedelta(seconds=i * step_s)
            out[i] = np.mean([self.price_at(t0 + timedelta(minutes=m)) for m in range(minutes)])
        return out

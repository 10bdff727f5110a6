"""A car on a charge point, stepped in simulated time: what it draws for the current the
charger offers, and how its battery fills; and when a charger's daily arrivals are plugged
in (`stay_at`, `stay_window`). Pure models: the simulated charge point and the offline
replay (tools/simulate) run the same cars.

Deterministic on purpose (tests compare what the controller asked with what happened):

- it takes min(offer, its own maximum) per phase, on the phases its on-board charger uses;
- an offer below the IEC 61851 minimum (6 A) but above 0 stops it, unless it is one of the
  cars that keep drawing the minimum anyway (`ignores_below_min`);
- it follows a new offer linearly over `ramp_s` (cars answer a PWM change in seconds);
- above `taper_from_pct` it takes less and less, down to a tenth of its maximum, and it
  stops at 100 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from hil.config import Arrival

TAPER_FLOOR = 0.1  # share of its maximum a car still takes just below 100 %


@dataclass
class Car:
    capacity_kwh: float
    soc_pct: float
    max_a: float
    phases: int  # the car's on-board charger: 1 or 3
    min_a: float = 6.0  # the charger's floor (IEC 61851)
    ignores_below_min: bool = False
    ramp_s: float = 3.0
    taper_from_pct: float = 80.0
    reports_soc: bool = False
    amps: float = 0.0  # drawn per phase now
    energy_kwh: float = 0.0  # taken since it plugged in
    _target: float = 0.0  # what the offer asks of it (before the taper)
    _from: float = 0.0  # where the ramp to _target started
    _since_s: float = 0.0  # how long ago the target changed

    @classmethod
    def arriving(cls, a: Arrival, min_a: float, ignores_below_min: bool, ramp_s: float) -> Car:
        return cls(a.capacity_kwh, a.soc_pct, a.car_max_a, a.car_phases, min_a,
                   ignores_below_min, ramp_s, a.taper_from_pct, a.reports_soc)

    @property
    def full(self) -> bool:
        return self.soc_pct >= 100.0

    def wants_a(self, offer_a: float) -> float:
        """Per-phase current the car settles at for an offer, before the taper."""
        if offer_a <= 0:
            return 0.0
        if offer_a < self.min_a:
            return min(self.min_a, self.max_a) if self.ignores_below_min else 0.0
        return min(offer_a, self.max_a)

    def taper_a(self) -> float:
        """The most the battery accepts at its state of charge."""
        if self.full:
            return 0.0
        if self.soc_pct <= self.taper_from_pct:
            return self.max_a
        share = (100.0 - self.soc_pct) / max(100.0 - self.taper_from_pct, 1e-9)
        return self.max_a * max(TAPER_FLOOR, share)

    def step(self, offer_a: float, dt_s: float, voltage_v: float, charger_phases: int) -> float:
        """Advance dt_s at `offer_a` per phase; return the kW drawn over the step."""
        target = self.wants_a(offer_a)
        if target != self._target:
            self._from = self._ramped()
            self._target, self._since_s = target, 0.0
        self._since_s += dt_s
        self.amps = min(self._ramped(), self.taper_a())
        kw = self.amps * voltage_v * self.phases_used(charger_phases) / 1000
        kwh = min(kw * dt_s / 3600, (100.0 - self.soc_pct) / 100 * self.capacity_kwh)
        self.energy_kwh += kwh
        self.soc_pct = min(100.0, self.soc_pct + kwh / self.capacity_kwh * 100)
        return kwh * 3600 / dt_s if dt_s > 0 else 0.0

    def phases_used(self, charger_phases: int) -> int:
        return min(self.phases, charger_phases)

    def _ramped(self) -> float:
        if self.ramp_s <= 0 or self._since_s >= self.ramp_s:
            return self._target
        return self._from + (self._target - self._from) * self._since_s / self.ramp_s


def stay_at(arrivals: list[Arrival], connector: int, t_local: datetime) -> tuple[int, date] | None:
    """The arrival whose car is on `connector` at t_local, with the day it arrived (a stay
    past midnight belongs to the day before); None while the connector is free."""
    m = t_local.hour * 60 + t_local.minute + t_local.second / 60
    for i, a in enumerate(arrivals):
        if a.connector != connector:
            continue
        lo, hi = a.minutes()
        if lo < hi and lo <= m < hi:
            return i, t_local.date()
        if lo > hi and (m >= lo or m < hi):
            return i, t_local.date() - timedelta(days=0 if m >= lo else 1)
    return None


def stay_window(a: Arrival, day: date, tz) -> tuple[datetime, datetime]:
    """When the car of `a` that arrives on `day` (local) plugs in and leaves, aware."""
    lo, hi = a.minutes()
    arrive = datetime(day.year, day.month, day.day, lo // 60, lo % 60, tzinfo=tz)
    depart = datetime(day.year, day.month, day.day, hi // 60, hi % 60, tzinfo=tz)
    return arrive, depart + timedelta(days=1 if hi < lo else 0)

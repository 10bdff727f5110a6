"""Sharing the site's headroom among EV chargers, once per cycle.

Two kinds of room decide a charger's current:
- the hard room (import limit, DR and dispatch caps, circuit limits) acts at once: what
  does not fit is cut, and a charger that cannot get its minimum current is paused;
- the economic room (the plan's kW for the charger, plus PV the site would otherwise export
  or curtail) starts and pauses chargers only after it has stood for their enable/disable
  delays, so cars are not toggled on every cloud.
A car whose slack is gone (its remaining energy needs its full power until it leaves) is
charged flat out inside the hard room, whatever the plan says. Chargers are served by
priority (higher first), then earliest departure; the minimums go round first, then the rest
is filled up. Never between 0 and the minimum current.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

EPS = 1e-6
PHASES = ("L1", "L2", "L3")


@dataclass(slots=True)
class Want:
    """One charger with a car, as the allocation sees it."""

    id: str
    priority: int
    kw_per_a: float  # kW per ampere of limit (voltage × phases the car uses × connectors)
    min_a: float
    max_a: float  # the charger's, or what the car has shown it takes
    target_kw: float  # the economic room for it (inf: as much as the hard room allows)
    must: bool  # slack gone: charge flat out
    departure_h: float  # hours until it leaves (sorting)
    circuit: str | None = None
    phases: tuple[int, ...] = (0, 1, 2)  # the circuit phases its current loads
    wants_min: bool = True  # the economic room (after the delays) says: run


@dataclass(slots=True)
class Circuits:
    """Amps left per circuit and phase."""

    left: dict[str, list[float]] = field(default_factory=dict)

    def room_a(self, w: Want) -> float:
        if w.circuit is None or w.circuit not in self.left:
            return math.inf
        return min(self.left[w.circuit][p] for p in w.phases)

    def take(self, w: Want, amps: float) -> None:
        if w.circuit is not None and w.circuit in self.left:
            for p in w.phases:
                self.left[w.circuit][p] -= amps


def order(wants: list[Want]) -> list[Want]:
    return sorted(wants, key=lambda w: (not w.must, -w.priority, w.departure_h, w.id))


def economic_minimums(wants: list[Want], surplus_kw: float) -> dict[str, bool]:
    """Whether the economic room alone would run each charger at its minimum: its own
    target covers it, or the surplus pool (given out by priority) tops it up."""
    pool, out = max(surplus_kw, 0.0), {}
    for w in order(wants):
        need = w.min_a * w.kw_per_a
        if w.must or w.target_kw >= need - EPS:
            out[w.id] = True
        elif w.target_kw + pool >= need - EPS:
            pool -= need - w.target_kw
            out[w.id] = True
        else:
            out[w.id] = False
    return out


def share(wants: list[Want], hard_kw: float, surplus_kw: float,
          circuits: Circuits) -> dict[str, float]:
    """Amps per charger: the minimums by priority inside the hard room and the circuits,
    then the rest up to each one's economic room (its target plus what is left of the
    surplus) and its maximum. Amps are rounded down to 0.1 A."""
    amps: dict[str, float] = {}
    left = hard_kw
    ranked = order(wants)
    for w in ranked:
        need = w.min_a * w.kw_per_a
        if w.wants_min and need <= left + EPS and w.min_a <= circuits.room_a(w) + EPS:
            amps[w.id] = w.min_a
            left -= need
            circuits.take(w, w.min_a)
        else:
            amps[w.id] = 0.0
    pool = max(surplus_kw, 0.0) - sum(max(w.min_a * w.kw_per_a - w.target_kw, 0.0)
                                      for w in ranked if amps[w.id] > 0 and not w.must)
    for w in ranked:
        a = amps[w.id]
        if a <= 0:
            continue
        economic = math.inf if w.must else max(w.target_kw - a * w.kw_per_a, 0.0) + max(pool, 0)
        more_kw = min(max(left, 0.0), economic)
        more_a = min(w.max_a - a, more_kw / w.kw_per_a, circuits.room_a(w))
        more_a = math.floor(max(more_a, 0.0) * 10 + EPS) / 10
        if more_a <= 0:
            continue
        amps[w.id] = a + more_a
        left -= more_a * w.kw_per_a
        circuits.take(w, more_a)
        if not w.must:
            pool -= max(more_a * w.kw_per_a - max(w.target_kw - a * w.kw_per_a, 0.0), 0.0)
    return amps

"""Opt-in assessment of a DR event: the share of its declared energy the site can deliver."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.vpp.capability import Capability


@dataclass(frozen=True, slots=True)
class Assessment:
    expected_ratio: float
    opt_in: bool
    reason: str


def expected(cap: Capability, direction: str, declared_kw: np.ndarray, hours: np.ndarray,
             min_ratio: float) -> Assessment:
    """The share of the declared energy the site can deliver. Batteries count from rest (the
    baseline is the building without them), each with its rating per interval and its
    stored energy over the event; PV curtailment and load shedding count as they stand now
    and do not run out, so they go first and the batteries make up the rest."""
    up = direction == "reduce"
    bats = [p for p in cap.parts if p.stores]
    free = sum(p.up_kw(cap.hours) if up else p.down_kw(cap.hours) for p in cap.parts
               if not p.stores)
    rest = declared_kw - np.minimum(declared_kw, free)
    delivered = float(np.sum((declared_kw - rest) * hours))
    for b in bats:
        take = np.minimum(rest, b.max_kw if up else -b.min_kw)
        kwh, stored = float(np.sum(take * hours)), b.up_kwh if up else b.down_kwh
        if kwh > stored:
            take = take * (stored / kwh)  # its energy runs out: spread over the event
        rest = rest - take
        delivered += float(np.sum(take * hours))
    declared_kwh = float(np.sum(declared_kw * hours))
    ratio = delivered / declared_kwh
    power = sum(b.max_kw if up else -b.min_kw for b in bats)
    energy = sum(b.up_kwh if up else b.down_kwh for b in bats)
    other = f", switchable loads {free:.1f} kW" if up else f", PV {free:.1f} kW curtailable"
    why = (f"expects {ratio:.0%} of {declared_kwh:.1f} kWh: batteries {power:.1f} kW, "
           f"{energy:.1f} kWh available" + (other if free else "")
           + f"; opt-in needs {min_ratio:.0%} (dr.min_response_ratio)")
    return Assessment(ratio, ratio >= min_ratio, why)

"""The energy balance of an island: which loads run and how far PV may produce, while the
grid-forming batteries take whatever the island leaves.

Critical loads run while supply lasts. Non-critical ones run, highest priority first, while
the batteries' power (less a tenth kept for load steps: a PCS trips on overload) covers them and the energy above the critical loads' reserve
(`backup_hours` of their demand) covers each for `restore_hours`; a shed one returns one per
cycle, past its minimum off-time, with its restore margin. PV is held to what the loads take
plus what the batteries can still absorb, so a full battery is never over-charged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edge.image.image import ProcessImage
from edge.island.params import IslandParams

HEADROOM = 0.1  # of the batteries' power, kept free for the building's load steps


@dataclass(frozen=True, slots=True)
class IslandPlan:
    form: bool  # the grid-forming batteries form the grid
    load_on: dict[str, bool]
    pv_limit_kw: float  # for all PV together (inf: no limit)
    reason: str


def _sum(image: ProcessImage, devs: list[Any]) -> float:
    out = 0.0
    for d in devs:
        kw = image.value(d.id, "power_kw") if image.good(d.id) else math.nan
        out += kw if math.isfinite(kw) else 0.0
    return out


def critical_kw(loads: list[Any]) -> float:
    return sum(d.rated_kw for d in loads if getattr(d, "critical", False))


def reserve_kwh(loads: list[Any], params: IslandParams) -> float:
    """What the critical loads need for `backup_hours`: the batteries' hard reserve."""
    return critical_kw(loads) * params.backup_hours


def _batteries(batteries: list[Any], image: ProcessImage) -> tuple[float, float, float, float]:
    """(discharge kW, charge kW, deliverable kWh, absorbable kWh) of the readable forming ones."""
    dis = chg = out = room = 0.0
    for b in batteries:
        if not getattr(b, "grid_forming", False) or not image.good(b.id):
            continue
        soc = image.value(b.id, "soc_pct")
        if not math.isfinite(soc):
            continue
        e_out, e_in = b.deliverable_kwh(soc), b.absorbable_kwh(soc)
        dis += b.max_discharge_kw if e_out > 0 else 0.0
        chg += b.max_charge_kw if e_in > 0 and soc < b.soc_max_pct - 0.5 else 0.0
        out += e_out
        room += e_in
    return dis, chg, out, room


def plan(state: str, form: bool, batteries: list[Any], loads: list[Any], pv: list[Any],
         image: ProcessImage, load_states: dict[str, Any], params: IslandParams,
         now_s: float) -> IslandPlan:
    """The island's loads and PV limit for this cycle in grid state `state`."""
    dis, chg, out, _ = _batteries(batteries, image)
    if state in ("black_start", "islanding") or not form:
        # Rebuild from an empty bus, or not yet islanded: the critical loads come back
        # first, once the island stands, the rest one by one after them.
        on = {d.id: False for d in loads}
        if state == "islanding":
            on = {d.id: bool(getattr(d, "critical", False)) for d in loads}
        return IslandPlan(form, on, 0.0 if state == "black_start" else math.inf,
                          f"{state}: non-critical loads off")
    pv_kw = max(_sum(image, pv), 0.0)
    # What the island feeds beyond the switchable loads (the rest of the building): with
    # the PCC open, every kW the loads draw comes from the batteries and PV.
    base_kw = max(_sum(image, batteries) + pv_kw - _sum(image, loads), 0.0)
    crit = [d for d in loads if getattr(d, "critical", False)]
    flex = sorted((d for d in loads if not getattr(d, "critical", False)),
                  key=lambda d: -d.priority)
    budget_kw = (1.0 - HEADROOM) * dis + pv_kw - critical_kw(crit) - base_kw
    energy = out - reserve_kwh(loads, params)
    on = {d.id: True for d in crit}
    restored = False
    shed: list[str] = []
    for d in flex:
        sw = load_states.get(d.id)
        running = sw is not None and sw.on
        margin = 0.1 * d.rated_kw if d.restore_margin_kw is None else d.restore_margin_kw
        need_kwh = d.rated_kw * params.restore_hours
        if running:
            keep = d.rated_kw <= budget_kw and energy > 0
        else:
            off_s = now_s - sw.since_s if sw is not None else math.inf
            keep = (not restored and off_s >= d.min_off_s and d.rated_kw + margin <= budget_kw
                    and energy >= need_kwh)
            restored |= keep
        on[d.id] = keep
        if keep:
            budget_kw -= d.rated_kw
            energy -= need_kwh
        else:
            shed.append(d.id)
    loads_kw = sum(d.rated_kw for d in loads if on[d.id]) + base_kw
    limit = loads_kw + chg
    why = f"island: shed {', '.join(shed)}" if shed else "island: every load runs"
    return IslandPlan(True, on, limit, f"{why}; PV held to {limit:.1f} kW")

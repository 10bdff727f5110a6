"""Instructions from outside the cycle (grid-operator DR, park dispatch, the local plan) and
how they combine into one pair of grid bounds and a target per cycle.

Every instruction is a window [start, end) on the grid (PCC) power, + import / − export:
an upper bound (`grid_max_kw`), a lower bound (`grid_min_kw`, e.g. valley filling: import at
least X) and an optional target. Bounds from all active instructions intersect, so the most
restrictive wins; when two bounds cannot both hold, the higher-priority source keeps its
bound and the lower one is dropped for that cycle (and named in `conflicts`). The target is
taken from the highest-priority instruction that sets one and is clamped into the bounds.

A target may be one-sided: a DR reduce event aims the grid *down to* its level
(`target_side="down"`) and an increase event *up to* it ("up"); when the site is already
beyond that level on its own, the target does not apply and a lower-priority one (the plan,
self-consumption) decides inside the bounds — a reduce event must never make the battery
charge from the grid to climb up to its level.

Bounds from the local plan are soft: they steer the target (the planned peak cap) but are not
limits the kernel would shed loads for.

Sources, highest priority first (docs/domain.md §3, duty 3 and 6):
grid_operator (OpenADR, MQTT dr_event) > park (MQTT dispatch) > plan (the local planner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Source = Literal["grid_operator", "park", "plan"]
Side = Literal["exact", "down", "up", "bess"]
PRIORITY: dict[str, int] = {"grid_operator": 0, "park": 1, "plan": 2}


@dataclass(frozen=True, slots=True)
class Instruction:
    id: str  # cmd_id, OpenADR event id, or plan id
    source: Source
    start: datetime  # aware
    end: datetime  # aware, exclusive
    grid_max_kw: float = math.inf
    grid_min_kw: float = -math.inf
    grid_target_kw: float = math.nan  # NaN: no target, only bounds
    target_side: Side = "exact"
    # A battery power to follow instead of a grid target (+ discharge). The plan uses it:
    # forecast error then lands on the grid at today's price, not in the battery's energy
    # that the plan kept for the expensive hours. Bounds still hold over it.
    bess_target_kw: float = math.nan
    # The plan's kW for devices with an energy demand (EV chargers), by device id.
    demand_kw: tuple[tuple[str, float], ...] = ()

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class Combined:
    grid_max_kw: float = math.inf  # hard: DR and dispatch
    grid_min_kw: float = -math.inf
    grid_target_kw: float = math.nan  # the first grid target in priority order (reporting)
    active: tuple[str, ...] = ()  # ids of the instructions in force, by priority
    conflicts: tuple[str, ...] = ()  # ids whose bound was dropped against a higher one
    targets: tuple[tuple[float, str], ...] = ()  # (kW, side) by priority
    soft_max_kw: float = math.inf  # the plan's cap: steers the target, never sheds load
    # The plan's kW per demand device (EV chargers) for now; None: no plan in force.
    demand_kw: dict[str, float] | None = None
    requests: dict = field(default_factory=dict)  # standing requests by device id (commands)

    def target_for(self, natural_kw: float) -> float:
        """The target that applies to a site whose grid would read `natural_kw` with its
        batteries idle: the first exact one, or a one-sided one the site has not yet met.
        NaN when none applies. Clamped into the hard bounds and under the soft cap."""
        for kw, side in self.targets:
            if side == "down" and natural_kw <= kw:
                continue
            if side == "up" and natural_kw >= kw:
                continue
            if side == "bess":
                if not math.isfinite(natural_kw):
                    continue
                kw = natural_kw - kw  # the grid that battery power leaves
            return min(max(min(kw, self.soft_max_kw), self.grid_min_kw), self.grid_max_kw)
        return math.nan


@dataclass(slots=True)
class InstructionBook:
    """What the cycle must honour, keyed by instruction id. Adding an id again replaces it
    (a re-sent or updated event); expired entries are dropped by `prune`."""

    _items: dict[str, Instruction] = field(default_factory=dict)
    # Requests about one device's work rather than the grid (an EV session's departure and
    # energy), by device id; the role they concern applies them.
    requests: dict = field(default_factory=dict)

    def put(self, instruction: Instruction) -> None:
        self._items[instruction.id] = instruction

    def cancel(self, instruction_id: str) -> Instruction | None:
        return self._items.pop(instruction_id, None)

    def get(self, instruction_id: str) -> Instruction | None:
        return self._items.get(instruction_id)

    def replace_source(self, source: Source, instructions: list[Instruction]) -> None:
        """Swap every instruction of one source at once (the planner's new plan)."""
        self._items = {k: v for k, v in self._items.items() if v.source != source}
        for i in instructions:
            self._items[i.id] = i

    def prune(self, now: datetime) -> list[Instruction]:
        gone = [i for i in self._items.values() if i.end <= now]
        for i in gone:
            del self._items[i.id]
        return gone

    def all(self) -> list[Instruction]:
        return sorted(self._items.values(), key=lambda i: (PRIORITY[i.source], i.start, i.id))

    def active(self, now: datetime) -> list[Instruction]:
        return [i for i in self.all() if i.active(now)]

    def combine(self, now: datetime) -> Combined:
        lo, hi, soft, first = -math.inf, math.inf, math.inf, math.nan
        demand: dict[str, float] | None = None
        used: list[str] = []
        conflicts: list[str] = []
        targets: list[tuple[float, str]] = []
        for i in self.active(now):
            if i.source == "plan":
                soft = min(soft, i.grid_max_kw)
                if demand is None:
                    demand = dict(i.demand_kw)
            else:
                new_lo, new_hi = max(lo, i.grid_min_kw), min(hi, i.grid_max_kw)
                if new_lo > new_hi:
                    conflicts.append(i.id)  # a higher-priority bound already excludes it
                    continue
                lo, hi = new_lo, new_hi
            used.append(i.id)
            if not math.isnan(i.bess_target_kw):
                targets.append((i.bess_target_kw, "bess"))
            elif not math.isnan(i.grid_target_kw):
                targets.append((i.grid_target_kw, i.target_side))
            if math.isnan(first) and not math.isnan(i.grid_target_kw):
                first = i.grid_target_kw
        if not math.isnan(first):
            first = min(max(first, lo), hi)
        return Combined(hi, lo, first, tuple(used), tuple(conflicts), tuple(targets), soft,
                        demand, dict(self.requests))

    def __len__(self) -> int:
        return len(self._items)

"""When the energy demands (EV sessions) have moved far enough from what the plan in force
was made with that it should be made again: a new session, one that ended with energy the
plan still meant to deliver, a departure moved, or a session's remaining energy off the
plan's course by more than `DRIFT_KWH` (a command changed it, the car took less or more
than planned, PV surplus topped it up). Small wobbles (a car's SoC reading, the rounding of
its current) are not worth a round.

Rate-limited: a change is acted on at most once per `HOLDOFF_S` (simulated) since the last
round or request, so a car park where sessions come and go all the time gets a re-plan
every couple of minutes, not every cycle. A change not acted on yet stays visible (it is
measured against the last round's demands), so it is taken when the hold-off ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

DRIFT_KWH = 3.0  # remaining energy this far off the plan's course asks for a re-plan
HOLDOFF_S = 120.0  # simulated seconds between demand-driven re-plans
DEPARTURE_S = 60.0  # a deadline moved by more than this is a change
_SAY = 5  # changes named in the reason (a car park's round names the first few)


def planned_kwh(plan, device_id: str, since: datetime, until: datetime) -> float:
    """The energy `plan` gives `device_id` between `since` and `until`."""
    kw = getattr(plan, "demand_kw", {}).get(device_id)
    if kw is None or until <= since:
        return 0.0
    t0, step = plan.start.timestamp(), plan.step_s
    b = t0 + np.arange(1, len(kw) + 1) * float(step)
    a = b - step
    if plan.first_step_s is not None and len(kw):
        a[0] = b[0] - plan.first_step_s
    s, u = since.timestamp(), until.timestamp()
    overlap = np.clip(np.minimum(b, u) - np.maximum(a, s), 0.0, None)
    return float(np.sum(kw * overlap) / 3600.0)


@dataclass
class DemandWatch:
    """The demands of the last round, and the plan made from them (None: no plan)."""

    base: dict = field(default_factory=dict)  # id -> Demand the last round planned with
    base_at: datetime | None = None
    plan: object = None
    last_request: datetime | None = None

    def planned_with(self, demands, at: datetime) -> None:
        """A round starts from these demands."""
        self.base = {d.id: d for d in demands}
        self.base_at, self.plan = at, None

    def adopted(self, plan) -> None:
        self.plan = plan

    def expected_kwh(self, device_id: str, now: datetime) -> float:
        """What should still be needed now had the plan in force been followed."""
        d = self.base[device_id]
        if self.plan is None or self.base_at is None:
            return d.energy_kwh
        return max(d.energy_kwh - planned_kwh(self.plan, device_id, self.base_at, now), 0.0)

    def changes(self, demands, now: datetime) -> list[str]:
        """How `demands` differ materially from the last round's (empty: they do not)."""
        if self.base_at is None:
            return []
        out = []
        now_ids = {d.id for d in demands}
        for d in demands:
            was = self.base.get(d.id)
            if was is None:
                out.append(f"+{d.id}")
                continue
            moved = abs((d.deadline - was.deadline).total_seconds())
            if moved > DEPARTURE_S:
                out.append(f"{d.id} deadline {d.deadline.isoformat(timespec='minutes')}")
                continue
            if self.plan is None:
                continue  # no course to compare with: the retry round plans it
            off = d.energy_kwh - self.expected_kwh(d.id, now)
            if math.isfinite(off) and abs(off) > DRIFT_KWH:
                out.append(f"{d.id} {off:+.1f} kWh off plan")
        for i in sorted(set(self.base) - now_ids):
            left = self.expected_kwh(i, now)
            if left > DRIFT_KWH:
                out.append(f"-{i} ({left:.1f} kWh planned still)")
        return out

    def due(self, demands, now: datetime, last_round: datetime | None) -> str | None:
        """The re-plan reason when the demands changed materially and the hold-off since
        the last round and the last request has passed, else None."""
        changed = self.changes(demands, now)
        if not changed:
            return None
        hold = timedelta(seconds=HOLDOFF_S)
        for t in (last_round, self.last_request):
            if t is not None and now - t < hold:
                return None
        self.last_request = now
        more = f" and {len(changed) - _SAY} more" if len(changed) > _SAY else ""
        return "demands changed: " + ", ".join(changed[:_SAY]) + more

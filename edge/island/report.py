"""The island event report: when the grid was lost and when the site was back on it, how
long the transfer took, the critical energy served against what was needed, the energy of
the loads shed and the lowest state of charge."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any


@dataclass(slots=True)
class IslandEvent:
    start_s: float  # grid loss detected (entered islanding)
    min_soc_pct: float = math.nan
    stable_s: float | None = None  # the island first stood (entered island)
    end_s: float | None = None  # back on grid
    critical_need_kwh: float = 0.0
    critical_served_kwh: float = 0.0
    shed_kwh: float = 0.0

    def clone(self) -> IslandEvent:
        return replace(self)

    def observe(self, o: Any, dt_s: float) -> None:
        """Integrate one cycle of an observation (edge.island.machine.Observation)."""
        h = dt_s / 3600
        self.critical_need_kwh += o.critical_kw * h
        self.critical_served_kwh += min(o.critical_served_kw, o.critical_kw) * h
        self.shed_kwh += o.shed_kw * h
        if math.isfinite(o.soc_pct) and not o.soc_pct >= self.min_soc_pct:
            self.min_soc_pct = o.soc_pct

    @property
    def transfer_s(self) -> float | None:
        return None if self.stable_s is None else self.stable_s - self.start_s

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None, nd: int = 3) -> float | None:
            return None if x is None or not math.isfinite(x) else round(x, nd)

        need = self.critical_need_kwh
        return {
            "start_s": r(self.start_s, 1), "end_s": r(self.end_s, 1),
            "transfer_s": r(self.transfer_s, 1),
            "critical_need_kwh": r(need), "critical_served_kwh": r(self.critical_served_kwh),
            "critical_served_ratio": r(self.critical_served_kwh / need, 4) if need > 0 else None,
            "shed_kwh": r(self.shed_kwh), "min_soc_pct": r(self.min_soc_pct, 2),
        }

    def summary(self) -> str:
        d = self.as_dict()
        return (f"islanded {d['start_s']}..{d['end_s']} s, transfer {d['transfer_s']} s, "
                f"critical served {d['critical_served_kwh']} of {d['critical_need_kwh']} kWh, "
                f"shed {d['shed_kwh']} kWh, lowest SoC {d['min_soc_pct']} %")

"""The site's energy and money: one `Sample` per simulated minute, a `Ledger` of the run (the
real site's, and the same site's without its battery, hil/site.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from edge.config import TariffConfig


@dataclass(frozen=True, slots=True)
class Sample:
    """Site state at one instant (kW, %); one is kept per simulated minute."""

    t: datetime
    load_kw: float
    pv_kw: float
    pv_available_kw: float
    bess_kw: float
    grid_kw: float
    soc_pct: float | None


@dataclass
class Ledger:
    """Energy and money of one site over the run. Demand is the 15-min mean of net import."""

    tariff: TariffConfig
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    pv_kwh: float = 0.0
    pv_available_kwh: float = 0.0
    load_kwh: float = 0.0
    charge_kwh: float = 0.0
    discharge_kwh: float = 0.0
    import_cost: float = 0.0
    export_revenue: float = 0.0
    max_import_kw: float = 0.0
    max_export_kw: float = 0.0
    peak_15min_import_kw: float = 0.0
    _interval: int | None = field(default=None, repr=False)
    _interval_kwh: float = field(default=0.0, repr=False)

    def add(self, t_utc: datetime, price: float, dt_s: float, load: float, pv: float,
            pv_available: float, bess: float, grid: float) -> None:
        h = dt_s / 3600
        imp, exp = max(grid, 0.0) * h, max(-grid, 0.0) * h
        self.import_kwh += imp
        self.export_kwh += exp
        self.pv_kwh += pv * h
        self.pv_available_kwh += pv_available * h
        self.load_kwh += load * h
        self.charge_kwh += max(-bess, 0.0) * h
        self.discharge_kwh += max(bess, 0.0) * h
        self.import_cost += imp * price
        self.export_revenue += exp * self.tariff.export_price
        self.max_import_kw = max(self.max_import_kw, grid)
        self.max_export_kw = max(self.max_export_kw, -grid)
        interval = int(t_utc.timestamp() // 900)
        if interval != self._interval:
            self._close_interval()
            self._interval = interval
        self._interval_kwh += grid * h

    def _close_interval(self) -> None:
        self.peak_15min_import_kw = max(self.peak_15min_import_kw, self._interval_kwh / 0.25)
        self._interval_kwh = 0.0

    def kpis(self) -> dict[str, float]:
        peak = max(self.peak_15min_import_kw, self._interval_kwh / 0.25)  # open interval counts
        energy_cost = self.import_cost - self.export_revenue
        demand_cost = peak * self.tariff.demand_charge_per_kw
        return {
            "import_kwh": self.import_kwh, "export_kwh": self.export_kwh, "pv_kwh": self.pv_kwh,
            "pv_available_kwh": self.pv_available_kwh,
            "pv_curtailed_kwh": self.pv_available_kwh - self.pv_kwh, "load_kwh": self.load_kwh,
            "charge_kwh": self.charge_kwh, "discharge_kwh": self.discharge_kwh,
            "import_cost": self.import_cost, "export_revenue": self.export_revenue,
            "energy_cost": energy_cost, "peak_15min_import_kw": peak, "demand_cost": demand_cost,
            "total_cost": energy_cost + demand_cost, "max_import_kw": self.max_import_kw,
            "max_export_kw": self.max_export_kw,
        }

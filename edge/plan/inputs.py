"""What goes into a plan: the `PlanInput` the LP is built from, its validation, and
`build_input`, which takes prices, limits and batteries from the site configuration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from edge.config import BatteryDevice, Config, TariffConfig
from edge.control.instructions import PRIORITY, Instruction
from edge.roles.battery import reserve_floors
from edge.roles.role import Demand

inf = math.inf
COMMITMENT_SOURCES = ("grid_operator", "park")


@dataclass(frozen=True)
class PlanBattery:
    id: str
    capacity_kwh: float
    soc0_pct: float
    soc_min_pct: float
    soc_max_pct: float
    max_charge_kw: float
    max_discharge_kw: float
    charge_efficiency: float
    discharge_efficiency: float


@dataclass(frozen=True)
class PlanInput:
    start: datetime  # aware, start of step 0 on the step grid
    step_s: int  # 300, 900, ...
    load_kw: np.ndarray  # per-step average forecasts (n,)
    pv_kw: np.ndarray  # available PV (n,), may be curtailed by the plan
    import_price: np.ndarray  # per kWh (n,)
    export_price: np.ndarray  # per kWh (n,)
    batteries: tuple[PlanBattery, ...]
    demand_charge_per_kw: float = 0.0
    peak_so_far_kw: float = 0.0  # billing-period peak already reached
    import_limit_kw: float = inf
    export_limit_kw: float = inf
    grid_max_kw: np.ndarray | None = None  # commitments per step (DR/dispatch), NaN/inf = none
    grid_min_kw: np.ndarray | None = None
    commitment_ids: tuple[str, ...] | None = None  # per step: ids binding it ("" none), for reasons
    reserve_soc_pct: float = 0.0
    degradation_cost_per_kwh: float = 0.0  # per kWh of battery throughput (charge + discharge)
    terminal_value_per_kwh: float | None = None
    first_step_s: float | None = None  # step 0 is shorter when a plan starts mid-step (now)
    # Energy devices need by a deadline (EV sessions), from the last decision; demands.py.
    demands: tuple[Demand, ...] = ()
    demand_from_battery: bool = False  # config.control.ev_from_battery
    valley_price: float | None = None  # the tariff's cheapest period (None: the horizon's)
    # Zones the HVAC conditions and thermal storage tanks (edge/plan/thermal.py).
    zones: tuple = ()
    tanks: tuple = ()

    @property
    def now(self) -> datetime:
        """The moment of planning: where step 0 begins."""
        return self.start + timedelta(seconds=self.step_s - (self.first_step_s or self.step_s))

    @property
    def n(self) -> int:
        return len(self.load_kw)

    @property
    def dt_h(self) -> np.ndarray:
        dt = np.full(self.n, self.step_s / 3600.0)
        if self.first_step_s is not None and self.n:
            dt[0] = self.first_step_s / 3600.0
        return dt


def check(inp: PlanInput) -> None:
    """Refuse malformed input with the field and the fix (a bad plan is worse than none)."""
    n = inp.n
    if n < 1:
        raise ValueError("load_kw: the horizon needs at least one step")
    if inp.start.tzinfo is None:
        raise ValueError("start: must be timezone-aware (UTC)")
    if inp.step_s <= 0:
        raise ValueError("step_s: must be > 0 seconds")
    if inp.first_step_s is not None and not 0 < inp.first_step_s <= inp.step_s:
        raise ValueError("first_step_s: must lie in (0, step_s]")
    for name in ("load_kw", "pv_kw", "import_price", "export_price"):
        a = np.asarray(getattr(inp, name))
        if a.shape != (n,):
            raise ValueError(f"{name}: expected {n} values (one per step), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: contains NaN or inf; fill gaps before planning")
    if np.any(np.asarray(inp.load_kw) < 0) or np.any(np.asarray(inp.pv_kw) < 0):
        raise ValueError("load_kw/pv_kw: must be >= 0 (sign convention: PV >= 0, loads >= 0)")
    for name in ("grid_max_kw", "grid_min_kw"):
        a = getattr(inp, name)
        if a is not None and np.asarray(a).shape != (n,):
            raise ValueError(f"{name}: expected {n} values or None")
    if inp.commitment_ids is not None and len(inp.commitment_ids) != n:
        raise ValueError(f"commitment_ids: expected {n} labels (one per step) or None")
    if inp.import_limit_kw < 0 or inp.export_limit_kw < 0:
        raise ValueError("import_limit_kw/export_limit_kw: must be >= 0 (inf = none)")
    if inp.demand_charge_per_kw < 0 or inp.degradation_cost_per_kwh < 0:
        raise ValueError("demand_charge_per_kw/degradation_cost_per_kwh: must be >= 0")
    ids = [b.id for b in inp.batteries]
    if len(set(ids)) != len(ids):
        raise ValueError("batteries: ids must be unique")
    ids = [d.id for d in inp.demands]
    if len(set(ids)) != len(ids):
        raise ValueError("demands: one per device (ids must be unique)")
    for d in inp.demands:
        if not (math.isfinite(d.energy_kwh) and d.energy_kwh >= 0):
            raise ValueError(f"demands[{d.id}]: energy_kwh must be finite and >= 0")
        if not (math.isfinite(d.max_kw) and d.max_kw > 0):
            raise ValueError(f"demands[{d.id}]: max_kw must be finite and > 0")
        if d.deadline.tzinfo is None:
            raise ValueError(f"demands[{d.id}]: deadline must be timezone-aware")
    for b in inp.batteries:
        if b.capacity_kwh <= 0 or b.max_charge_kw < 0 or b.max_discharge_kw < 0:
            raise ValueError(f"batteries[{b.id}]: capacity must be > 0 and power limits >= 0")
        if not 0 < b.charge_efficiency <= 1 or not 0 < b.discharge_efficiency <= 1:
            raise ValueError(f"batteries[{b.id}]: efficiencies must lie in (0, 1]")
        if not 0 <= b.soc_min_pct < b.soc_max_pct <= 100:
            raise ValueError(f"batteries[{b.id}]: need 0 <= soc_min_pct < soc_max_pct <= 100")
        if not 0 <= b.soc0_pct <= 100:
            raise ValueError(f"batteries[{b.id}]: soc0_pct {b.soc0_pct} outside 0..100")


def tariff_prices(tariff: TariffConfig, tz: str, start: datetime, step_s: int, n: int,
                  first_step_s: float | None = None) -> np.ndarray:
    """Import price per step: the time-weighted mean of the tariff over each step's minutes
    in local time (a step straddling a period boundary pays the blend)."""
    table = np.array([tariff.price_at(datetime(2000, 1, 1, m // 60, m % 60).time())
                      for m in range(1440)])
    zone = ZoneInfo(tz)
    minutes = max(1, math.ceil(step_s / 60))
    m0 = np.empty(n, dtype=int)
    for k in range(n):
        t = (start + timedelta(seconds=k * step_s)).astimezone(zone)
        m0[k] = t.hour * 60 + t.minute
    prices = table[(m0[:, None] + np.arange(minutes)) % 1440].mean(axis=1)
    if first_step_s is not None and n:
        skip = minutes - max(1, math.ceil(first_step_s / 60))
        prices[0] = table[(m0[0] + np.arange(skip, minutes)) % 1440].mean()
    return prices


def commitment_window(commitments: Sequence[Instruction], start: datetime, step_s: int,
                      n: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Grid bounds per step from DR and dispatch instructions (grid_operator, park), and
    per step the ids of the instructions that bind it (joined by "+", "" for none).

    An instruction binds every step it overlaps, even partly (the plan is conservative; the
    cycle applies it to the second). A target binds as an equality: the cycle follows the
    commitment's target, not the plan's. Bounds combine like the instruction book: the most
    restrictive wins, and one that contradicts a higher-priority bound is dropped there."""
    t0 = start.timestamp()
    s = t0 + np.arange(n) * step_s
    e = s + step_s
    lo, hi = np.full(n, -inf), np.full(n, inf)
    ids: list[list[str]] = [[] for _ in range(n)]
    for i in sorted((c for c in commitments if c.source in COMMITMENT_SOURCES),
                    key=lambda c: (PRIORITY[c.source], c.start, c.id)):
        on = (s < i.end.timestamp()) & (e > i.start.timestamp())
        c_lo, c_hi = i.grid_min_kw, i.grid_max_kw
        if not math.isnan(i.grid_target_kw):
            t = min(max(i.grid_target_kw, c_lo), c_hi)
            c_lo = c_hi = t
        new_lo, new_hi = np.maximum(lo, c_lo), np.minimum(hi, c_hi)
        ok = on & (new_lo <= new_hi)
        lo, hi = np.where(ok, new_lo, lo), np.where(ok, new_hi, hi)
        for k in np.flatnonzero(ok):
            ids[k].append(i.id)
    return (np.where(np.isinf(hi), np.nan, hi), np.where(np.isinf(lo), np.nan, lo),
            tuple("+".join(x) for x in ids))


def _battery(b: BatteryDevice, soc_pct: dict[str, float], floors: dict[str, float]) -> PlanBattery:
    """The battery as the plan sees it: a microgrid's critical reserve raises its floor
    (never above the SoC it has now, which the plan then holds rather than discharges)."""
    if b.id not in soc_pct:
        raise ValueError(f"soc_pct: no state of charge for battery {b.id!r}; pass every "
                         "configured battery's SoC or plan without that battery")
    soc = float(soc_pct[b.id])
    floor = max(b.soc_min_pct, min(floors.get(b.id, b.soc_min_pct), soc))
    return PlanBattery(b.id, b.capacity_kwh, soc, floor,
                       b.soc_max_pct, b.max_charge_kw, b.max_discharge_kw,
                       b.charge_efficiency, b.discharge_efficiency)


def build_input(config: Config, start: datetime, step_s: int, load_kw, pv_kw,
                soc_pct: dict[str, float], peak_so_far_kw: float = 0.0,
                commitments: Sequence[Instruction] = (), *, now: datetime | None = None,
                battery_ids: Sequence[str] | None = None,
                demands: Sequence[Demand] = ()) -> PlanInput:
    """A `PlanInput` for the site: prices from `config.tariff` (local time), limits from
    `config.control`, batteries from the devices (those in `battery_ids`, default all),
    reserve, degradation and end value from `config.planner`, and the energy `demands`
    (those with energy still to deliver). With `now` inside step 0 the plan starts now and
    step 0 is the rest of that step."""
    load = np.asarray(load_kw, dtype=float)
    pv = np.asarray(pv_kw, dtype=float)
    n = len(load)
    first = None
    if now is not None:
        first = (start + timedelta(seconds=step_s) - now).total_seconds()
        if not 0 < first <= step_s:
            raise ValueError("now: must lie inside step 0 (start <= now < start + step_s)")
    wanted = None if battery_ids is None else set(battery_ids)
    stores = config.devices_that("stores_energy")
    floors = reserve_floors(stores, config)
    bats = tuple(_battery(b, soc_pct, floors) for b in stores
                 if wanted is None or b.id in wanted)
    g_max, g_min, labels = commitment_window(commitments, start, step_s, n)
    ctl, plan = config.control, config.planner
    return PlanInput(
        start=start, step_s=step_s, load_kw=load, pv_kw=pv,
        import_price=tariff_prices(config.tariff, config.site.timezone, start, step_s, n, first),
        export_price=np.full(n, config.tariff.export_price),
        batteries=bats,
        demand_charge_per_kw=config.tariff.demand_charge_per_kw,
        peak_so_far_kw=peak_so_far_kw,
        import_limit_kw=inf if ctl.import_limit_kw is None else ctl.import_limit_kw,
        export_limit_kw=inf if ctl.export_limit_kw is None else ctl.export_limit_kw,
        grid_max_kw=None if np.all(np.isnan(g_max)) else g_max,
        grid_min_kw=None if np.all(np.isnan(g_min)) else g_min,
        commitment_ids=labels if any(labels) else None,
        reserve_soc_pct=plan.reserve_soc_pct,
        degradation_cost_per_kwh=plan.degradation_cost_per_kwh,
        terminal_value_per_kwh=plan.terminal_value_per_kwh,
        first_step_s=first,
        demands=tuple(d for d in demands if d.energy_kwh > 0),
        demand_from_battery=ctl.ev_from_battery,
        valley_price=min(p.price for p in config.tariff.periods),
    )

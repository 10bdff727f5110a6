"""The thermal part of the plan: zones the HVAC conditions and tanks that store cold or
heat, as columns and rows on the LP (model.py's block allocator), and their part of a
solution. Pre-cooling before a peak price or a DR window is not a rule anywhere: it is what
the cheapest schedule does once the zone's temperature must stay in its band.

Per zone z and step t (the exact RC step of edge/roles/zone.py, a = exp(-dt/RC)):
  p[z,t]  electric kW, 0..rated          T[z,t] zone temperature at the end of step t
  T[t] = a T[t-1] + (1 - a) (T_out + R gains - sign R COP_t p[t])
  lo[t] - below[t] <= T[t] <= hi[t] + above[t]     below, above >= 0 (K)
The band is soft only so a zone that starts outside it, or a plant too small for a heat
wave, gives a plan that says by how much rather than none: a kelvin-hour outside costs
COMFORT_WEIGHT times what missing a DR commitment by the electric kWh that move the zone by
1 K (C / COP) costs, so the band wins over economics and over DR.
Per tank s: ch, dis electric kW; e thermal kWh in its SoC window;
  e[t] = (1 - loss dt) e[t-1] + dt COP (ch - dis), ending no lower than it started (soft,
  bought back at the horizon's top price) or, with `terminal_value_per_kwh` (as for the
  batteries), its end energy worth that much per electric kWh it takes to make, e / COP.
  Both add to the balance as load (dis relieves).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COMFORT_WEIGHT = 10.0  # see above
_EPS_KW = 1e-6  # per kWh of HVAC electricity: rest rather than run for nothing


@dataclass(frozen=True)
class PlanZone:
    id: str
    rated_kw: float
    r_k_per_kw: float
    c_kwh_per_k: float
    t0_c: float  # zone temperature now
    t_out_c: np.ndarray  # (n,) outdoor forecast
    gains_kw: np.ndarray  # (n,) thermal gains forecast
    cop: np.ndarray  # (n,) COP per step (at the outdoor forecast)
    band_lo_c: np.ndarray  # (n,)
    band_hi_c: np.ndarray  # (n,)
    sign: float = 1.0  # +1 cooling, -1 heating


@dataclass(frozen=True)
class PlanTank:
    id: str
    capacity_kwh: float  # thermal
    soc0_pct: float
    soc_min_pct: float
    soc_max_pct: float
    max_charge_kw: float  # electric
    max_discharge_kw: float  # electric equivalent relieved
    cop: float
    loss_pct_per_h: float


@dataclass
class ThermalPlan:
    kw: dict[str, np.ndarray] = field(default_factory=dict)  # (n,) per device, + draws
    tank_kwh: dict[str, np.ndarray] = field(default_factory=dict)  # (n+1,) thermal, [0] now
    zone_c: dict[str, np.ndarray] = field(default_factory=dict)  # (n+1,) [0] is now
    violation_kh: float = 0.0  # kelvin-hours outside the bands


def check(inp) -> None:
    n = inp.n
    for z in inp.zones:
        for name in ("t_out_c", "gains_kw", "cop", "band_lo_c", "band_hi_c"):
            a = np.asarray(getattr(z, name), dtype=float)
            if a.shape != (n,) or not np.all(np.isfinite(a)):
                raise ValueError(f"zones[{z.id}].{name}: expected {n} finite values")
        if min(z.r_k_per_kw, z.c_kwh_per_k, z.rated_kw) <= 0 or np.any(np.asarray(z.cop) <= 0):
            raise ValueError(f"zones[{z.id}]: r, c, rated_kw and cop must be > 0")
    for s in inp.tanks:
        if s.capacity_kwh <= 0 or s.cop <= 0:
            raise ValueError(f"tanks[{s.id}]: capacity_kwh and cop must be > 0")


def max_draw_kw(inp) -> float:
    return sum(z.rated_kw for z in inp.zones) + sum(s.max_charge_kw for s in inp.tanks)


def add(m, inp, dt: np.ndarray, commit: float, balance: np.ndarray, top_price: float) -> None:
    """`commit`: the LP's price of a kWh outside a DR or dispatch commitment."""
    n = inp.n
    for z in inp.zones:
        p = m.col(f"hvac:{z.id}", _EPS_KW * dt, 0.0, z.rated_kw, n)
        t = m.col(f"zone:{z.id}", 0.0, -np.inf, np.inf, n)
        a = np.exp(-dt / (z.r_k_per_kw * z.c_kwh_per_k))
        rhs = (1 - a) * (np.asarray(z.t_out_c) + z.r_k_per_kw * np.asarray(z.gains_kw))
        rhs[0] += a[0] * z.t0_c
        dyn = m.row(f"zone_dyn:{z.id}", rhs, rhs, n)
        m.coef(dyn, t, 1.0)
        m.coef(dyn[1:], t[:-1], -a[1:])
        m.coef(dyn, p, (1 - a) * z.sign * z.r_k_per_kw * np.asarray(z.cop))
        w = COMFORT_WEIGHT * commit * max(z.c_kwh_per_k / np.min(z.cop), 1.0) * dt
        below = m.col(f"below:{z.id}", w, 0.0, np.inf, n)
        above = m.col(f"above:{z.id}", w, 0.0, np.inf, n)
        lo = m.row(f"band_lo:{z.id}", z.band_lo_c, np.inf, n)
        m.coef(lo, t, 1.0)
        m.coef(lo, below, 1.0)
        hi = m.row(f"band_hi:{z.id}", -np.inf, z.band_hi_c, n)
        m.coef(hi, t, 1.0)
        m.coef(hi, above, -1.0)
        m.coef(balance, p, -1.0)
    value = inp.terminal_value_per_kwh
    for s in inp.tanks:
        e_lo, e_hi = s.soc_min_pct * s.capacity_kwh / 100, s.soc_max_pct * s.capacity_kwh / 100
        e0 = s.soc0_pct * s.capacity_kwh / 100
        ch = m.col(f"tch:{s.id}", _EPS_KW * dt, 0.0, s.max_charge_kw, n)
        dis = m.col(f"tdis:{s.id}", _EPS_KW * dt, 0.0, s.max_discharge_kw, n)
        e_cost = np.zeros(n)
        if value is not None:
            e_cost[-1] = -value / s.cop
        e = m.col(f"te:{s.id}", e_cost, min(e_lo, e0), max(e_hi, e0), n)
        keep = 1 - s.loss_pct_per_h / 100 * dt
        rhs = np.zeros(n)
        rhs[0] = keep[0] * e0
        soc = m.row(f"tsoc:{s.id}", rhs, rhs, n)
        m.coef(soc, e, 1.0)
        m.coef(soc[1:], e[:-1], -keep[1:])
        m.coef(soc, ch, -dt * s.cop)
        m.coef(soc, dis, dt * s.cop)
        if value is None:
            short = m.col(f"tshort:{s.id}", top_price / s.cop, 0.0, np.inf, 1)
            end = m.row(f"tend:{s.id}", e0, np.inf, 1)
            m.coef(end, e[-1:], 1.0)
            m.coef(end, short, 1.0)
        m.coef(balance, ch, -1.0)
        m.coef(balance, dis, 1.0)


def result(inp, cols: dict[str, slice], x: np.ndarray, dt: np.ndarray) -> ThermalPlan:
    out = ThermalPlan()
    for z in inp.zones:
        out.kw[z.id] = np.clip(x[cols[f"hvac:{z.id}"]], 0.0, z.rated_kw)
        out.zone_c[z.id] = np.concatenate([[z.t0_c], x[cols[f"zone:{z.id}"]]])
        out.violation_kh += float(np.sum((x[cols[f"below:{z.id}"]]
                                          + x[cols[f"above:{z.id}"]]) * dt))
    for s in inp.tanks:
        out.kw[s.id] = x[cols[f"tch:{s.id}"]] - x[cols[f"tdis:{s.id}"]]
        out.tank_kwh[s.id] = np.concatenate([[s.soc0_pct * s.capacity_kwh / 100],
                                             x[cols[f"te:{s.id}"]]])
    return out

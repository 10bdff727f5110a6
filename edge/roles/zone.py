"""A conditioned zone as a first-order RC model, shared by the HVAC role (how long a shed
can last before the band is reached), the planner (the zone temperature per step) and the
parameter fit. One thermal resistance R (K/kW) to outdoors, one capacitance C (kWh/K);
gains (sun, people, equipment) in kW thermal; the HVAC moves COP x its electric kW.

    C dT/dt = (T_out - T)/R + gains - sign * COP * P_el       (sign +1 cooling, -1 heating)

Exact over a step with constant inputs: T' = T_eq + (T - T_eq) exp(-dt/(R C)), with
T_eq = T_out + R (gains - sign COP P_el). Exact discretisation keeps the model stable at any
step length, so the 15-min plan and the 1-s simulator agree on the same R and C."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import time

# A band narrower than this cannot be held: sensor resolution (0.1-0.5 K) and one cycle's
# drift would read as violations while the plant hunts across it.
MIN_BAND_K = 1.0


@dataclass(frozen=True, slots=True)
class Rc:
    r_k_per_kw: float
    c_kwh_per_k: float
    sign: float = 1.0  # +1 cooling, -1 heating

    @property
    def tau_h(self) -> float:
        return self.r_k_per_kw * self.c_kwh_per_k

    def equilibrium(self, t_out: float, gains_kw: float, cooling_kw_th: float) -> float:
        return t_out + self.r_k_per_kw * (gains_kw - self.sign * cooling_kw_th)

    def step(self, t: float, hours: float, t_out: float, gains_kw: float,
             cooling_kw_th: float) -> float:
        eq = self.equilibrium(t_out, gains_kw, cooling_kw_th)
        return eq + (t - eq) * math.exp(-hours / self.tau_h)

    def hours_to(self, t: float, limit: float, t_out: float, gains_kw: float,
                 cooling_kw_th: float = 0.0) -> float:
        """How long from `t` until the zone reaches `limit` (inf: it never does)."""
        eq = self.equilibrium(t_out, gains_kw, cooling_kw_th)
        if t == limit:
            return 0.0
        if not min(t, eq) < limit < max(t, eq):
            return math.inf  # drifting away from it, or settling before it
        return self.tau_h * math.log((t - eq) / (limit - eq))


def cop_at(cop: float, ref_c: float, slope_per_k: float, t_out: float, sign: float = 1.0) -> float:
    """COP at outdoor temperature `t_out`: a chiller loses `slope_per_k` of its rated COP per
    K hotter than `ref_c`, a heat pump per K colder. Never below 1."""
    return max(cop * (1.0 - slope_per_k * sign * (t_out - ref_c)), 1.0)


def minute(t: time) -> int:
    return t.hour * 60 + t.minute


def in_period(m: int, start: time, end: time) -> bool:
    a, b = minute(start), minute(end) or 1440
    return (a <= m < b) if a < b else (m >= a or m < b)

"""The site side of the PCC breaker: while the breaker is closed onto a live grid the grid
takes the residual; otherwise the grid-forming PCS must, within its power (beyond it for
`sim.overload_s` at most, up to `sim.overload_pct`) and its energy, or the island collapses
(every device on the bus goes dark). A PCS that transfers on its own trips the breaker and
forms at its own instants (MapBatteryPcs.transfer). Surplus a forming battery cannot absorb
raises the island's frequency and PV backs off (frequency-watt). A forming PCS that sees the
grid back pulls its frequency towards the grid's until the phase across the breaker closes
(its synchronising function).

Unserved critical energy is counted with the loads' ride-through: a critical load's break no
longer than its hold-up (`sim.ride_through_s`) is no interruption; a longer one counts in
full, from its first instant. `dark_s` is every instant a critical load was unsupplied,
ridden through or not."""

from __future__ import annotations

import math
from collections.abc import Callable

from hil.devices.base import SimulatedDevice
from hil.devices.breaker import MapBreakerSim
from hil.devices.mapped import MapBatteryPcs, MapSimDevice

_SLIP_HZ = 0.1  # the most a synchronising PCS detunes from the grid
_SYNC_TAU_S = 2.0  # how fast its phase closes on the grid's once within reach


class Pcc:
    def __init__(self, devices: dict[str, SimulatedDevice]) -> None:
        self.breaker = next((d for d in devices.values() if isinstance(d, MapBreakerSim)), None)
        self.pcs = [d for d in devices.values() if isinstance(d, MapBatteryPcs)]
        self.bus = [d for d in devices.values() if d.account in ("pv", "load")
                    and not d.balancing and d is not self.breaker]
        self.critical = [d for d in devices.values() if getattr(d.cfg, "critical", False)]
        self.live = True
        self.collapses = 0
        self.unserved_critical_kwh = 0.0
        self.critical_kwh = 0.0
        self.dark_s = 0.0  # simulated seconds with a critical load unsupplied
        self.longest_dark_s = 0.0  # the longest break of any critical load
        self.interruptions = 0  # critical loads' breaks longer than their ride-through
        self._breaks: dict[str, list[float]] = {}  # load id -> [break so far s, its kWh]

    def attach(self, now: Callable[[], float]) -> None:
        """`now()` brings the physics up to the clock and returns the simulated second: a
        request to a unit of the island first calls it, so a command is timed from when it
        arrives and a reading is not a physics tick old (the transfer is a matter of tenths
        of a second)."""
        if self.breaker is None:
            return
        for d in (self.breaker, *self.pcs, *self.bus):
            if isinstance(d, MapSimDevice):
                d.sync = now

    def act(self, t_s: float) -> None:
        """What the PCS do on their own at t_s, before the sub-step that starts there: trip
        the breaker, form (auto transfer)."""
        if self.breaker is not None:
            for p in self.pcs:
                p.transfer(self.breaker, t_s)

    def due_after(self, t_s: float) -> float:
        """The next instant after t_s a breaker operation, a PCS's forming or its trip of the
        breaker completes (a physics sub-step ends there, so it takes effect then, not at the
        next whole second)."""
        dues = [t for d in (self.breaker, *self.pcs) if d is not None
                and (t := d.due_s()) is not None and t > t_s + 1e-9]
        if self.breaker is not None:
            dues += [t for p in self.pcs if (t := p.transfer_due_s(self.breaker)) is not None
                     and t > t_s + 1e-9]
        return min(dues, default=math.inf)

    def settle(self, pv: float, bess: float, load: float,
               dt_s: float) -> tuple[float, float, float, float]:
        """(pv, bess, load, grid) of the sub-step once the PCC has settled it."""
        b = self.breaker
        if b is None:
            return pv, bess, load, load - pv - bess
        forming = [p for p in self.pcs if p.forming]
        for p in forming:  # a forming PCS did not move in its own step: the bus sets it
            bess -= p.power_kw
        if b.closed and b.grid_up:
            self.live = True
            b.bus_v, b.bus_hz, b.phase_deg = b.grid_v, b.grid_hz, 0.0
            for p in forming:
                bess += self._run(p, p.power_kw, dt_s)
            self._account(dt_s)
            return pv, bess, load, load - pv - bess
        if b.closed or not forming or not (self.live or self._can_start(forming)):
            return self._dark(b, forming, dt_s)
        need = (load - pv - bess) / len(forming)
        supplied = sum(self._run(p, need, dt_s) for p in forming)
        excess = supplied - (load - pv - bess)  # > 0: the batteries could not take it all
        if supplied < load - pv - bess - 0.05 * len(forming):
            return self._dark(b, forming, dt_s)  # empty or over its power: the island collapses
        if excess > 0.05:
            cut = min(excess, pv)
            for d in self.bus:
                if d.account == "pv" and pv > 0:
                    d.power_kw *= (pv - cut) / pv
            pv -= cut
        self.live = True
        charge = -min(supplied, 0.0) / max(sum(p.cfg.max_charge_kw for p in forming), 1e-9)
        b.bus_v = b.nominal_v
        b.bus_hz = b.nominal_hz + 0.5 * charge + (1.0 if excess > 0.05 else 0.0)
        if b.grid_up:  # synchronise: slip towards the grid until the phase closes
            want = b.phase_deg * (1.0 - math.exp(-dt_s / _SYNC_TAU_S))
            turn = max(-_SLIP_HZ * 360 * dt_s, min(_SLIP_HZ * 360 * dt_s, want))
            b.phase_deg -= turn
            b.bus_hz = b.grid_hz - turn / (360 * dt_s) if dt_s > 0 else b.grid_hz
        else:
            b.phase_deg = 180.0  # nothing to compare with
        self._account(dt_s)
        return pv, supplied + bess, load, 0.0

    @staticmethod
    def _run(p: MapBatteryPcs, kw: float, dt_s: float) -> float:
        """The forming PCS at `kw` for dt_s (no ramp: it is the voltage source); beyond its
        rating only while its overload time lasts (back within it, the time starts again)."""
        rated = p.cfg.max_discharge_kw
        cap = rated
        if kw > rated + 1e-9 and p.over_s < p.sim.overload_s:
            cap = rated * p.sim.overload_pct / 100
            p.over_s += dt_s
        elif kw <= rated + 1e-9:
            p.over_s = 0.0
        kw = max(-p.cfg.max_charge_kw, min(cap, kw))
        p.battery.power_kw, p.battery.max_discharge_kw = kw, cap
        try:
            p.power_kw = p.battery.step(kw, dt_s)
        finally:
            p.battery.max_discharge_kw = rated
        return p.power_kw

    @staticmethod
    def _can_start(forming: list[MapBatteryPcs]) -> bool:
        return any(p.battery.soc_pct > p.battery.soc_min_pct + 0.5 for p in forming)

    def _dark(self, b: MapBreakerSim, forming: list[MapBatteryPcs],
              dt_s: float) -> tuple[float, float, float, float]:
        if self.live:
            self.collapses += 1
        self.live = False
        for p in forming:
            p.power_kw = p.battery.power_kw = 0.0
            p.drop_out()
        for d in self.bus:
            d.power_kw = 0.0
        b.bus_v = b.bus_hz = 0.0
        b.phase_deg = 0.0
        self._account(dt_s)
        return 0.0, 0.0, 0.0, 0.0

    def _account(self, dt_s: float) -> None:
        h, dark = dt_s / 3600, False
        for d in self.critical:
            kwh = d.cfg.rated_kw * h
            self.critical_kwh += kwh
            if self.live and d.power_kw >= 0.5 * d.cfg.rated_kw:
                self._breaks.pop(d.id, None)  # supplied: a break it rode through is forgotten
                continue
            dark = True
            brk = self._breaks.setdefault(d.id, [0.0, 0.0])
            was_within = brk[0] <= d.sim.ride_through_s + 1e-9
            brk[0] += dt_s
            self.longest_dark_s = max(self.longest_dark_s, brk[0])
            if brk[0] <= d.sim.ride_through_s + 1e-9:
                brk[1] += kwh  # within its hold-up so far
                continue
            self.interruptions += was_within  # it has just outlasted its hold-up
            self.unserved_critical_kwh += kwh + brk[1]
            brk[1] = 0.0
        self.dark_s += dt_s if dark else 0.0

    def kpis(self) -> dict[str, float]:
        return {"critical_kwh": self.critical_kwh, "dark_s": self.dark_s,
                "longest_dark_s": self.longest_dark_s, "interruptions": self.interruptions,
                "unserved_critical_kwh": self.unserved_critical_kwh, "collapses": self.collapses}

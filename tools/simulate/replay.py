"""The rule-based reference: the daemon's own decision (edge/control/decide.py, planner off)
replayed in Python on the scenario's true series each `control.cycle_s`, with the write
rules of the daemon (deadband, revert re-writes, shed before restore) and the HIL's physics
for batteries, PV ramps, switchable loads, HVACs and tanks (their HIL simulators, stepped
here: tools/simulate/thermal.py). A replay, not a second HIL run: it takes
seconds instead of doubling the wall time of every run, and without Modbus latency or the
accelerated clock's coarse cycles it is the rules at their best, so the planner is compared
with a fair baseline (`--no-planner` gives the HIL figure for the rules when wanted).

Switchable loads draw their rating while on, on top of the scenario's load, and DC
converters carry their DC loads and DC PV (their `sim` profiles) through the AC side with
the droop the HIL gives them (hil/devices/dcbus.py), so the replay meets the same site.
EV chargers and their cars are tools/simulate/evpark.py: the cars of their `sim:` blocks
draw the current decide() gives them, and the image has the chargers' readings as the
OCPP driver reports them. `uncontrolled` is the site with its car park left alone: the
controller knows nothing of the chargers (their cars are load at the PCC to it) and every
car draws its maximum from arrival until it is full or leaves."""

from __future__ import annotations

import math
from datetime import timedelta
from zoneinfo import ZoneInfo

import numpy as np

from drivers.base import Quality, Reading
from edge.config import Config
from edge.control.decide import Controller
from edge.control.instructions import InstructionBook
from edge.control.kernel import load_kernel
from edge.image.image import DeviceState, ProcessImage
from edge.setpoints.writer import Writer, limit_violated
from hil.config import sim_of
from hil.devices.dcbus import EFFICIENCY
from hil.physics import Battery, clear_sky_kw, load_kw, ramp_toward
from hil.scenario import Truth, Window
from hil.site import Ledger
from tools.simulate.events import dr_instruction
from tools.simulate.evkpis import EvLedger, ev_kpis, session_rows
from tools.simulate.evpark import EvPark, chargers_of, without_chargers
from tools.simulate.thermal import INTERVAL_S, ThermalPlant
from tools.simulate.tracks import Excess


class _Site:
    """The replay's physics: what each device does with the setpoints that reached it."""

    def __init__(self, cfg: Config, groups: dict[str, list], soc0: dict[str, float]) -> None:
        self.site = cfg.site
        self.tz = ZoneInfo(cfg.site.timezone)
        self.dc_kw: dict[str, float] = {}
        self.bats, self.pvs = groups["battery"], groups["pv"]
        self.loads, self.convs = groups["load"], groups["dcdc"]
        self.meters = groups["meter"]
        self.dc_sim = {c.id: sim_of(c) for c in self.convs}
        self.grid_id = cfg.grid_meter.id
        self.phys = {b.id: Battery(capacity_kwh=b.capacity_kwh, max_charge_kw=b.max_charge_kw,
                                   max_discharge_kw=b.max_discharge_kw, soc_pct=soc0[b.id],
                                   charge_efficiency=b.charge_efficiency,
                                   discharge_efficiency=b.discharge_efficiency,
                                   ramp_kw_per_s=b.ramp_kw_per_s) for b in self.bats}
        rated = sum(p.rated_kw for p in self.pvs)
        self.share = np.array([p.rated_kw / rated for p in self.pvs])
        self.pv_kw = {p.id: 0.0 for p in self.pvs}
        self.setpoint = {b.id: 0.0 for b in self.bats}
        self.setpoint.update({p.id: p.rated_kw for p in self.pvs})
        self.setpoint.update({d.id: float(d.safe_state == "on") for d in self.loads})
        self.setpoint.update({c.id: c.bus_nominal_v for c in self.convs})

    def stored_kwh(self) -> float:
        return sum(b.soc_pct / 100 * b.capacity_kwh for b in self.phys.values())

    def flex_kw(self) -> float:
        """What switchable loads and DC converters add to the scenario's load (AC side)."""
        dc = sum(p / EFFICIENCY if p >= 0 else p * EFFICIENCY for p in self.dc_kw.values())
        return sum(d.rated_kw for d in self.loads if self.setpoint[d.id] >= 0.5) + dc

    def dc_step(self, t) -> None:
        """Each converter's DC load less its DC PV, as the HIL's converter computes it."""
        for c in self.convs:
            s = self.dc_sim[c.id]
            pv = (clear_sky_kw(t, self.site.latitude, self.site.longitude, s.peak_kw)
                  * s.cloud_factor if s.peak_kw else 0.0)
            self.dc_kw[c.id] = load_kw(s.profile, t.astimezone(self.tz), s.base_kw, s.day_kw) - pv

    def image(self, t, dt: float, load: float, ev_kw: float, ev: dict,
              thermal: dict) -> ProcessImage:
        """The readings of the last step: `ev_kw` the cars' draw (at the PCC, not behind
        the load meters), `ev` the chargers' readings the controller gets, `thermal` the
        HVACs' and tanks'."""
        bess = sum(ph.power_kw for ph in self.phys.values())
        values = {self.grid_id: {"power_kw": load + ev_kw - sum(self.pv_kw.values()) - bess}}
        values.update(ev)
        values.update(thermal)
        values.update({m.id: {"power_kw": load} for m in self.meters if m.id != self.grid_id})
        values.update({b.id: {"power_kw": self.phys[b.id].power_kw,
                              "soc_pct": self.phys[b.id].soc_pct} for b in self.bats})
        values.update({p.id: {"power_kw": self.pv_kw[p.id], "limit_kw": self.setpoint[p.id]}
                       for p in self.pvs})
        values.update({d.id: {"power_kw": d.rated_kw * self.setpoint[d.id],
                              "on": self.setpoint[d.id]} for d in self.loads})
        for c in self.convs:
            slope = self.dc_sim[c.id].droop_pct / 100 * c.bus_nominal_v / c.rated_kw
            p = self.dc_kw.get(c.id, 0.0)
            values[c.id] = {"bus_v": self.setpoint[c.id] - slope * p, "power_kw": p,
                            "v_ref": self.setpoint[c.id]}
        return ProcessImage(t, dt, {k: DeviceState(Reading(k, v), Quality.GOOD, 0)
                                    for k, v in values.items()})

    def step(self, avail: np.ndarray, dt: float) -> tuple[float, float]:
        bess = sum(ph.step(self.setpoint[k], dt) for k, ph in self.phys.items())
        for j, p in enumerate(self.pvs):
            want = min(avail[j], self.setpoint[p.id])
            self.pv_kw[p.id] = ramp_toward(self.pv_kw[p.id], want, p.ramp_kw_per_s, dt)
        return bess, sum(self.pv_kw.values())


def replay_rules(cfg: Config, truth: Truth, duration_s: float, dr: list[Window],
                 soc0: dict[str, float], uncontrolled: bool = False) -> dict:
    """The daemon's rules (no planner) replayed on the true series. Returns ledger KPIs plus
    the stored energy at the start and end, the SoC range, the time above the import limit
    and, with EV chargers, their figures (tools/simulate/evkpis.py). `uncontrolled`: the
    car park left alone (see the module docstring)."""
    chargers = chargers_of(cfg)
    ctl_cfg = without_chargers(cfg) if uncontrolled else cfg
    controller = Controller(ctl_cfg, load_kernel())
    memory = controller.initial_memory()
    writer = Writer(ctl_cfg, {})  # its rules of what is due; the replay's physics take the values
    site = _Site(ctl_cfg, controller.groups, soc0)
    plant = ThermalPlant(ctl_cfg, controller.groups)
    park = EvPark(chargers, site.tz, uncontrolled)
    book = InstructionBook()
    for w in dr:
        book.put(dr_instruction(w))
    rated = np.array([p.rated_kw for p in site.pvs])
    ledger = Ledger(cfg.tariff)
    e0, socs = site.stored_kwh(), []
    tanks0 = plant.tank_kwh()
    dt = cfg.control.cycle_s
    n = int(round(duration_s / dt))
    evs = EvLedger(cfg, truth.start + timedelta(seconds=n * dt))
    imports = Excess()
    limit = math.inf if cfg.control.import_limit_kw is None else cfg.control.import_limit_kw
    price_minute, price = -1, 0.0
    grid15 = np.zeros(int(np.ceil(n * dt / INTERVAL_S)))
    for k in range(n):
        t, now_s = truth.start + timedelta(seconds=k * dt), k * dt
        minute = int(now_s // 60)
        if minute != price_minute:
            price_minute, price = minute, truth.price_at(t)
        site.dc_step(t)
        park.presence(t)
        load = truth.load_at(t) + site.flex_kw() + plant.kw()
        avail = np.minimum(rated, truth.pv_at(t) * site.share)
        image = site.image(t, dt, load, park.kw, {} if uncontrolled else park.values(now_s),
                           plant.values())
        decision, memory = controller.decide(image, book, memory, now_s)
        violated = limit_violated(image, decision, site.grid_id)
        due = {d.id: v for phase in writer.jobs(decision, memory, now_s, violated)
               for d, v in phase}
        memory = controller.after_writes(memory, due, now_s)
        site.setpoint.update(due)
        plant.apply(due)
        park.want(due, now_s)
        plant.step(t, now_s, dt)
        load = truth.load_at(t) + site.flex_kw() + plant.kw()
        bess, pv = site.step(avail, dt)
        ev = park.step(dt)
        grid = load + ev - pv - bess
        ledger.add(t, price, dt, load + ev, pv, float(avail.sum()), bess, grid)
        imports.add(grid - limit, dt)
        grid15[int(now_s // INTERVAL_S)] += grid * dt / INTERVAL_S
        evs.see(t, dt, park.watched())
        if site.phys:
            socs.append(sum(b.soc_pct * b.capacity_kwh for b in site.phys.values())
                        / sum(b.capacity_kwh for b in site.phys.values()))
    out = ledger.kpis()
    out.update(stored_kwh_start=e0, stored_kwh_end=site.stored_kwh(),
               tank_kwh_start=tanks0, tank_kwh_end=plant.tank_kwh(),
               soc_min_pct=min(socs, default=None), soc_max_pct=max(socs, default=None),
               import_over_min=imports.seconds / 60, import_worst_kw=imports.worst_kw,
               import_over_kwh=imports.kwh, grid_15min_kw=grid15, **plant.comfort.kpis())
    if chargers:
        outcomes = evs.outcomes()
        out.update(ev_kpis(evs.kwh, evs.valley_kwh, outcomes, imports),
                   ev_sessions_detail=session_rows(outcomes))
    return out

"""The rule-based reference: the controller without the planner - the configured control
functions and the same compiled kernel, replayed in Python on the series each
`control.cycle_s` with the HIL's battery physics. A replay, not a second HIL run: it takes
seconds instead of doubling the wall time of every run, and without Modbus latency or the
accelerated clock's coarse cycles it is the rules at their best, so the planner is compared
with a fair baseline (`--no-planner` gives the HIL figure for the rules when wanted)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from edge.config import BatteryDevice, Config, PvDevice
from edge.control import kernel as dispatch
from edge.control.bounds import run_functions
from edge.control.instructions import InstructionBook
from edge.image.image import ProcessImage
from hil.physics import Battery, ramp_toward
from hil.scenario import Truth, Window
from hil.site import Ledger
from tools.simulate.events import dr_instruction


def replay_rules(cfg: Config, truth: Truth, duration_s: float, dr: list[Window],
                 soc0: dict[str, float]) -> dict:
    """The rule-based controller (no planner) replayed on the true series: the configured
    control functions and the compiled kernel each `control.cycle_s`, writing on the same
    deadband, with the HIL's battery and PV-ramp physics. Returns ledger KPIs plus the
    stored energy at the start and end and the SoC range."""
    kernel = dispatch.load_kernel()
    ctl = cfg.control
    dt = ctl.cycle_s
    bats = [d for d in cfg.devices if isinstance(d, BatteryDevice)]
    pvs = [d for d in cfg.devices if isinstance(d, PvDevice)]
    phys = [Battery(capacity_kwh=b.capacity_kwh, max_charge_kw=b.max_charge_kw,
                    max_discharge_kw=b.max_discharge_kw, soc_pct=soc0[b.id],
                    charge_efficiency=b.charge_efficiency,
                    discharge_efficiency=b.discharge_efficiency, ramp_kw_per_s=b.ramp_kw_per_s)
            for b in bats]
    share = [p.rated_kw / sum(q.rated_kw for q in pvs) for p in pvs]
    pv_kw = np.zeros(len(pvs))
    pv_limit = np.array([p.rated_kw for p in pvs])
    written = [0.0] * len(bats)
    bess_m = np.zeros((len(bats), dispatch.NB))
    pv_m = np.zeros((len(pvs), dispatch.NV))
    book = InstructionBook()
    for w in dr:
        book.put(dr_instruction(w))
    ledger = Ledger(cfg.tariff)
    stored = lambda: sum(b.soc_pct / 100 * b.capacity_kwh for b in phys)  # noqa: E731
    e0 = stored()
    socs = []
    price_minute, price = -1, 0.0
    steps = int(round(duration_s / dt))
    for k in range(steps):
        t = truth.start + timedelta(seconds=k * dt)
        minute = int(k * dt // 60)
        if minute != price_minute:
            price_minute, price = minute, truth.price_at(t)
        load = truth.load_at(t)
        avail = np.minimum([p.rated_kw for p in pvs], truth.pv_at(t) * np.array(share))
        grid_meas = load - pv_kw.sum() - sum(b.power_kw for b in phys)
        image = ProcessImage(t, dt, {})
        bounds, _ = run_functions(ctl.functions, image, ctl, book.combine(t))
        for i, (b, ph) in enumerate(zip(bats, phys)):
            bess_m[i] = (ph.power_kw, written[i], ph.soc_pct, b.soc_min_pct, b.soc_max_pct,
                         b.max_charge_kw, b.max_discharge_kw, b.ramp_kw_per_s, 1.0)
        for j, p in enumerate(pvs):
            pv_m[j] = (pv_kw[j], p.rated_kw, pv_limit[j], p.ramp_kw_per_s, 1.0)
        res = dispatch.dispatch(kernel, grid_kw=grid_meas, import_limit_kw=bounds.import_limit_kw,
                                export_limit_kw=bounds.export_limit_kw,
                                grid_target_kw=bounds.grid_target_kw, dt_s=dt, bess=bess_m,
                                pv=pv_m)
        violated = grid_meas > bounds.import_limit_kw or -grid_meas > bounds.export_limit_kw
        band = 0.05 if violated else ctl.deadband_kw
        for i in range(len(bats)):
            if abs(res.bess_kw[i] - written[i]) > band:
                written[i] = float(res.bess_kw[i])
        for j in range(len(pvs)):
            if abs(res.pv_limit_kw[j] - pv_limit[j]) > band:
                pv_limit[j] = float(res.pv_limit_kw[j])
        bess = sum(ph.step(written[i], dt) for i, ph in enumerate(phys))
        for j, p in enumerate(pvs):
            pv_kw[j] = ramp_toward(pv_kw[j], min(avail[j], pv_limit[j]), p.ramp_kw_per_s, dt)
        pv = float(pv_kw.sum())
        ledger.add(t, price, dt, load, pv, float(avail.sum()), bess, load - pv - bess)
        if phys:
            socs.append(sum(b.soc_pct * b.capacity_kwh for b in phys)
                        / sum(b.capacity_kwh for b in phys))
    out = ledger.kpis()
    out.update(stored_kwh_start=e0, stored_kwh_end=stored(),
               soc_min_pct=min(socs, default=None), soc_max_pct=max(socs, default=None))
    return out



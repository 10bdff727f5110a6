"""Parameter identification recovers the HIL zone's R and C from its own measurements: the
simulator (hil/devices/hvac.py, 10-s physics with gains and outdoor temperature varying
inside each step) is driven with a varied capacity command for four days and sampled every
15 minutes, as the site history would hold it. Stated tolerance: R and C within 10 %."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from edge.config import parse
from edge.plan.identify import fit
from hil.devices.base import Env
from hil.devices.hvac import MapHvacSim

START = datetime.fromisoformat("2026-07-01T00:00:00+08:00")
R, C = 2.5, 12.0


def history(days: float, seed: int = 7):
    cfg = parse({
        "site": {"id": "s", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
            {"id": "ahu", "host": "127.0.0.1", "role": "hvac", "port": 1505, "map": "hvac_generic",
             "rated_kw": 20, "sim": {"zone": {"r_k_per_kw": R, "c_kwh_per_k": C}}}],
        "tariff": {"periods": [{"name": "f", "start": "00:00", "end": "00:00", "price": 1.0}]},
    }).devices[1]
    sim = MapHvacSim(cfg, 100.0)
    rng = np.random.default_rng(seed)
    times, zone, out, power, cop = [], [], [], [], []
    sub, per = 10.0, 90  # 10-s physics, 15-min samples
    for k in range(int(days * 96)):
        # A varied command, as a plan and DR events would give (more than a thermostat would).
        sim.held.update(control_mode=1.0, limit=float(rng.uniform(0, 100)), revert=0.0)
        t0 = START + timedelta(seconds=k * 900)
        times.append(t0)
        zone.append(sim.zone_c)
        out.append(sim.zone.outdoor_c(t0))
        kw = cp = 0.0
        for i in range(per):
            t = t0 + timedelta(seconds=(i + 0.5) * sub)
            sim.step(Env(k * 900 + i * sub, t, t, 31.2, 121.5), sub)
            kw += sim.power_kw / per
            cp += cfg.cop * (1 - cfg.cop_slope_per_k * (sim.t_out - cfg.cop_ref_c)) / per
        power.append(kw)
        cop.append(cp)
    zone.append(sim.zone_c)
    return times, np.array(zone), np.array(out + [out[-1]]), np.array(power), np.array(cop)


def test_identification_recovers_the_simulators_r_and_c_within_10_pct():
    times, zone, out, power, cop = history(4)
    f = fit(times, zone, out, power, cop, 900, (1.0, 1.0, 0.0))
    assert f.fitted, f.reason
    assert f.r_k_per_kw == pytest.approx(R, rel=0.10)
    assert f.c_kwh_per_k == pytest.approx(C, rel=0.10)
    assert f.rms_k < 0.1  # the fit error it reports
    assert "RMS" in f.reason


def test_without_two_days_of_history_the_configured_model_stands():
    times, zone, out, power, cop = history(1)
    f = fit(times, zone, out, power, cop, 900, (2.0, 10.0, 5.0))
    assert not f.fitted and (f.r_k_per_kw, f.c_kwh_per_k) == (2.0, 10.0)
    assert "days of history" in f.reason

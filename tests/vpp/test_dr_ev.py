"""A DR reduce event on a site whose peak is an EV charging: the DR manager's baseline
(from the metered history, the car's draw in it) sets the cap, the decision cuts the
charger to fit under it at once (without the battery discharging into the car), and the
event's M&V counts the charger's cut as the delivered reduction.

Cycle by cycle like the daemon: the site follows each decision, its PCC power goes into
the real accumulator and SQLite history, the manager ticks every minute."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from ev_site import FULL_KW, KW_PER_A, config, ev, image

from edge.control.decide import Controller
from edge.control.instructions import InstructionBook
from edge.control.kernel import load_kernel
from edge.image.balance import site_power
from edge.report.history import Accumulator, History
from edge.vpp.dr.manager import DrManager
from edge.vpp.shaping import DrEvent

SH = ZoneInfo("Asia/Shanghai")
D = date(2026, 6, 22)  # a Monday
START = datetime(2026, 6, 22, 16, 45, tzinfo=SH)
END = START + timedelta(minutes=30)
BUILDING_KW = 40.0
PEAK_KW = BUILDING_KW + FULL_KW  # the car charging flat out, every working day
STEP = timedelta(seconds=10)


def prefill(cfg, history: History) -> None:
    """Two weeks of 16:00-18:00 from PCC readings: on working days the building and one car
    at 32 A (the PCC meter sees both), at weekends 5 kW."""
    for back in range(1, 15):
        day = D - timedelta(days=back)
        meter = Accumulator()
        t = datetime(day.year, day.month, day.day, 16, 0, tzinfo=SH)
        for _ in range(2 * 60 + 1):
            if day.weekday() < 5:
                img = image(PEAK_KW, ev1=ev(32.0), ts=t)
            else:
                img = image(5.0, ts=t)
            closed = meter.add(t, 60.0, site_power(cfg, img))
            if closed is not None:
                history.put(closed)
            t += timedelta(minutes=1)


def test_a_reduce_event_cuts_the_charger_to_fit_and_counts_the_cut(tmp_path):
    cfg = config(dr={"target_ratio": 1.0, "ramp_in_s": 0})
    history = History(tmp_path / "history.sqlite")
    prefill(cfg, history)
    meter, book = Accumulator(), InstructionBook()
    mgr = DrManager(cfg, book, history, meter, tmp_path / "dr.sqlite", START - timedelta(hours=1))
    ctl = Controller(cfg, load_kernel())
    mem = ctl.initial_memory()
    try:
        t = START - timedelta(minutes=15)
        ins = mgr.add(DrEvent("ev-peak", "grid_operator", "reduce", START, END, kw=10.0,
                              notice="hour"), t)
        level = PEAK_KW - 10.0  # the baseline has the car in it
        assert [i.grid_max_kw for i in ins if "#hold" in i.id] == pytest.approx([level])

        amps, reports, cut, restoring = 32.0, [], [], []
        while t < END + timedelta(seconds=cfg.dr.restore_s + 60):
            t += STEP
            img = image(BUILDING_KW + amps * KW_PER_A, ev1=ev(amps), ts=t)
            d, mem = ctl.decide(img, book, mem, (t - START).total_seconds())
            amps = d.ev_a["ev1"]  # the charger and the car follow within the cycle
            assert d.bess_kw["bess1"] == 0.0  # the battery does not feed the car
            if START <= t < END:
                cut.append(amps)
                assert BUILDING_KW + amps * KW_PER_A <= level + 1e-6
            elif t >= END:
                restoring.append(amps)
            closed = meter.add(t, STEP.total_seconds(), site_power(cfg, img))
            if closed is not None:
                history.put(closed)
            if t.second == 0:
                reports += mgr.tick(t, img)
        room_a = (level - BUILDING_KW) / KW_PER_A  # 17.5 A: cut to fit, not paused
        assert min(cut) == max(cut) == pytest.approx(room_a, abs=0.1)
        # the bound relaxes in steps after the end (no rebound peak), then full power again
        assert restoring == sorted(restoring) and restoring[0] < 32.0 == restoring[-1]

        final = [r for r in reports if r["final"]]
        assert len(final) == 1, [r["phase"] for r in reports]
        f = final[0]
        assert [iv["baseline_kw"] for iv in f["intervals"]] == pytest.approx([PEAK_KW] * 2)
        assert f["response_ratio"] == pytest.approx(1.0, abs=0.01)
        assert f["result"] == "met"
    finally:
        mgr.close()
        history.close()

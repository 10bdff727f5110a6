"""A DR event end to end: the daemon against the HIL office building over Modbus TCP, a real
SQLite history pre-filled with the past two weeks, a reduce event taken by the daemon's
DrManager, the battery holding the PCC at baseline − kW, a staggered restore, and the final
M&V report arriving at the platform over a real broker.

The battery rests outside the event (peak shaving and export limit only, no
self-consumption), so the grid import before and after it is the building's own and every
kW below the baseline during it is the event's doing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Subscriber, wait_for
from site_harness import device, running_site, site_dict

from edge.report.history import History, Interval
from edge.vpp.shaping import DrEvent
from hil.physics import clear_sky_kw, office_load_kw

SPEED = 300.0
SH = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 6, 22, 16, 45, tzinfo=SH)  # Monday afternoon, PV fading, office busy
END = START + timedelta(minutes=30)
KW = 20.0
TOL_KW = 1.0  # one control cycle (6 simulated s here) of load ripple and meter quantisation


def natural_import_kw(t0: datetime) -> float:
    """Mean PCC import of the building without battery over the quarter hour from t0."""
    vals = []
    for s in range(0, 900, 30):
        t = t0 + timedelta(seconds=s)
        vals.append(office_load_kw(t.astimezone(SH), 25, 95)
                    - clear_sky_kw(t.astimezone(UTC), 31.23, 121.47, 120))
    return max(sum(vals) / len(vals), 0.0)


def prefill(path: Path) -> None:
    """14 past days, 16:00-18:00, as the site's own meter would have recorded them."""
    h = History(path)
    try:
        for back in range(1, 15):
            d = date(2026, 6, 22) - timedelta(days=back)
            t = datetime(d.year, d.month, d.day, 16, 0, tzinfo=SH)
            for _ in range(8):
                kw = natural_import_kw(t) if d.weekday() < 5 else 30.0
                h.put(Interval(t.astimezone(UTC), import_kwh=kw * 0.25, load_kwh=kw * 0.25,
                               covered_s=900))
                t += timedelta(minutes=15)
    finally:
        h.close()


@pytest.mark.timeout(120)
async def test_reduce_event_holds_baseline_minus_kw_and_restores_without_rebound(tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port, functions=["peak_shaving", "export_limit"])
    data["hil"]["start"] = "2026-06-22T16:35:00+08:00"
    device(data, "bess1")["sim"] = {"initial_soc_pct": 80}
    data["dr"] = {"baseline": "avg5", "ramp_in_s": 300, "restore_s": 600, "restore_steps": 3,
                  "target_ratio": 1.02, "report_s": 60}
    prefill(Path(data["storage"]["dir"]) / "history.sqlite")

    async with running_site(data, mosquitto, SPEED) as run:
        platform = Subscriber(mosquitto.host, mosquitto.port, run.daemon.link.topic("dr/#"))
        try:
            assert platform.subscribed.wait(10)
            ins = run.daemon.dr.add(DrEvent("ev-hil", "grid_operator", "reduce", START, END,
                                            kw=KW, notice="hour"), run.clock.now())
            base = run.daemon.dr.get("ev-hil").baseline
            await run.until_sim(57 * 60)  # to 17:32: restore over, last interval closed
            samples = list(run.site.samples)
            await wait_for(lambda: any(d["final"] for _, d in platform.documents()), 30,
                           "the final dr report")
            docs = [d for topic, d in platform.documents() if topic.endswith("/dr/ev-hil")]
        finally:
            platform.close()

    # the baseline: the five working days before (Mon 15 .. Fri 19 June), per quarter hour
    assert base.method == "avg5" and not base.degraded
    assert base.days == tuple(date(2026, 6, d) for d in (15, 16, 17, 18, 19))
    expected = [sum(natural_import_kw(datetime(2026, 6, d, *hm, tzinfo=SH))
                    for d in (15, 16, 17, 18, 19)) / 5 for hm in ((16, 45), (17, 0))]
    assert base.kw.tolist() == pytest.approx(expected, abs=0.01)
    levels = [b - KW * 1.02 for b in base.kw]
    holds = [i for i in ins if "#hold" in i.id]
    assert [i.grid_max_kw for i in holds] == pytest.approx(levels)

    def between(a: datetime, b: datetime) -> list:
        return [s for s in samples if a.astimezone(UTC) < s.t <= b.astimezone(UTC)]

    before = between(START - timedelta(minutes=20), START - timedelta(minutes=5))
    assert before and all(abs(s.bess_kw) < 0.5 for s in before), "battery rests before the ramp"
    # during the event the PCC stays at or below baseline - kW (battery had energy: SoC > 60 %)
    for i, t0 in enumerate((START, START + timedelta(minutes=15))):
        # (a sample on the interval's last instant may already see the next level)
        held = between(t0 + timedelta(minutes=1), t0 + timedelta(minutes=15, milliseconds=-1))
        assert len(held) >= 13
        assert max(s.grid_kw for s in held) <= levels[i] + TOL_KW, f"interval {i}"
        assert min(s.grid_kw for s in held) >= levels[i] - 3.0, "follows the level, no overshoot"
        assert all(s.soc_pct > 60 for s in held)
    # ramp-in: the import was already coming down before the start
    ramp = between(START - timedelta(minutes=4), START)
    natural = [s.load_kw - s.pv_kw for s in ramp]
    assert all(s.grid_kw < n - 1.0 for s, n in zip(ramp, natural, strict=True))
    assert ramp[-1].grid_kw <= levels[0] + TOL_KW

    # staggered restore, 3 steps of 200 s up to the baseline peak: the battery lets go in steps
    peak = max(base.kw)
    steps = [levels[-1] + (peak - levels[-1]) * k / 3 for k in (1, 2, 3)]
    # (the restore's last instruction ends at END + 10 min, exclusive: a sample on that very
    # instant already sees the released site)
    restore = between(END, END + timedelta(minutes=10) - timedelta(milliseconds=1))
    for s in restore:
        k = min(int((s.t - END.astimezone(UTC)).total_seconds() // 200), 2)
        assert s.grid_kw <= steps[k] + TOL_KW, f"restore step {k} at {s.t}"
    assert max(s.grid_kw for s in restore) <= peak + TOL_KW, "no rebound above the baseline peak"
    first, last = restore[:3], restore[-3:]
    assert min(s.bess_kw for s in first) > max(s.bess_kw for s in last) + 5, "staggered"
    after = between(END + timedelta(minutes=11), END + timedelta(minutes=16))
    assert after and all(s.bess_kw > -0.5 for s in after), "no recharge from the grid after"

    # the platform got live reports and one final one
    assert docs, "no dr/ev-hil report"
    live = [d for d in docs if not d["final"] and d["status"] == "active"]
    assert live and all(d["response_ratio"] is None or d["response_ratio"] > 0.9 for d in live)
    finals = [d for d in docs if d["final"]]
    assert len(finals) == 1
    f = finals[0]
    assert f["status"] == "completed" and f["result"] == "met" and f["band"] == "paid"
    assert 1.0 <= f["response_ratio"] <= 1.06
    assert [iv["baseline_kw"] for iv in f["intervals"]] == pytest.approx(expected, abs=0.01)
    assert all(0.98 <= iv["response_ratio"] <= 1.08 for iv in f["intervals"])
    assert not f["alarm"]
    ids = [d["msg_id"] for d in docs]
    assert ids == sorted(set(ids))

"""The DR manager on a real SQLite history and event store, driven cycle by cycle like the
daemon does: instructions in the book, live and final M&V reports, the alarm, a realtime
baseline that waits for its reference, cancellation with a staggered restore, restart
mid-event, rejections and the opt-in assessment."""

import copy
import logging
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import yaml

from drivers.base import Quality, Reading
from edge import config as config_mod
from edge.control.instructions import InstructionBook
from edge.image.balance import SitePower
from edge.image.image import DeviceState, ProcessImage
from edge.report.history import Accumulator, History, Interval
from edge.vpp.dr.manager import DrManager
from edge.vpp.schemas.reports import DrReport
from edge.vpp.shaping import DrEvent, DrRejected

ROOT = Path(__file__).resolve().parents[2]
SH = ZoneInfo("Asia/Shanghai")
D = date(2026, 6, 22)  # Monday
START = datetime(2026, 6, 22, 16, 45, tzinfo=SH)
END = START + timedelta(minutes=30)
STEP = timedelta(seconds=10)


def config(**dr):
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs/demo.yaml").read_text()))
    data["dr"] = {"target_ratio": 1.0, "ramp_in_s": 600, "restore_s": 900, "restore_steps": 3,
                  **dr}
    return config_mod.parse(data)


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 6, 22, hh, mm, ss, tzinfo=SH)


class Site:
    """What the daemon wires together, minus devices: history, accumulator, book, manager."""

    def __init__(self, tmp_path: Path, now: datetime, **dr) -> None:
        self.cfg = config(**dr)
        self.tmp = tmp_path
        self.history = History(tmp_path / "history.sqlite")
        self.meter = Accumulator()
        self.book = InstructionBook()
        self.mgr = DrManager(self.cfg, self.book, self.history, self.meter,
                             tmp_path / "dr.sqlite", now)
        self.t = now

    def prefill(self, kw: float = 50.0) -> None:
        """Ten past weekdays at `kw` from 16:00 to 18:00 (weekends at 5 kW)."""
        for back in range(1, 15):
            day = D - timedelta(days=back)
            level = kw if day.weekday() < 5 else 5.0
            t = datetime(day.year, day.month, day.day, 16, 0, tzinfo=SH)
            for _ in range(8):
                self.history.put(Interval(t, import_kwh=level * 0.25, covered_s=900))
                t += timedelta(minutes=15)

    def run(self, until: datetime, grid) -> list[dict]:
        """Cycles every 10 s up to `until`; grid(t) is the PCC power over the 10 s ending at
        t (what a cycle integrates); a tick every minute."""
        reports = []
        while self.t < until:
            self.t += STEP
            kw = grid(self.t)
            closed = self.meter.add(self.t, STEP.total_seconds(), SitePower(kw, 0.0, 0.0, kw))
            if closed is not None:
                self.history.put(closed)
            if self.t.second == 0:
                reports += self.mgr.tick(self.t)
        return reports

    def restart(self) -> None:
        self.mgr.close()
        self.book = InstructionBook()
        self.mgr = DrManager(self.cfg, self.book, self.history, self.meter,
                             self.tmp / "dr.sqlite", self.t)

    def close(self) -> None:
        self.mgr.close()
        self.history.close()


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path, at(16, 0))
    s.prefill()
    yield s
    s.close()


def reduce_event(kw: float = 20.0, **kw_args) -> DrEvent:
    return DrEvent("ev-1", "grid_operator", "reduce", START, END, kw=kw, notice="hour", **kw_args)


def follows(level: float, before: float = 50.0, after: float = 50.0):
    return lambda t: level if START < t <= END else (before if t <= START else after)


def test_event_in_the_book_and_final_ratio_from_the_metered_history(site):
    ins = site.mgr.add(reduce_event(cmd_id="c-7"), site.t)
    holds = [i for i in ins if "#hold" in i.id]
    assert [(i.start, i.end, i.grid_max_kw, i.grid_target_kw) for i in holds] == [
        (START, END, 30.0, 30.0)]
    assert all(site.book.get(i.id) is not None for i in ins)

    reports = site.run(at(17, 25), follows(30.0))
    assert reports, "no dr report"
    assert reports[0]["status"] == "pending" and reports[0]["phase"] == "ramp"
    assert reports[0]["ts"] == "2026-06-22T08:35:00Z"  # the ramp-in began at 16:35
    live = [r for r in reports if r["phase"] == "hold" and r["response_ratio"] is not None]
    assert live and all(r["status"] == "active" for r in live)
    assert all(r["response_ratio"] == pytest.approx(1.0) for r in live)
    assert all(not r["alarm"] for r in reports)
    finals = [r for r in reports if r["final"]]
    assert len(finals) == 1
    f = finals[0]
    assert f["status"] == "completed" and f["result"] == "met" and f["band"] == "paid"
    assert f["event_id"] == "ev-1" and f["cmd_id"] == "c-7"
    assert f["baseline_method"] == "avg5" and f["baseline_days"] == [
        "2026-06-15", "2026-06-16", "2026-06-17", "2026-06-18", "2026-06-19"]
    assert [iv["baseline_kw"] for iv in f["intervals"]] == [50.0, 50.0]
    assert [iv["actual_kw"] for iv in f["intervals"]] == pytest.approx([30.0, 30.0])
    assert [iv["delivered_kw"] for iv in f["intervals"]] == pytest.approx([20.0, 20.0])
    assert f["response_ratio"] == pytest.approx(1.0) and f["delivered_kwh"] == pytest.approx(10.0)
    assert f["ts"] >= "2026-06-22T09:15:00Z"  # after the last interval closed
    assert not site.run(at(17, 40), follows(30.0)), "nothing after the final report"
    for r in reports:  # every report fits the published MQTT contract
        DrReport.model_validate({**r, "msg_id": 1})
    assert not [i for i in site.book.all() if i.id.startswith("ev-1#")], "all expired"


def test_projected_shortfall_raises_the_alarm(site, caplog):
    site.mgr.add(reduce_event(), site.t)
    with caplog.at_level(logging.WARNING, logger="edge.vpp.dr"):
        reports = site.run(at(17, 20), follows(42.0))  # only 8 of 20 kW
    hold = [r for r in reports if r["phase"] == "hold"]
    # the first 5 min of the event project the plan; from then on the measured rate
    early = [r for r in hold if r["ts"] < "2026-06-22T08:50:00Z"]
    late = [r for r in hold if r["ts"] >= "2026-06-22T08:50:00Z"]
    assert early and not any(r["alarm"] for r in early)
    assert late and all(r["alarm"] for r in late)
    assert late[-1]["response_ratio"] == pytest.approx(0.4)
    assert late[-1]["projected_ratio"] == pytest.approx(0.4)
    warnings = [r for r in caplog.records if "projected response ratio" in r.getMessage()]
    assert len(warnings) == 1, "warned once when the projection fell below the threshold"
    final = [r for r in reports if r["final"]][0]
    assert final["response_ratio"] == pytest.approx(0.4)
    assert final["result"] == "failed" and final["band"] == "penalised"
    assert final["payable_ratio"] == 0.0


def test_realtime_baseline_waits_for_its_reference_quarter_hour(tmp_path):
    s = Site(tmp_path, at(16, 0), baseline="realtime")
    try:
        s.run(at(16, 20), lambda t: 44.0 if t > at(16, 15) else 60.0)
        assert s.mgr.add(reduce_event(), s.t) == [], "reference 16:15-16:30 not over yet"
        assert s.mgr.get("ev-1") is None and not s.book.all()
        s.run(at(16, 31), lambda t: 44.0 if t > at(16, 15) else 60.0)
        exe = s.mgr.get("ev-1")
        assert exe is not None and exe.baseline.kw.tolist() == pytest.approx([44.0, 44.0])
        hold = [i for i in s.book.all() if "#hold" in i.id]
        assert hold and hold[0].grid_max_kw == pytest.approx(24.0)
    finally:
        s.close()


def test_cancel_mid_event_restores_in_steps_from_the_level_in_force(site):
    site.mgr.add(reduce_event(), site.t)
    site.run(at(17, 0), follows(30.0))
    assert site.mgr.cancel("ev-1", site.t)
    ids = [i.id for i in site.book.all()]
    assert not [i for i in ids if "#hold" in i or "#ramp" in i]
    restore = [i for i in site.book.all() if "#restore" in i.id]
    assert [i.start for i in restore] == [at(17, 0), at(17, 5), at(17, 10)]
    assert [i.grid_max_kw for i in restore] == pytest.approx([30 + 20 / 3, 30 + 40 / 3, 50])
    reports = site.run(at(17, 10), lambda t: 30.0 if t <= at(17, 0) else 50.0)
    final = [r for r in reports if r["final"]]
    assert len(final) == 1 and final[0]["status"] == "cancelled"
    assert final[0]["end"] == "2026-06-22T09:00:00Z"
    assert final[0]["response_ratio"] == pytest.approx(1.0), "measured over 16:45-17:00"
    assert len(final[0]["intervals"]) == 1
    assert not site.mgr.cancel("ev-1", site.t), "already final"


def test_restart_mid_event_resumes_with_the_frozen_baseline(site):
    site.mgr.add(reduce_event(), site.t)
    site.run(at(16, 50), follows(30.0))
    before = site.mgr.get("ev-1").baseline.kw.tolist()
    site.history.put(Interval(at(16, 30), import_kwh=0.25 * 500, covered_s=900))  # noise
    site.restart()
    exe = site.mgr.get("ev-1")
    assert exe is not None and exe.baseline.kw.tolist() == before
    hold = [i for i in site.book.all() if "#hold" in i.id]
    assert hold and hold[0].grid_max_kw == pytest.approx(30.0)
    reports = site.run(at(17, 25), follows(30.0))
    assert [r["final"] for r in reports].count(True) == 1


@pytest.mark.parametrize("restart", [True, False], ids=["after a restart", "same process"])
def test_past_event_days_are_not_baseline_days(site, restart):
    site.mgr.add(reduce_event(), site.t)
    site.run(at(17, 25), follows(30.0))
    if restart:
        site.restart()
    # the next Monday: 22 June had an event, so its five days skip it
    nxt = DrEvent("ev-2", "grid_operator", "reduce", START + timedelta(days=7),
                  END + timedelta(days=7), kw=10.0)
    for d in (23, 24, 25, 26):
        for hh_mm in ((16, 45), (17, 0)):
            t = datetime(2026, 6, d, *hh_mm, tzinfo=SH)
            site.history.put(Interval(t, import_kwh=0.25 * 60, covered_s=900))
    site.t = at(16, 0) + timedelta(days=7)
    site.mgr.add(nxt, site.t)
    days = site.mgr.get("ev-2").baseline.days
    assert date(2026, 6, 22) not in days
    assert days == (date(2026, 6, 19), *(date(2026, 6, d) for d in (23, 24, 25, 26)))


def test_rejections_say_why(site):
    with pytest.raises(DrRejected, match="control.export_limit_kw"):
        site.mgr.add(reduce_event(kw=60.0), site.t)  # 50 - 60 kW: export on a zero-export site
    with pytest.raises(DrRejected, match="already over"):
        site.mgr.add(reduce_event(), at(17, 30))
    empty = Site(site.tmp / "other", at(16, 0))
    try:
        with pytest.raises(DrRejected, match="no baseline"):
            empty.mgr.add(reduce_event(), at(16, 40))
    finally:
        empty.close()


def test_the_operator_baseline_replaces_the_sites(site):
    site.mgr.add(reduce_event(baseline_kw=70.0), site.t)
    exe = site.mgr.get("ev-1")
    assert exe.baseline.method == "operator" and exe.baseline.kw.tolist() == [70.0, 70.0]
    assert [i for i in site.book.all() if "#hold" in i.id][0].grid_max_kw == 50.0


def image(soc: float, bess_kw: float = 0.0) -> ProcessImage:
    def good(dev, **values):
        return DeviceState(Reading(dev, values), Quality.GOOD, 0)

    return ProcessImage(at(16, 0), 1.0, {
        "pv1": good("pv1", power_kw=0.0, limit_kw=120.0),
        "bess1": good("bess1", power_kw=bess_kw, soc_pct=soc),
        "pcc": good("pcc", power_kw=50.0), "load": good("load", power_kw=50.0)})


def test_assessment_for_opt_in_counts_battery_energy(site):
    ok = site.mgr.assess(reduce_event(), site.t, image(80.0))
    assert ok.opt_in and ok.expected_ratio == pytest.approx(1.0)
    # SoC 12 %: 2 % of 200 kWh x 0.95 = 3.8 kWh for a 10 kWh event
    low = site.mgr.assess(reduce_event(), site.t, image(12.0))
    assert not low.opt_in and low.expected_ratio == pytest.approx(0.38)
    assert "dr.min_response_ratio" in low.reason


def test_live_history_averages_over_the_measured_part_and_counts_the_open_interval(site):
    # 16:45: 600 of 900 s measured at 30 kW (5 kWh); stored as a closed interval
    site.history.put(Interval(at(16, 45), import_kwh=5.0, covered_s=600))
    site.history.put(Interval(at(17, 0), import_kwh=1.0, covered_s=300))  # too little: NaN
    view = site.mgr.view
    np.testing.assert_allclose(view.series("import", at(16, 45), at(17, 15)), [30.0, np.nan])
    # the accumulator's open quarter counts once a minute of it is measured
    site.meter.add(at(17, 15, 30), 30.0, SitePower(36.0, 0.0, 0.0, 36.0))
    assert np.isnan(view.series("import", at(17, 15), at(17, 30))[0])
    site.meter.add(at(17, 16, 0), 30.0, SitePower(36.0, 0.0, 0.0, 36.0))
    assert view.series("import", at(17, 15), at(17, 30))[0] == pytest.approx(36.0)


def test_cancelling_an_event_still_waiting_for_its_baseline_ends_it_for_good(tmp_path):
    s = Site(tmp_path, at(16, 0), baseline="realtime")
    try:
        s.run(at(16, 20), follows(50.0))
        assert s.mgr.add(reduce_event(), s.t) == []
        assert s.mgr.cancel("ev-1", s.t)
        reports = s.run(at(16, 21), follows(50.0))
        assert [(r["status"], r["final"]) for r in reports] == [("cancelled", True)]
        DrReport.model_validate({**reports[0], "msg_id": 1})
        s.restart()
        assert s.run(at(16, 40), follows(50.0)) == [] and not s.book.all()
        with pytest.raises(DrRejected, match="already cancelled"):
            s.mgr.add(reduce_event(), s.t)
    finally:
        s.close()


def test_restart_mid_ramp_continues_the_ramp_where_it_was(site):
    site.mgr.add(reduce_event(), site.t)
    site.run(at(16, 40), follows(50.0))
    before = site.book.combine(at(16, 40, 30)).grid_max_kw
    site.restart()
    assert site.book.combine(at(16, 40, 30)).grid_max_kw == pytest.approx(before)
    assert before == pytest.approx(50 - 20 * 6 / 10)  # ramp step 6 of 10


def test_an_update_mid_event_keeps_the_frozen_baseline(site):
    site.mgr.add(reduce_event(), site.t)
    site.run(at(16, 50), follows(30.0))
    site.history.put(Interval(at(16, 30), import_kwh=0.25 * 500, covered_s=900))  # noise
    ins = site.mgr.add(reduce_event(kw=25.0), site.t)
    assert site.mgr.get("ev-1").baseline.kw.tolist() == [50.0, 50.0]
    holds = [i for i in ins if "#hold" in i.id]
    assert holds and holds[0].grid_max_kw == pytest.approx(25.0)
    assert not [i for i in site.book.all() if "#ramp" in i.id], "old instructions replaced"


def test_finished_events_leave_the_store_once_past_the_baseline_lookback(site):
    site.mgr.add(reduce_event(), site.t)
    site.run(at(17, 25), follows(30.0))
    assert "ev-1" in site.mgr.finals
    assert site.mgr.prune(site.t + timedelta(days=10)) == 0  # still a baseline-excluded day
    assert site.mgr.prune(site.t + timedelta(days=site.mgr.cfg.lookback_days + 3)) == 1
    assert "ev-1" not in site.mgr.finals
    site.restart()
    assert "ev-1" not in site.mgr.finals

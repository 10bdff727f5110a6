"""The `plan` report: each adopted plan goes out once on `<prefix>/<site>/plan`, through the
outbox (so a broker outage only delays it), valid against its schema, with the forecasts
and prices it was made from and the EV power per charger; a round that falls back and the
cycles in between send nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from conftest import wait_for
from site_harness import device, running_site, site_dict
from test_planner_demands import T0, car, make

from edge.control.instructions import Instruction
from edge.plan.remote import PlannerWorker
from edge.vpp.schemas.catalogue import undeclared
from edge.vpp.schemas.reports import PlanReport

SPEED = 240.0


def balanced(step: dict) -> float:
    """How far a step is from the site balance (grid = load + EVs − PV used − battery)."""
    return step["grid_kw"] - (step["load_kw"] + sum(step["ev_kw"].values())
                              - step["pv_used_kw"] - step["bess_kw"])


async def test_an_adopted_plan_is_reported_with_its_forecasts_prices_and_ev_power():
    planner, view, clock = make([car(kwh=40.0)])
    reports: list[dict] = []
    planner.on_adopt = reports.append
    plan = await planner.replan("schedule")
    assert len(reports) == 1
    doc = {**reports[0], "msg_id": 1}
    PlanReport.model_validate(doc)
    assert undeclared(PlanReport, doc) == []
    assert doc["status"] == "optimal" and doc["trigger"] == "schedule"
    assert doc["plan_id"] == "20260622T130000.000Z" and doc["made_at"] == "2026-06-22T13:00:00.000Z"
    assert doc["step_s"] == 900 and len(doc["steps"]) == plan.n == 48  # 12 h of 15 min
    assert doc["currency"] == "CNY" and doc["objective"] == pytest.approx(plan.objective, abs=0.01)
    first, valley = doc["steps"][0], doc["steps"][12]  # 21:00 flat, 00:00 valley (local)
    assert first["start"] == "2026-06-22T13:00:00.000Z" and first["import_price"] == 0.68
    assert valley["start"] == "2026-06-22T16:00:00.000Z" and valley["import_price"] == 0.31
    assert first["load_kw"] == 20.0 and first["pv_kw"] == 0.0  # the forecasts planned with
    assert doc["soc_start_pct"] == 50.0
    # the car charges in the valley only, and gets its 40 kWh
    assert first["ev_kw"] == {} and valley["ev_kw"]["ev1"] > 0
    ev_kwh = sum(s["ev_kw"].get("ev1", 0.0) for s in doc["steps"]) * 0.25
    assert ev_kwh == pytest.approx(40.0, abs=0.05)
    assert doc["ev_short_kwh"] == {}
    assert max(abs(balanced(s)) for s in doc["steps"]) < 0.01
    np.testing.assert_allclose([s["soc_pct"] for s in doc["steps"]], plan.soc_pct[1:], atol=0.01)


async def test_a_round_that_falls_back_reports_nothing():
    planner, view, clock = make()
    reports: list[dict] = []
    planner.on_adopt = reports.append
    await planner.replan()

    def broken(start, n, step_s):
        raise ValueError("forecast gap")

    planner.forecast = broken
    clock.t = T0 + timedelta(minutes=15)
    kept = await planner.replan()
    assert kept is not None and kept.status == "fallback"  # the previous plan is kept
    assert len(reports) == 1


async def test_the_daemon_publishes_each_adopted_plan_once_and_delays_it_over_an_outage(
        tmp_path, mosquitto):
    """The demo site with the planner in its worker process, re-planning hourly: the first
    plan arrives once while the cycle and telemetry run on; a DR event in the book makes a
    new plan while the broker is down, which waits in the outbox and arrives after."""
    data = site_dict(tmp_path, mosquitto.port)
    data["hil"]["start"] = "2026-06-22T07:00:00+08:00"  # valley until 08:00, flat, peak at 10
    data["planner"] = {"enabled": True, "horizon_h": 12, "step_min": 15, "replan_min": 60}
    device(data, "bess1")["sim"] = {"initial_soc_pct": 30}
    async with running_site(data, mosquitto, SPEED) as run:
        daemon = run.daemon
        assert isinstance(daemon.planner, PlannerWorker)

        def plans() -> list[dict]:
            return [d for t, d in run.sub.documents() if t == daemon.link.topic("plan")]

        def telemetry() -> int:
            return len(run.telemetry())

        await wait_for(lambda: plans(), 30, "the first plan report")
        seen = telemetry()
        await wait_for(lambda: telemetry() >= seen + 60, 60, "five simulated minutes more")
        assert len(plans()) == 1 and daemon.planner.stats.solves == 1, daemon.planner.stats

        mosquitto.stop()
        t = run.clock.now()
        window = (t + timedelta(minutes=5), t + timedelta(minutes=40))
        daemon.cycle.book.put(Instruction("dr-plan", "grid_operator", *window, grid_max_kw=40.0))

        def queued() -> list:
            return [r for r in daemon.outbox.pending(10_000) if r.topic.endswith("/plan")]

        await wait_for(queued, 60, "the new plan's report held in the outbox")
        mosquitto.start()
        await wait_for(lambda: len(plans()) == 2, 60, "the new plan's report after the outage")
        await wait_for(lambda: telemetry() >= seen + 150, 60, "more cycles after the outage")
        solves = daemon.planner.stats.solves
        reports = plans()
    assert len(reports) == solves == 2
    first, second = reports
    assert second["trigger"] == "commitments changed: +dr-plan"
    assert second["msg_id"] > first["msg_id"] and second["plan_id"] > first["plan_id"]
    for doc in reports:
        PlanReport.model_validate(doc)
        assert undeclared(PlanReport, doc) == []
        assert doc["step_s"] == 900 and len(doc["steps"]) == 48
        assert max(abs(balanced(s)) for s in doc["steps"]) < 0.01
        prices = {s["start"][11:16]: s["import_price"] for s in doc["steps"]}
        assert prices["23:45"] == 0.31 and prices["02:00"] == 1.12  # 07:45 valley, 10:00 peak
        assert all(s["load_kw"] > 0 for s in doc["steps"])
    # the new plan holds the event's cap in every step inside it
    starts = [(datetime.fromisoformat(s["start"]), s) for s in second["steps"]]
    inside = [s for a, s in starts if window[0] <= a and a + timedelta(minutes=15) <= window[1]]
    assert inside and max(s["grid_kw"] for s in inside) <= 40.0 + 0.01, inside

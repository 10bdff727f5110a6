"""The planner service: how a plan reaches the instruction book, what a DR event the battery
can only partly deliver does to the plan, what happens when no plan can be made (limits
that cannot hold, time limit, broken forecast): a safe fallback with a reason, for a bounded
time, and that a solve in progress never holds up the daemon's stop."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from conftest import wait_for

from drivers.base import Quality, Reading
from edge.config import ConfigError, parse
from edge.control.instructions import Instruction, InstructionBook
from edge.forecast import Forecaster
from edge.image.balance import SitePower
from edge.image.image import DeviceState, ProcessImage
from edge.plan import planner as planner_mod
from edge.plan.planner import Planner
from edge.report.history import History

T0 = datetime(2026, 6, 22, 2, 0, tzinfo=UTC)  # 10:00 local: flat/peak prices


def site(**planner) -> dict:
    return {
        "site": {"id": "t", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1502, "capacity_kwh": 200,
             "max_charge_kw": 60, "max_discharge_kw": 60},
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1503},
        ],
        "control": {"import_limit_kw": 80, "export_limit_kw": 0},
        "tariff": {"export_price": 0.0, "periods": [
            {"name": "valley", "start": "00:00", "end": "08:00", "price": 0.31},
            {"name": "peak", "start": "08:00", "end": "12:00", "price": 1.12},
            {"name": "flat", "start": "12:00", "end": "00:00", "price": 0.68}]},
        "planner": {"enabled": True, "horizon_h": 6, **planner},
    }


class ManualClock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t

    def wall_s(self, sim_s: float) -> float:
        return sim_s / 3600  # one simulated hour per wall second


def image(t: datetime, soc: float = 50.0, battery: Quality = Quality.GOOD) -> ProcessImage:
    return ProcessImage(t, 1.0, {
        "bess1": DeviceState(Reading("bess1", {"soc_pct": soc, "power_kw": 0.0}), battery, 0),
        "pcc": DeviceState(Reading("pcc", {"power_kw": 40.0}), Quality.GOOD, 0),
    })


def flat_forecast(start, n, step_s):
    return np.full(n, 40.0), np.zeros(n)


def make(data: dict | None = None, forecast=flat_forecast, soc: float = 50.0,
         battery: Quality = Quality.GOOD):
    clock = ManualClock(T0 + timedelta(minutes=5))
    cycle = SimpleNamespace(image=image(clock.t, soc, battery), book=InstructionBook())
    return Planner(parse(data or site()), cycle, clock, forecast), cycle, clock


def plan_ids(book: InstructionBook) -> list[str]:
    return [i.id for i in book.all() if i.source == "plan"]


async def test_plan_reaches_the_book_as_targets_for_the_next_two_replan_periods():
    planner, cycle, clock = make()
    plan = await planner.replan()
    assert plan is not None and plan.status == "optimal" and planner.last is plan
    assert plan.bess_kw[0] > 30  # peak price now, flat later: the battery covers the load
    assert len(plan_ids(cycle.book)) == 3  # 2 x 15 min ahead + the step in progress
    combined = cycle.book.combine(clock.t)
    assert combined.grid_target_kw == pytest.approx(plan.grid_kw[0])
    assert combined.grid_max_kw == float("inf")  # no demand charge: no cap from the plan
    assert planner.stats.solves == 1 and planner.stats.last_status == "optimal"
    assert plan.first_step_s == 600  # planned at 10:05, step 0 runs to 10:15


async def test_cycle_follows_the_planned_battery_inside_the_limits_and_the_grid_on_them():
    data = site()
    del data["control"]["export_limit_kw"]  # grid 0 is then no bound: the plan chose it
    planner, cycle, clock = make(data)
    plan = await planner.replan()
    (first, *_) = [i for i in cycle.book.all() if i.source == "plan"]
    assert first.bess_target_kw == pytest.approx(plan.bess_kw[0])
    # What the cycle aims at: the grid the planned battery power leaves, whatever the load
    assert cycle.book.combine(clock.t).target_for(55.0) == pytest.approx(55.0 - plan.bess_kw[0])
    zero_export, _, _ = make()
    on_floor = zero_export.instructions(replace(plan, grid_kw=np.zeros_like(plan.grid_kw)), clock.t)
    assert all(math.isnan(i.bess_target_kw) and i.grid_target_kw == 0 for i in on_floor), \
        "zero export planned: the battery absorbs the surplus the forecast missed"


async def test_demand_charge_caps_the_grid_at_the_planned_peak():
    data = site()
    data["tariff"]["demand_charge_per_kw"] = 40.0
    planner, cycle, clock = make(data)
    plan = await planner.replan()
    assert all(i.grid_max_kw == pytest.approx(plan.peak_kw - 0.5)  # one deadband below
               for i in cycle.book.all() if i.source == "plan")
    assert plan.peak_kw < 40  # the battery shaves the flat 40 kW load


async def test_partly_deliverable_dr_event_is_planned_to_deliver_what_it_can_with_a_reason(
        caplog):
    planner, cycle, clock = make()
    first = await planner.replan()
    # DR: no import 10:05-13:05 under a 40 kW load needs 126.7 kWh (the plan binds steps
    # 10:05-13:15); the battery holds 80 kWh above its minimum, 76 kWh after losses.
    cycle.book.put(Instruction("dr-1", "grid_operator", clock.t, clock.t + timedelta(hours=3),
                               grid_max_kw=0.0))
    with caplog.at_level(logging.WARNING, logger="edge.plan.planner"):
        plan = await planner.replan("dr event dr-1")
    assert plan is not first and planner.last is plan and plan.status == "optimal"
    assert plan.commitment_short_kwh == pytest.approx(40 * 190 / 60 - 76, abs=0.05)
    assert plan.soc_pct[13] == pytest.approx(10, abs=0.01)  # emptied into the event
    assert plan.grid_kw[0] == pytest.approx(0, abs=1e-6)  # the event's start is delivered
    assert "commitment dr-1 cannot be fully met: short by 50.7 kWh in steps " in plan.reason
    # where it falls short is the cheapest place to import: the flat hours from 12:00
    assert plan.reason.endswith("to 2026-06-22T05:15:00+00:00)")
    # the new plan, not the one made without the event, is what the cycle follows
    combined = cycle.book.combine(clock.t)
    assert combined.grid_target_kw == pytest.approx(0, abs=1e-6)
    assert planner.stats.failures == 0 and planner.stats.solves == 2
    assert "dr-1 cannot be fully met" in planner.stats.last_reason
    assert "dr event dr-1" in caplog.text and "short by 50.7 kWh" in caplog.text


async def test_limits_that_cannot_hold_without_a_previous_plan_fall_back_to_rule_based(
        caplog):
    # 120 kW of load under an 80 kW import limit: the 60 kW battery empties within 2 h
    planner, cycle, clock = make(forecast=lambda start, n, step_s: (np.full(n, 120.0),
                                                                     np.zeros(n)))
    cycle.book.put(Instruction("dr-1", "grid_operator", clock.t, clock.t + timedelta(hours=3),
                               grid_max_kw=0.0))
    cycle.book.put(Instruction("plan-old", "plan", clock.t, clock.t + timedelta(hours=1),
                               grid_target_kw=10.0))
    with caplog.at_level(logging.WARNING, logger="edge.plan.planner"):
        assert await planner.replan() is None
    assert planner.last is None and planner.stats.last_status == "rule-based"
    assert plan_ids(cycle.book) == []  # nothing of an old plan is left for the cycle
    assert "dr-1" in [i.id for i in cycle.book.all()]  # the commitment itself stays
    assert "import limit 80.0 kW" in planner.stats.last_reason
    assert "rule-based control (self_consumption+peak_shaving+export_limit)" in caplog.text


async def test_a_kept_plan_expires_after_two_replan_periods(caplog):
    planner, cycle, clock = make()  # replan_min 15
    first = await planner.replan()
    made = clock.t
    planner.forecast = gappy
    clock.t = made + timedelta(minutes=20)
    cycle.image = image(clock.t)
    kept = await planner.replan()
    assert kept is not None and kept.status == "fallback" and "NaN" in kept.reason
    np.testing.assert_array_equal(kept.grid_kw, first.grid_kw)
    ends = [i.end for i in cycle.book.all() if i.source == "plan"]
    assert max(ends) == made + timedelta(minutes=30)  # published no further than it may live
    assert first.end > made + timedelta(hours=5)  # although the plan itself runs on for hours
    clock.t = made + timedelta(minutes=30)
    cycle.image = image(clock.t)
    with caplog.at_level(logging.WARNING, logger="edge.plan.planner"):
        assert await planner.replan() is None
    assert planner.stats.last_status == "rule-based" and plan_ids(cycle.book) == []
    assert "the previous plan expired at 2026-06-22T02:35:00+00:00" in caplog.text
    assert "load_kw: contains NaN" in caplog.text


async def test_previous_plan_that_no_longer_covers_now_is_not_kept():
    planner, cycle, clock = make(site(horizon_h=1))
    assert await planner.replan() is not None
    clock.t += timedelta(hours=2)
    cycle.image = image(clock.t)
    planner.forecast = lambda *a: (_ for _ in ()).throw(RuntimeError("forecast store locked"))
    assert await planner.replan() is None
    assert planner.stats.last_reason == "RuntimeError: forecast store locked"
    assert plan_ids(cycle.book) == []


async def test_time_limit_without_a_solution_falls_back_with_the_reason(caplog):
    planner, cycle, clock = make(site(time_limit_s=1e-6))
    with caplog.at_level(logging.WARNING, logger="edge.plan.planner"):
        assert await planner.replan() is None
    assert "time limit" in planner.stats.last_reason
    assert "time limit" in caplog.text


def gappy(start, n, step_s):
    load = np.full(n, 40.0)
    load[3] = np.nan
    return load, np.zeros(n)


async def test_forecast_with_gaps_is_refused_not_planned_on():
    planner, cycle, clock = make(forecast=gappy)
    assert await planner.replan() is None
    assert "load_kw: contains NaN" in planner.stats.last_reason


async def test_the_first_rounds_before_a_measurement_say_so_at_info_and_run_rule_based(
        tmp_path, caplog):
    data = site()
    history = History(tmp_path / "history.sqlite")  # a new site: no history yet
    forecaster = Forecaster(parse(data), history)
    planner, cycle, clock = make(data, forecast=forecaster)
    cycle.image = None
    with caplog.at_level(logging.INFO, logger="edge"):
        assert await planner.replan() is None  # before the first cycle
        cycle.image = image(clock.t)
        assert await planner.replan() is None  # a cycle, but no load reading yet
    assert planner.stats.last_status == "rule-based" and plan_ids(cycle.book) == []
    assert planner.stats.last_reason == ("no load measurement yet: no history of similar days "
                                         "and no live load reading to carry forward")
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said[0] == (logging.INFO, "no plan yet (schedule): no measurement yet: the first "
                       "cycle has not run; no plan covers now: rule-based control "
                       "(self_consumption+peak_shaving+export_limit)")
    assert said[1][0] == logging.INFO and said[1][1].startswith(
        "no plan yet (schedule): no load measurement yet")
    assert len(said) == 2 and "NaN" not in caplog.text
    forecaster.observe(clock.t, SitePower(40.0, None, 0.0, 40.0), pv_curtailed=False)
    plan = await planner.replan()  # the measured load carried forward
    assert plan is not None and plan.status == "optimal"
    history.close()


async def test_stale_battery_is_left_out_of_the_plan(caplog):
    planner, cycle, clock = make(battery=Quality.STALE)
    with caplog.at_level(logging.WARNING, logger="edge.plan.planner"):
        plan = await planner.replan()
    assert plan is not None and plan.bess_kw_by_id == {}
    np.testing.assert_allclose(plan.grid_kw, 40.0)
    assert "battery bess1 is stale: planning without it" in caplog.text


async def test_with_5_min_steps_a_planned_spike_is_capped_at_its_target_not_the_peak():
    # No battery: the plan is the load. 10:05-10:10 at 40 kW and 10:10-10:15 at 70 kW make
    # a 55 kW mean for the quarter hour 10:00-10:15 (planned from 10:05), the billed peak.
    def spike(start, n, step_s):
        load = np.full(n, 40.0)
        load[1] = 70.0  # planned at 10:05 on a 5-min grid: step 0 is 10:05, step 1 10:10
        return load, np.zeros(n)

    data = site(step_min=5)
    data["tariff"]["demand_charge_per_kw"] = 40.0
    planner, cycle, clock = make(data, forecast=spike, battery=Quality.STALE)
    plan = await planner.replan()
    assert plan.peak_kw == pytest.approx(55, abs=1e-6)
    caps = {i.id[-7:-1]: i.grid_max_kw for i in cycle.book.all() if i.source == "plan"}
    assert caps.pop("021000") == pytest.approx(70)  # not 54.5: the kernel would shave it
    assert caps and all(c == pytest.approx(54.5) for c in caps.values())


def test_stopping_during_a_solve_does_not_wait_for_it(monkeypatch):
    """asyncio.run waits for its default executor on exit: a solve there (asyncio.to_thread)
    would hold up the daemon's stop for as long as HiGHS runs. The solve thread is a daemon
    thread of its own, abandoned when the round is cancelled."""
    started, release, errors = threading.Event(), threading.Event(), []
    real = planner_mod.solve

    def slow_solve(inp, time_limit_s, warm=None):
        started.set()
        release.wait(60)
        return real(inp, time_limit_s, warm)

    monkeypatch.setattr(planner_mod, "solve", slow_solve)
    monkeypatch.setattr(threading, "excepthook", errors.append)
    planner, cycle, clock = make()

    async def stop_mid_solve() -> None:
        task = asyncio.create_task(planner.replan())
        await wait_for(started.is_set, 30, "the solve to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stop_mid_solve())
    solver = planner.solver
    assert solver is not None and solver.daemon
    assert solver.is_alive()  # asyncio.run returned while the solve was still running
    release.set()
    solver.join(60)
    assert not solver.is_alive() and errors == []  # its late result, dropped quietly
    assert planner.last is None and planner.stats.solves == 0


async def test_request_replan_runs_a_round_on_the_scheduler():
    planner, cycle, clock = make()
    scheduler = AsyncIOScheduler()
    planner.attach(scheduler)
    scheduler.start()
    try:
        await wait_for(lambda: planner.stats.solves >= 1, 10, "first scheduled plan")
        planner.request_replan("dispatch park-7")
        await wait_for(lambda: planner.stats.last_trigger == "dispatch park-7", 10,
                       "event re-plan")
        await wait_for(lambda: planner.stats.solves >= 2, 10, "event plan adopted")
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)


async def test_a_new_commitment_in_the_book_triggers_a_replan():
    planner, cycle, clock = make()
    scheduler = AsyncIOScheduler()
    planner.attach(scheduler)
    scheduler.start()
    try:
        await wait_for(lambda: planner.stats.solves >= 1, 10, "first scheduled plan")
        cycle.book.put(Instruction("dr-9", "grid_operator", clock.t + timedelta(minutes=30),
                                   clock.t + timedelta(hours=1), grid_max_kw=10.0))
        await wait_for(lambda: planner.stats.last_trigger == "commitments changed: +dr-9", 10,
                       "re-plan on the new DR event")
        await wait_for(lambda: planner.stats.solves >= 2, 10, "event plan adopted")
        assert planner.last.grid_kw[2:5].max() <= 10 + 1e-6  # steps 10:30-11:15 touch 10:35-11:05
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)


@pytest.mark.parametrize(("bad", "expected"), [
    ({"step_min": 7}, "planner: step_min must divide 60"),
    ({"horizon_h": 24.1}, "planner: horizon_h must be a whole number of steps"),
    ({"reserve_soc_pct": 120}, "planner.reserve_soc_pct: must be <= 100"),
    ({"time_limit_s": 60}, "planner.time_limit_s: must be <= 20"),
])
def test_planner_config_errors_name_the_field(bad, expected):
    with pytest.raises(ConfigError) as err:
        parse(site(**bad))
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems


async def test_the_next_round_starts_from_the_last_rounds_basis():
    """The warm start lives with the planner (in the worker process when it runs there):
    a round one step later starts warm and adopts the plan a cold solve would make."""
    planner, cycle, clock = make()
    first = await planner.replan()
    assert not planner.warm.used
    clock.t += timedelta(seconds=first.step_s)
    cycle.image = image(clock.t, soc=first.soc_pct[1] + 0.5)
    second = await planner.replan()
    assert planner.warm.used
    cold = planner_mod.solve(planner._input(clock.t), planner.cfg.time_limit_s)
    assert second.objective == pytest.approx(cold.objective, rel=1e-9, abs=1e-6)

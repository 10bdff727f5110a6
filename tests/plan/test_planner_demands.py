"""EV sessions through the planner service: the plan's instructions carry the planned kW
per charger (and the grid target of the site without them, which is what the cycle
settles the batteries on), the stats and log carry the valley share and shortfalls, a
material change in the sessions asks for a re-plan - rate-limited - and the demands cross
to the planner worker process and come back as planned charger power."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from conftest import wait_for

from drivers.base import Quality, Reading
from edge.app.clock import Clock
from edge.app.fanout import SiteView
from edge.config import parse
from edge.control.bounds import SiteBounds
from edge.control.decide import Decision
from edge.control.instructions import InstructionBook
from edge.image.balance import SitePower
from edge.image.image import DeviceState, ProcessImage
from edge.plan import watch as watch_mod
from edge.plan.planner import Planner
from edge.plan.remote import PlannerWorker
from edge.plan.watch import DemandWatch
from edge.roles.role import Demand

T0 = datetime(2026, 6, 22, 13, 0, tzinfo=UTC)  # 21:00 in Shanghai: flat, valley from 00:00


def site(**control) -> dict:
    return {
        "site": {"id": "t", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1502,
             "capacity_kwh": 200, "max_charge_kw": 60, "max_discharge_kw": 60},
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1503},
            {"id": "ev1", "role": "ev_charger", "charge_point_id": "CP1", "max_current_a": 16},
        ],
        "control": {"import_limit_kw": 80, **control},
        "tariff": {"export_price": 0.0, "periods": [
            {"name": "valley", "start": "00:00", "end": "08:00", "price": 0.31},
            {"name": "peak", "start": "08:00", "end": "21:00", "price": 1.12},
            {"name": "flat", "start": "21:00", "end": "00:00", "price": 0.68}]},
        "planner": {"enabled": True, "horizon_h": 12, "step_min": 15, "replan_min": 15},
    }


class ManualClock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t

    def wall_s(self, sim_s: float) -> float:
        return sim_s / 3600


def image(t: datetime) -> ProcessImage:
    return ProcessImage(t, 1.0, {
        "bess1": DeviceState(Reading("bess1", {"soc_pct": 50.0, "power_kw": 0.0}),
                             Quality.GOOD, 0),
        "pcc": DeviceState(Reading("pcc", {"power_kw": 20.0}), Quality.GOOD, 0),
    })


def make(demands=(), **control):
    clock = ManualClock(T0)
    view = SimpleNamespace(image=image(T0), book=InstructionBook(), demands=tuple(demands))
    forecast = lambda start, n, step_s: (np.full(n, 20.0), np.zeros(n))  # noqa: E731
    return Planner(parse(site(**control)), view, clock, forecast), view, clock


def car(kwh=40.0, leaves=T0 + timedelta(hours=11), kw=11.0, dev="ev1") -> Demand:
    return Demand(dev, kwh, leaves, kw)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


async def test_plan_instructions_carry_the_planned_charger_power():
    planner, view, clock = make([car()])
    plan = await planner.replan()
    kw = plan.demand_kw["ev1"]
    assert kw[:12].max() == 0.0 and kw.sum() * 0.25 == pytest.approx(40.0, abs=1e-3)
    clock.t = at(3)  # 00:00 local: the valley, where the car charges
    planner._publish(plan, clock.t)
    first = [i for i in view.book.all() if i.source == "plan"][0]
    k = plan.step_at(clock.t)
    assert dict(first.demand_kw) == {"ev1": pytest.approx(kw[k])} and kw[k] > 0
    assert view.book.combine(clock.t).demand_kw == {"ev1": pytest.approx(kw[k])}
    # the cycle settles the battery on the site without the car, then adds the car's draw
    assert first.grid_target_kw == pytest.approx(plan.grid_kw[k] - kw[k])
    assert planner.stats.demand_kwh == pytest.approx(40.0, abs=1e-3)
    assert planner.stats.demand_valley_kwh == pytest.approx(40.0, abs=1e-3)


async def test_with_ev_from_battery_the_grid_target_is_the_whole_sites():
    planner, view, clock = make([car()], ev_from_battery=True)
    plan = await planner.replan()
    clock.t = at(3)
    planner._publish(plan, clock.t)
    first = [i for i in view.book.all() if i.source == "plan"][0]
    assert first.grid_target_kw == pytest.approx(plan.grid_kw[plan.step_at(clock.t)])


async def test_the_log_gives_the_valley_share_and_the_shortfalls(caplog):
    planner, view, clock = make([car()])
    with caplog.at_level(logging.INFO, "edge.plan.planner"):
        await planner.replan()
    first = [i for i in view.book.all() if i.source == "plan"][0]
    assert first.demand_kw == ()  # 21:00, flat price: the car waits for the valley
    assert "demands 40.0 kWh (100% in the valley)" in caplog.text
    view.demands = (car(kwh=500.0),)
    with caplog.at_level(logging.INFO, "edge.plan.planner"):
        plan = await planner.replan()
    assert plan.status == "optimal" and planner.stats.demand_short_kwh["ev1"] > 0
    assert f"short: ev1 {plan.demand_short_kwh['ev1']:.1f} kWh" in caplog.text


async def test_a_bad_demand_is_left_out_and_said_once(caplog):
    bad = Demand("ev2", math.nan, at(5), 11.0)
    planner, view, clock = make([car(), bad])
    with caplog.at_level(logging.WARNING, "edge.plan.planner"):
        plan = await planner.replan()
        await planner.replan()
    assert plan.status == "optimal" and set(plan.demand_kw) == {"ev1"}
    assert caplog.text.count("planning without demand ev2") == 1


def test_the_watch_asks_for_a_new_session_a_moved_departure_and_drift_only():
    w = DemandWatch()
    w.planned_with([car()], T0)
    plan = SimpleNamespace(start=T0, step_s=900, first_step_s=None,
                           demand_kw={"ev1": np.r_[np.zeros(12), np.full(20, 11.0)]})
    w.adopted(plan)
    assert w.changes([car()], at(1)) == []
    assert w.changes([car(39.0)], at(1)) == []  # 1 kWh: a wobble of the car's SoC
    assert w.changes([car(), car(dev="ev2")], at(1)) == ["+ev2"]
    assert w.changes([car(leaves=at(9))], at(1))[0].startswith("ev1 deadline")
    # at 00:30 the plan expected 40 - 5.5 kWh still needed; the car still needs 40
    assert w.changes([car(40.0)], at(3.5)) == ["ev1 +5.5 kWh off plan"]
    assert w.changes([car(34.5)], at(3.5)) == []
    assert w.changes([], at(3.5)) == ["-ev1 (34.5 kWh planned still)"]
    assert w.changes([], at(7)) == []  # ended when the plan had delivered it all


def test_the_watch_is_rate_limited():
    w = DemandWatch()
    w.planned_with([], T0)
    assert w.due([car()], at(0.01), last_round=T0) is None  # a round 36 s ago
    hold = watch_mod.HOLDOFF_S / 3600
    assert w.due([car()], at(hold), last_round=T0) == "demands changed: +ev1"
    assert w.due([car(), car(dev="ev2")], at(hold + 0.01), last_round=T0) is None
    many = [car(dev=f"ev{i}") for i in range(1, 9)]
    assert w.due(many, at(2 * hold + 0.01), last_round=T0) == \
        "demands changed: +ev1, +ev2, +ev3, +ev4, +ev5 and 3 more"


async def test_a_new_session_asks_the_planner_for_a_round():
    planner, view, clock = make()
    await planner.replan()
    clock.t = at(0.1)
    await planner._watch()
    assert planner._pending is None
    view.demands = (car(),)
    await planner._watch()
    assert planner._pending == "demands changed: +ev1"
    plan = await planner.replan(planner._pending)
    assert plan.demand_kwh == pytest.approx(40.0, abs=1e-3)
    planner._pending = None
    await planner._watch()
    assert planner._pending is None  # the new plan has it


async def test_demands_cross_to_the_worker_process_and_come_back_as_charger_power(tmp_path):
    """The control process's view -> tick -> the worker's planner notices the new session,
    re-plans -> plan instructions with the charger's kW in the daemon's book."""
    start = datetime(2026, 6, 22, 15, 50, tzinfo=UTC)  # 23:50 local: valley in 10 min
    clock = Clock(start=start, speed=60.0)
    cfg = parse(site())
    view = SiteView(InstructionBook())
    decision = Decision(start, "idle", SiteBounds(), {}, 20.0, 0)
    view.publish(image(start), decision)
    worker = PlannerWorker(cfg, view, clock, tmp_path / "history.sqlite")
    worker.observe(start, SitePower(20.0, 0.0, 0.0, 20.0), False, 1.0)
    scheduler = AsyncIOScheduler()
    worker.attach(scheduler)
    scheduler.start()
    worker.start()
    try:
        await wait_for(lambda: worker.stats.solves >= 1, 60, "the worker's first plan")
        assert worker.stats.demand_kwh == 0.0
        leaves = start + timedelta(hours=8)
        view.publish(image(clock.now()), Decision(
            clock.now(), "idle", SiteBounds(), {}, 20.0, 0, demands=(car(30.0, leaves),)))

        def charging() -> bool:
            return any(dict(i.demand_kw).get("ev1", 0) > 0 for i in view.book.all()
                       if i.source == "plan")

        await wait_for(charging, 60, "plan instructions with ev1's power")
        assert "demands changed: +ev1" in [t for _, t, _ in worker.stats.rounds]
        assert worker.stats.demand_kwh == pytest.approx(30.0, abs=1e-3)
        assert worker.stats.demand_valley_kwh == pytest.approx(30.0, abs=1e-3)
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.wait_for(worker.stop(), 10)

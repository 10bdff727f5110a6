"""EV chargers in the decision: they share what the kernel leaves under the import limit,
by priority and never below 6 A unless paused; the home battery does not discharge into
them unless allowed; a plan steers them and a car out of slack is charged flat out."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from drivers.base import Quality, Reading
from edge.config import parse
from edge.control.decide import Controller
from edge.control.instructions import Instruction, InstructionBook
from edge.control.kernel import load_kernel
from edge.image.image import DeviceState, ProcessImage
from edge.roles.evsession import EvRequest

T0 = datetime(2026, 6, 22, 12, tzinfo=UTC)


def site(**control):
    return parse({
        "site": {"id": "s"},
        "devices": [
            {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1503,
             "capacity_kwh": 200, "max_charge_kw": 50, "max_discharge_kw": 50},
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
            {"id": "ev1", "role": "ev_charger", "charge_point_id": "CP1", "max_current_a": 32,
             "priority": 5, "enable_delay_s": 60, "disable_delay_s": 120},
            {"id": "ev2", "role": "ev_charger", "charge_point_id": "CP2", "max_current_a": 32},
        ],
        "control": {"import_limit_kw": 60, **control},
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]},
    })


def ev(amps=0.0, car=True, soc=math.nan, session=1.0, kwh=0.0):
    kw = amps * 0.69
    return {"power_kw": kw, "current_a": amps, "l1_a": amps, "l2_a": amps, "l3_a": amps,
            "energy_kwh": 100.0, "soc_pct": soc, "connected": float(car),
            "charging": float(car), "session_kwh": kwh,
            "session_start_s": (T0 - timedelta(hours=1)).timestamp() if car else math.nan,
            "session": session if car else 0.0, "offered_a": amps if car else math.nan,
            "meter_lag_s": 30.0 if car else math.nan, "status": 2.0 if car else 0.0}


def image(grid, bess=0.0, ev1=None, ev2=None, ts=T0, ev2_quality=Quality.GOOD):
    def state(dev, values, q=Quality.GOOD):
        return DeviceState(Reading(dev, values), q, 0)

    return ProcessImage(ts, 1.0, {
        "bess1": state("bess1", {"power_kw": bess, "soc_pct": 50.0}),
        "pcc": state("pcc", {"power_kw": grid}),
        "ev1": state("ev1", ev1 or ev()),
        "ev2": state("ev2", ev2 or ev(car=False), ev2_quality),
    })


@pytest.fixture(scope="module")
def kernel():
    return load_kernel()


def decide(config, img, kernel, book=None, memory=None, now_s=10.0):
    ctl = Controller(config, kernel)
    return ctl.decide(img, book, memory or ctl.initial_memory(), now_s)


def test_chargers_share_the_room_under_the_import_limit(kernel):
    # 30 kW of building and 20 kW of EV under a 60 kW import limit: 30 kW of room
    d, _ = decide(site(functions=["peak_shaving"]), image(50.0, ev1=ev(29.0)), kernel)
    assert d.ev_a["ev1"] == 32.0  # 30 kW of room: 32 A is 22 kW
    d, _ = decide(site(functions=["peak_shaving"]),
                  image(70.0, ev1=ev(29.0), ev2=ev(10.0, session=2.0)), kernel)
    # the site without EVs imports 70 - 20.01 - 6.9 kW: 16.91 kW of room, ev1 first
    kw = d.ev_a["ev1"] * 0.69 + d.ev_a["ev2"] * 0.69
    assert kw <= 70 - 43.09 + 1e-6 and d.ev_a["ev1"] >= 6.0
    assert d.ev_a["ev2"] in (0.0,) or d.ev_a["ev2"] >= 6.0


def test_a_dispatch_cap_lowers_the_chargers_at_once(kernel):
    book = InstructionBook()
    book.put(Instruction("cap", "park", T0 - timedelta(minutes=1), T0 + timedelta(hours=1),
                         grid_max_kw=33.0))
    d, _ = decide(site(functions=["peak_shaving"]), image(50.0, ev1=ev(29.0)), kernel, book)
    # the site without EVs imports 30 kW: 3 kW of room is less than 6 A (4.14 kW): paused
    assert d.ev_a["ev1"] == 0.0


def test_the_battery_does_not_discharge_into_a_car_unless_allowed(kernel):
    cfg = site()
    alone, _ = decide(cfg, image(30.0, ev1=ev(0.0, car=False)), kernel)
    with_ev, _ = decide(cfg, image(30.0 + 22.08, ev1=ev(32.0)), kernel)
    assert with_ev.ev_a["ev1"] == 32.0
    assert with_ev.bess_kw["bess1"] == pytest.approx(alone.bess_kw["bess1"])
    allowed, _ = decide(site(ev_from_battery=True), image(30.0 + 22.08, ev1=ev(32.0)), kernel)
    assert allowed.bess_kw["bess1"] == 50.0 > alone.bess_kw["bess1"]


def test_an_unplugged_charger_is_held_at_zero_and_an_unreachable_one_at_its_fail_safe(kernel):
    d, _ = decide(site(), image(20.0, ev1=ev(0.0, car=False),
                                ev2_quality=Quality.STALE), kernel)
    assert d.ev_a == {"ev1": 0.0, "ev2": 6.0}  # never decided: its fail-safe


def test_a_charger_that_drops_out_keeps_its_limit_for_when_it_comes_back(kernel):
    ctl = Controller(site(functions=["peak_shaving"]), kernel)
    d, mem = ctl.decide(image(75.0, ev2=ev(0.0, session=2.0)), None, ctl.initial_memory(), 0.0)
    assert d.ev_a["ev2"] == 0.0  # no room for it
    d, mem = ctl.decide(image(75.0, ev2_quality=Quality.STALE), None, mem, 1.0)
    assert d.ev_a["ev2"] == 0.0  # not its fail-safe 6 A: that would go out on reconnection


def test_a_plan_steers_the_chargers_and_a_car_out_of_slack_ignores_it(kernel):
    book = InstructionBook()
    book.put(Instruction("plan-1", "plan", T0 - timedelta(minutes=5), T0 + timedelta(minutes=10),
                         demand_kw=(("ev1", 0.0),)))
    d, _ = decide(site(), image(20.0, ev1=ev(0.0)), kernel, book)
    assert d.ev_a["ev1"] == 0.0
    assert d.demands[0].id == "ev1" and d.demands[0].energy_kwh == pytest.approx(20.0)
    book.requests["ev1"] = EvRequest("ev1", T0 - timedelta(minutes=1), session=1.0,
                                     departure=T0 + timedelta(minutes=30), energy_kwh=15.0)
    d, _ = decide(site(), image(20.0, ev1=ev(0.0)), kernel, book)
    assert d.ev_a["ev1"] == 32.0  # 15 kWh in 30 min needs 30 kW: no slack left
    assert d.demands[0].deadline == T0 + timedelta(minutes=30)


def test_a_paused_car_resumes_only_after_the_room_has_stood_its_enable_delay(kernel):
    cfg = site(functions=["peak_shaving"])
    ctl = Controller(cfg, kernel)
    mem = ctl.initial_memory()
    d, mem = ctl.decide(image(50.0, ev1=ev(10.0)), None, mem, 0.0)
    assert d.ev_a["ev1"] > 0
    d, mem = ctl.decide(image(60.0, ev1=ev(10.0)), None, mem, 1.0)  # room 6.9 kW < 6 A? no
    d, mem = ctl.decide(image(65.0, ev1=ev(10.0)), None, mem, 2.0)  # 1.9 kW of room: pause
    assert d.ev_a["ev1"] == 0.0
    d, mem = ctl.decide(image(40.0, ev1=ev(0.0)), None, mem, 3.0)  # room is back
    assert d.ev_a["ev1"] == 0.0
    d, mem = ctl.decide(image(40.0, ev1=ev(0.0)), None, mem, 64.0)
    assert d.ev_a["ev1"] == 28.9  # 20 kW of room


def test_a_request_for_the_next_session_applies_to_that_one_only(kernel):
    cfg = site()
    ctl = Controller(cfg, kernel)
    book = InstructionBook()
    book.requests["ev1"] = EvRequest("ev1", T0 - timedelta(hours=2), energy_kwh=40.0)
    d, mem = ctl.decide(image(20.0, ev1=ev(0.0)), book, ctl.initial_memory(), 0.0)
    assert d.demands[0].energy_kwh == pytest.approx(40.0)
    d, mem = ctl.decide(image(20.0, ev1=ev(0.0, session=2.0)), book, mem, 1.0)
    assert d.demands[0].energy_kwh == pytest.approx(20.0)  # the next car: the default


def test_the_buildings_load_leaves_the_cars_out_and_history_keeps_them_apart(tmp_path):
    from edge.image.balance import site_power
    from edge.report.history import Accumulator, History, Interval

    p = site_power(site(), image(50.0, ev1=ev(29.0)))
    assert p.ev_kw == pytest.approx(20.01) and p.load_kw == pytest.approx(50.0 - 20.01)
    acc, closed = Accumulator(), []
    for i in range(1, 17):
        closed.append(acc.add(T0 + timedelta(seconds=60 * i), 60.0, p))
    iv = next(c for c in closed if c is not None)
    assert iv.ev_kwh == pytest.approx(20.01 / 4, rel=0.1)
    assert iv.load_kwh == pytest.approx((50.0 - 20.01) / 4, rel=0.1)
    history = History(tmp_path / "h.sqlite")
    history.put(iv)
    back = history.intervals(T0, T0 + timedelta(hours=1))[0]
    assert back.ev_kwh == pytest.approx(iv.ev_kwh) and isinstance(back, Interval)


def test_a_car_cut_by_a_hard_limit_waits_its_enable_delay_even_when_the_room_is_back(kernel):
    ctl = Controller(site(functions=["peak_shaving"]), kernel)
    d, mem = ctl.decide(image(50.0, ev1=ev(10.0)), None, ctl.initial_memory(), 0.0)
    d, mem = ctl.decide(image(50.0, ev1=ev(10.0)), None, mem, 100.0)
    assert d.ev_a["ev1"] > 0
    d, mem = ctl.decide(image(65.0, ev1=ev(10.0)), None, mem, 101.0)  # a peak: cut
    assert d.ev_a["ev1"] == 0.0
    d, mem = ctl.decide(image(40.0, ev1=ev(0.0)), None, mem, 102.0)  # the peak is gone
    assert d.ev_a["ev1"] == 0.0
    d, mem = ctl.decide(image(40.0, ev1=ev(0.0)), None, mem, 161.0)
    assert d.ev_a["ev1"] > 0


def test_a_car_just_cut_counts_at_its_new_limit_not_its_last_meter_value(kernel):
    # The charger accepted 6 A but its last meter value still says 29 A: the site without
    # it is 50 - 4.14 kW, not 50 - 20 kW.
    stale = {**ev(29.0), "offered_a": 6.0, "meter_lag_s": -1.0}
    d, _ = decide(site(functions=["peak_shaving"]), image(50.0, ev1=stale), kernel)
    assert d.ev_a["ev1"] * 0.69 <= 60 - (50 - 6 * 0.69) + 1e-6


def test_a_one_phase_car_is_planned_at_its_one_phase_power_while_paused(kernel):
    ctl = Controller(site(functions=["peak_shaving"]), kernel)
    one_phase = {**ev(16.0), "l2_a": 0.0, "l3_a": 0.0, "power_kw": 16 * 0.23}
    d, mem = ctl.decide(image(40.0, ev1=one_phase), None, ctl.initial_memory(), 0.0)
    assert d.demands[0].max_kw == pytest.approx(32 * 0.23)
    paused = {**ev(0.0), "offered_a": 0.0}
    d, mem = ctl.decide(image(40.0, ev1=paused), None, mem, 1.0)
    assert d.demands[0].max_kw == pytest.approx(32 * 0.23)


def test_pv_held_back_by_a_zero_export_limit_goes_into_a_car_the_plan_left_waiting(kernel):
    cfg = parse({
        "site": {"id": "s"},
        "devices": [
            {"id": "pv1", "host": "127.0.0.1", "role": "pv", "port": 1502, "rated_kw": 100},
            {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1503,
             "capacity_kwh": 200, "max_charge_kw": 50, "max_discharge_kw": 50},
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
            {"id": "ev1", "role": "ev_charger", "charge_point_id": "CP1", "max_current_a": 32},
        ],
        "control": {"export_limit_kw": 0},
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]},
    })
    book = InstructionBook()
    book.put(Instruction("plan-1", "plan", T0 - timedelta(minutes=5), T0 + timedelta(minutes=10),
                         demand_kw=(("ev1", 0.0),)))

    def img(pv_limit):
        return ProcessImage(T0, 1.0, {
            "pv1": DeviceState(Reading("pv1", {"power_kw": pv_limit, "limit_kw": pv_limit}),
                               Quality.GOOD, 0),
            "bess1": DeviceState(Reading("bess1", {"power_kw": 0.0, "soc_pct": 95.0}),
                                 Quality.GOOD, 0),
            "pcc": DeviceState(Reading("pcc", {"power_kw": 0.0}), Quality.GOOD, 0),
            "ev1": DeviceState(Reading("ev1", ev(0.0)), Quality.GOOD, 0)})

    held, _ = decide(cfg, img(30.0), kernel, book)  # PV at its limit: the sun offers more
    assert held.ev_a["ev1"] >= 6.0
    free, _ = decide(cfg, img(100.0), kernel, book)  # PV unlimited and no export: no surplus
    assert free.ev_a["ev1"] == 0.0


def test_a_car_charging_before_its_first_meter_value_does_not_break_the_decision(kernel):
    unknown = {**ev(0.0), "power_kw": math.nan, "current_a": math.nan, "l1_a": math.nan,
               "l2_a": math.nan, "l3_a": math.nan, "offered_a": math.nan}
    d, _ = decide(site(), image(30.0, ev1=unknown), kernel)
    assert not d.crashed and d.mode != "safe" and d.ev_a["ev1"] >= 6.0

    from edge.image.balance import site_power
    assert site_power(site(), image(30.0, ev1=unknown)).ev_kw is None


def test_a_cap_right_after_a_raise_counts_the_site_as_it_stood_before_the_raise(kernel):
    ctl = Controller(site(functions=["peak_shaving"]), kernel)
    d, mem = ctl.decide(image(44.14, ev1=ev(6.0)), None, ctl.initial_memory(), 0.0)
    raised = d.ev_a["ev1"]
    assert raised > 20  # 20 kW of room under 60 kW
    mem = ctl.after_writes(mem, {"ev1": raised}, 0.0)
    # The charger took the raise, the car is still ramping (it draws 6 A), and a park cap
    # of 50 kW arrives: the building is 40 kW, so 10 kW are left, not 50 - 44.14 + the raise.
    ramping = {**ev(6.0), "offered_a": raised, "meter_lag_s": -1.0}
    book = InstructionBook()
    book.put(Instruction("cap", "park", T0 - timedelta(minutes=1), T0 + timedelta(hours=1),
                         grid_max_kw=50.0))
    d, mem = ctl.decide(image(44.14, ev1=ramping), book, mem, 1.0)
    assert 6.0 <= d.ev_a["ev1"] and d.ev_a["ev1"] * 0.69 <= 10.0 + 1e-6


def test_the_battery_bridges_a_car_still_ramping_down_after_a_cut(kernel):
    # 48 kW of building and a car at 32 A (22.08 kW) over a 60 kW limit: the car is cut to
    # 12 kW. A second later the charger has taken the cut but the car still draws 32 A:
    # the battery covers the 10 kW it has yet to shed, so the PCC is at the limit now,
    # not once the car has followed.
    ctl = Controller(site(functions=["peak_shaving"]), kernel)
    mem = ctl.after_writes(ctl.initial_memory(), {"ev1": 32.0}, -60.0)
    d, mem = ctl.decide(image(70.08, ev1=ev(32.0)), None, mem, 0.0)
    cut = d.ev_a["ev1"]
    assert cut * 0.69 == pytest.approx(12.0, abs=0.1)
    mem = ctl.after_writes(mem, {"ev1": cut}, 0.0)
    following = {**ev(32.0), "offered_a": cut, "meter_lag_s": -1.0}
    d, mem = ctl.decide(image(70.08, ev1=following), None, mem, 1.0)
    assert d.ev_a["ev1"] == pytest.approx(cut)
    assert d.bess_kw["bess1"] == pytest.approx(10.08, abs=0.1)


def test_a_car_drawing_below_its_settled_offer_frees_its_room_in_the_same_cycle(kernel):
    # ev1 is offered 32 A but its car takes 10 A (a battery near full), on a meter value
    # taken well after the offer: it counts at 12 A (its draw and a margin), and the room
    # it never used goes to ev2 at once, not counted twice while ev1 is lowered.
    ctl = Controller(site(functions=["peak_shaving"]), kernel)
    _, mem = ctl.decide(image(40.0 + 6.9, ev1=ev(10.0)), None, ctl.initial_memory(), 0.0)
    limited = {**ev(10.0), "offered_a": 32.0, "meter_lag_s": 20.0}
    img = image(40.0 + 6.9 + 4.14, ev1=limited, ev2=ev(6.0, session=2.0))
    d, _ = ctl.decide(img, None, mem, 30.0)
    assert d.ev_a["ev1"] == pytest.approx(12.0)
    # the 40 kW building, ev1's 6.9 kW and ev2's new limit fill the 60 kW but for the
    # margin ev1 keeps to show it would take more
    pcc_next = 40.0 + 6.9 + d.ev_a["ev2"] * 0.69
    assert 60.0 - 2.0 * 0.69 - 1e-6 <= pcc_next <= 60.0 + 1e-6


def test_a_meter_value_from_before_the_offer_does_not_mark_the_car_limited(kernel):
    ctl = Controller(site(functions=["peak_shaving"]), kernel)
    _, mem = ctl.decide(image(40.0 + 6.9, ev1=ev(10.0)), None, ctl.initial_memory(), 0.0)
    early = {**ev(10.0), "offered_a": 32.0, "meter_lag_s": 2.0}
    d, mem = ctl.decide(image(40.0 + 6.9, ev1=early), None, mem, 30.0)
    assert mem.roles["ev_charger"].by_id["ev1"].car_a is None
    assert d.ev_a["ev1"] > 12.0


def test_a_battery_bridging_a_cut_does_not_look_like_the_building_dropping_its_load(kernel):
    ctl = Controller(site(functions=["peak_shaving"]), kernel)
    mem = ctl.after_writes(ctl.initial_memory(), {"ev1": 32.0}, -60.0)
    d, mem = ctl.decide(image(70.08, ev1=ev(32.0)), None, mem, 0.0)
    cut = d.ev_a["ev1"]
    mem = ctl.after_writes(mem, {"ev1": cut, "bess1": 10.08}, 0.0)
    # the battery covers the car's ramp: the PCC is at the limit while the car still draws
    following = {**ev(32.0), "offered_a": cut, "meter_lag_s": -1.0}
    d, mem = ctl.decide(image(60.0, bess=10.08, ev1=following), None, mem, 1.0)
    assert d.ev_a["ev1"] == pytest.approx(cut)  # not cut again by what the battery gives

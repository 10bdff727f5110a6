"""Sharing headroom among EV chargers: the minimum current or nothing, priority first, the
hard room and the circuits never exceeded."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from edge.roles.evshare import Circuits, Want, economic_minimums, share

KW_PER_A = 0.69  # 3 phases × 230 V


def want(i, prio=0, target=math.inf, must=False, max_a=32.0, circuit=None, phases=(0, 1, 2),
         per_a=KW_PER_A):
    return Want(f"ev{i}", prio, per_a, 6.0, max_a, target, must, 8.0, circuit, phases)


def test_room_goes_to_the_higher_priority_and_the_rest_pause_rather_than_drop_below_6_a():
    wants = [want(0, prio=1), want(1, prio=5), want(2, prio=3)]
    amps = share(wants, hard_kw=7.0, surplus_kw=0.0, circuits=Circuits())
    assert amps["ev1"] >= 6.0 and amps["ev2"] == 0.0 and amps["ev0"] == 0.0
    assert sum(a * KW_PER_A for a in amps.values()) <= 7.0 + 1e-9


def test_minimums_go_round_before_anyone_gets_more():
    amps = share([want(0, prio=2), want(1, prio=1)], 9.0, 0.0, Circuits())
    assert amps == {"ev0": 7.0, "ev1": 6.0}


def test_a_circuit_limit_holds_on_every_phase():
    wants = [want(i, circuit="garage") for i in range(3)]
    amps = share(wants, math.inf, 0.0, Circuits({"garage": [40.0, 40.0, 40.0]}))
    assert sum(amps.values()) <= 40.0
    assert sorted(amps.values()) == [6.0, 6.0, 28.0]


def test_one_phase_chargers_only_load_their_phase_of_a_circuit():
    wants = [want(0, circuit="c", phases=(0,), per_a=0.23),
             want(1, circuit="c", phases=(1,), per_a=0.23)]
    amps = share(wants, math.inf, 0.0, Circuits({"c": [16.0, 16.0, 16.0]}))
    assert amps == {"ev0": 16.0, "ev1": 16.0}


def test_a_plan_target_limits_charging_and_surplus_tops_it_up():
    wants = [want(0, target=5.0), want(1, target=0.0)]
    assert economic_minimums(wants, 0.0) == {"ev0": True, "ev1": False}
    amps = share(wants, 100.0, 0.0, Circuits())
    assert amps["ev0"] == math.floor(5.0 / KW_PER_A * 10) / 10
    assert economic_minimums(wants, 5.0) == {"ev0": True, "ev1": True}


def test_a_car_out_of_slack_charges_flat_out_inside_the_hard_room():
    amps = share([want(0, target=0.0, must=True)], 15.0, 0.0, Circuits())
    assert amps["ev0"] == math.floor(15.0 / KW_PER_A * 10) / 10


@given(hard=st.floats(0, 200), surplus=st.floats(0, 100),
       prios=st.lists(st.integers(0, 5), min_size=1, max_size=8),
       limit=st.floats(0, 100), targets=st.lists(st.floats(0, 30), min_size=8, max_size=8))
def test_never_between_zero_and_the_minimum_nor_beyond_any_limit(hard, surplus, prios, limit,
                                                                   targets):
    wants = [want(i, p, target=targets[i], circuit="c") for i, p in enumerate(prios)]
    for w in wants:
        w.wants_min = economic_minimums(wants, surplus)[w.id]
    amps = share(wants, hard, surplus, Circuits({"c": [limit] * 3}))
    assert all(a == 0.0 or 6.0 <= a <= 32.0 for a in amps.values())
    assert sum(a * KW_PER_A for a in amps.values()) <= hard + 1e-6
    assert sum(amps.values()) <= max(limit, 0) + 1e-6

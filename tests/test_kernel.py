"""The compiled dispatch kernel against its pure-Python twin (the spec) and against the limits
it must never break (batteries, PV, flexible loads). A missing build makes these tests error, never skip: a skipped kernel
test would let a broken wheel ship."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import kernel_twin as twin
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.control import kernel as layout
from edge.control.kernel import KernelUnavailable, load_kernel

INF = math.inf
NAN = math.nan
CONSTANTS = ("B_P", "B_PREV", "B_SOC", "B_SOC_MIN", "B_SOC_MAX", "B_MAX_CH", "B_MAX_DIS",
             "B_RAMP", "B_OK", "NB", "V_P", "V_RATED", "V_PREV", "V_RAMP", "V_OK", "NV",
             "L_P", "L_RATED", "L_ON", "L_PRIO", "L_AGE", "L_MIN_ON", "L_MIN_OFF", "L_MARGIN",
             "L_OK", "NL",
             "STATUS_IMPORT_UNMET", "STATUS_EXPORT_UNMET", "STATUS_TARGET_UNMET")
PROPERTY = settings(deadline=None, max_examples=300)
LOAD_PROPERTY = settings(deadline=None, max_examples=150)  # rules of one small step each


@pytest.fixture(scope="module")
def kernel():
    return load_kernel()


@dataclass
class Case:
    grid_kw: float
    import_limit_kw: float
    export_limit_kw: float
    grid_target_kw: float
    dt_s: float
    bess: np.ndarray
    pv: np.ndarray
    loads: np.ndarray = field(default_factory=lambda: np.zeros((0, twin.NL)))

    def args(self) -> tuple:
        return (self.grid_kw, self.import_limit_kw, self.export_limit_kw, self.grid_target_kw,
                self.dt_s, self.bess, self.pv)


@dataclass
class Outcome:
    status: int
    bess_out: np.ndarray
    pv_out: np.ndarray
    site_out: np.ndarray
    load_out: np.ndarray


def run(fn, case: Case) -> Outcome:
    bess_out = np.full(len(case.bess), NAN)
    pv_out = np.full(len(case.pv), NAN)
    load_out = np.full(len(case.loads), NAN)
    site_out = np.full(3, NAN)
    status = fn(*case.args(), bess_out, pv_out, site_out, case.loads, load_out)
    return Outcome(status, bess_out, pv_out, site_out, load_out)


def kw(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def battery(draw) -> list[float]:
    soc_min = draw(st.sampled_from([0.0, 5.0, 20.0]))
    soc_max = draw(st.sampled_from([80.0, 95.0, 100.0]))
    soc = draw(st.one_of(st.sampled_from([soc_min, soc_max, 0.0, 100.0]), kw(0.0, 100.0)))
    max_ch = draw(kw(0.1, 50.0))
    max_dis = draw(kw(0.1, 50.0))
    # prev reaches outside the window: a battery whose limits just shrank.
    prev = draw(st.one_of(st.just(0.0), kw(-80.0, 80.0)))
    return [draw(kw(-50.0, 50.0)), prev, soc, soc_min, soc_max, max_ch, max_dis,
            draw(kw(0.01, 100.0)), draw(st.sampled_from([1.0, 1.0, 1.0, 0.0]))]


@st.composite
def inverter(draw) -> list[float]:
    rated = draw(kw(0.5, 100.0))
    measured = rated * draw(st.one_of(st.sampled_from([0.0, 1.0]), kw(0.0, 1.1)))
    prev = rated * draw(st.one_of(st.sampled_from([0.0, 1.0]), kw(0.0, 1.2)))
    return [measured, rated, prev, draw(kw(0.0, 50.0)),
            draw(st.sampled_from([1.0, 1.0, 1.0, 0.0]))]


@st.composite
def flex_load(draw, state: float | None = None) -> list[float]:
    rated = draw(kw(0.5, 60.0))
    on = draw(st.sampled_from([1.0, 0.0])) if state is None else state
    # Off loads mostly read 0 kW; a relay that just opened may still read its last draw.
    p = rated * draw(st.one_of(st.sampled_from([0.0, 1.0]), kw(0.0, 1.2))) if on or draw(
        st.booleans()) else 0.0
    min_on = draw(st.sampled_from([0.0, 60.0, 300.0]))
    min_off = draw(st.sampled_from([0.0, 60.0, 300.0]))
    # Ages right at the minimum times test the boundary.
    age = draw(st.one_of(st.sampled_from([0.0, min_on, min_off]), kw(0.0, 900.0)))
    prio = float(draw(st.integers(0, 4)))  # few values: ties must be ordered too
    margin = draw(st.one_of(st.just(0.0), st.just(0.1 * rated), kw(0.0, 20.0)))
    return [p, rated, on, prio, age, min_on, min_off, margin,
            draw(st.sampled_from([1.0, 1.0, 1.0, 0.0]))]


@st.composite
def cases(draw, overloaded: bool = False, shed: bool = False) -> Case:
    """Random sites. `overloaded`: the import limit is exceeded by up to what the loads draw,
    so shedding is both needed and often enough. `shed`: every load is off and the grid
    below a finite import limit, so restores are often close calls."""
    limit = st.one_of(st.just(INF), st.just(0.0), kw(0.0, 300.0))
    bess = draw(st.lists(battery(), max_size=6))
    pv = draw(st.lists(inverter(), max_size=4))
    state = 1.0 if overloaded else 0.0 if shed else None
    loads = draw(st.lists(flex_load(state), min_size=int(overloaded or shed), max_size=8))
    import_limit = draw(kw(0.0, 300.0) if overloaded or shed else limit)
    export_limit = draw(limit)
    if draw(st.booleans()) and draw(st.booleans()):
        # A grid floor (valley filling): import at least this, within the import limit.
        export_limit = -draw(kw(0.0, min(import_limit, 300.0)))
    grid = kw(-500.0, 500.0)
    if overloaded:
        grid = kw(0.0, 1.0).map(lambda f: import_limit + f * sum(row[0] for row in loads))
    elif shed:
        grid = kw(-100.0, 0.0).map(lambda d: import_limit + d)
    return Case(
        grid_kw=draw(grid),
        import_limit_kw=import_limit,
        export_limit_kw=export_limit,
        grid_target_kw=draw(st.one_of(st.just(NAN), st.just(0.0), kw(-300.0, 300.0))),
        dt_s=draw(st.one_of(st.sampled_from([0.0, 1.0]), kw(0.0, 10.0))),
        bess=np.array(bess, dtype=np.float64).reshape(-1, twin.NB),
        pv=np.array(pv, dtype=np.float64).reshape(-1, twin.NV),
        loads=np.array(loads, dtype=np.float64).reshape(-1, twin.NL),
    )


def ok_rows(matrix: np.ndarray, col: int) -> list[int]:
    return [i for i in range(len(matrix)) if matrix[i, col] > 0.5]


def window(row: np.ndarray) -> tuple[float, float]:
    lo = -row[twin.B_MAX_CH] if row[twin.B_SOC] < row[twin.B_SOC_MAX] else 0.0
    hi = row[twin.B_MAX_DIS] if row[twin.B_SOC] > row[twin.B_SOC_MIN] else 0.0
    return lo, hi


# -- layout and loading -------------------------------------------------------------------


def test_column_constants_match_the_compiled_kernel(kernel):
    for name in CONSTANTS:
        assert getattr(kernel, name) == getattr(layout, name) == getattr(twin, name), name


def test_missing_kernel_refuses_to_start(monkeypatch):
    monkeypatch.setitem(sys.modules, "edge._kernel", None)
    with pytest.raises(KernelUnavailable, match="pip install"):
        load_kernel()


def test_kernel_rejects_wrong_shapes(kernel):
    with pytest.raises(ValueError, match="columns"):
        kernel.dispatch(0.0, INF, INF, NAN, 1.0, np.zeros((1, 8)), np.zeros((0, 5)),
                        np.zeros(1), np.zeros(0), np.zeros(3))
    with pytest.raises(ValueError, match="lengths"):
        kernel.dispatch(0.0, INF, INF, NAN, 1.0, np.zeros((2, 9)), np.zeros((0, 5)),
                        np.zeros(1), np.zeros(0), np.zeros(3))
    with pytest.raises(ValueError, match="window"):
        kernel.dispatch(0.0, 5.0, -10.0, NAN, 1.0, np.zeros((0, 9)), np.zeros((0, 5)),
                        np.zeros(0), np.zeros(0), np.zeros(3))
    with pytest.raises(ValueError, match="window"):
        kernel.dispatch(0.0, NAN, INF, NAN, 1.0, np.zeros((0, 9)), np.zeros((0, 5)),
                        np.zeros(0), np.zeros(0), np.zeros(3))
    with pytest.raises(ValueError, match="loads must have 9 columns"):
        kernel.dispatch(0.0, INF, INF, NAN, 1.0, np.zeros((0, 9)), np.zeros((0, 5)),
                        np.zeros(0), np.zeros(0), np.zeros(3), np.zeros((1, 8)), np.zeros(1))
    with pytest.raises(ValueError, match="load_out must have length 2"):
        kernel.dispatch(0.0, INF, INF, NAN, 1.0, np.zeros((0, 9)), np.zeros((0, 5)),
                        np.zeros(0), np.zeros(0), np.zeros(3), np.zeros((2, 9)))


def test_negative_export_limit_is_an_import_floor_the_battery_charges_to_meet(kernel):
    # Valley filling: grid must import at least 30 kW; site imports 10 kW naturally.
    bess = np.array([[0.0, 0.0, 50.0, 10.0, 95.0, 50.0, 50.0, 1000.0, 1.0]])
    out, pv_out, site = np.zeros(1), np.zeros(0), np.zeros(3)
    kernel.dispatch(10.0, INF, -30.0, 0.0, 1.0, bess, np.zeros((0, 5)), out, pv_out, site)
    assert out[0] == pytest.approx(-20.0)
    assert site[0] == pytest.approx(30.0)


# -- agreement with the spec --------------------------------------------------------------


@PROPERTY
@given(st.one_of(cases(), cases(overloaded=True), cases(shed=True)))
def test_kernel_matches_twin_bit_for_bit(kernel, case):
    got, want = run(kernel.dispatch, case), run(twin.dispatch, case)
    assert got.status == want.status
    for name in ("bess_out", "pv_out", "site_out", "load_out"):
        a, b = getattr(got, name), getattr(want, name)
        # Exact, no tolerance: the same operations in the same order round the same way.
        # (Only the sign of a zero may differ: C's fmax(0.0, -0.0) may pick either.)
        assert np.array_equal(a, b, equal_nan=True), (name, a, b)


# -- limits never broken ------------------------------------------------------------------


@PROPERTY
@given(cases())
def test_batteries_stay_in_window_and_ramp_band(kernel, case):
    out = run(kernel.dispatch, case)
    for i, row in enumerate(case.bess):
        if row[twin.B_OK] <= 0.5:
            assert out.bess_out[i] == row[twin.B_P]
            continue
        lo_w, hi_w = window(row)
        assert lo_w <= out.bess_out[i] <= hi_w
        step = row[twin.B_RAMP] * case.dt_s
        prev = row[twin.B_PREV]
        lo_r, hi_r = prev - step, prev + step
        if hi_r >= lo_w and lo_r <= hi_w:
            # Moving away from 0 is ramp-limited; moving towards 0 (stopping) never is.
            if out.bess_out[i] > prev:
                assert out.bess_out[i] <= max(hi_r, 0.0) + 1e-9
            else:
                assert out.bess_out[i] >= min(lo_r, 0.0) - 1e-9
            assert not (prev >= 0.0 and out.bess_out[i] < min(lo_r, 0.0) - 1e-9)
            assert not (prev <= 0.0 and out.bess_out[i] > max(hi_r, 0.0) + 1e-9)


@PROPERTY
@given(cases())
def test_pv_limits_stay_in_rating_and_ramp(kernel, case):
    out = run(kernel.dispatch, case)
    for j, row in enumerate(case.pv):
        if row[twin.V_OK] <= 0.5:
            assert out.pv_out[j] == row[twin.V_PREV]
            continue
        assert 0.0 <= out.pv_out[j] <= row[twin.V_RATED]
        ceiling = max(row[twin.V_PREV], row[twin.V_P]) + row[twin.V_RAMP] * case.dt_s
        assert out.pv_out[j] <= ceiling + 1e-9


@PROPERTY
@given(cases())
def test_enough_capacity_meets_target(kernel, case):
    out = run(kernel.dispatch, case)
    bands = [twin.battery_band(row.tolist(), case.dt_s) for row in case.bess
             if row[twin.B_OK] > 0.5]
    required = out.site_out[1]
    fits = sum(lo for lo, _ in bands) <= required <= sum(hi for _, hi in bands)
    # With the batteries alone able to hold the target, PV need not be curtailed, provided
    # no inverter already reads above its rating (that surplus is always cut).
    pv_within_rating = all(row[twin.V_P] <= row[twin.V_RATED] for row in case.pv)
    if fits and pv_within_rating:
        assert out.site_out[0] == pytest.approx(out.site_out[2], abs=1e-6)
        assert out.status == 0


@PROPERTY
@given(cases())
def test_unmet_limits_mean_every_resource_is_spent(kernel, case):
    out = run(kernel.dispatch, case)
    pv_total = sum(max(case.pv[j, twin.V_P], 0.0) for j in ok_rows(case.pv, twin.V_OK))
    if out.status & twin.STATUS_EXPORT_UNMET and pv_total > 0.0:
        assert all(out.pv_out[j] == 0.0 for j in ok_rows(case.pv, twin.V_OK))
    pv_within_rating = all(row[twin.V_P] <= row[twin.V_RATED] for row in case.pv)
    if out.status & twin.STATUS_IMPORT_UNMET and pv_within_rating:
        for i in ok_rows(case.bess, twin.B_OK):
            _, hi = twin.battery_band(case.bess[i].tolist(), case.dt_s)
            assert out.bess_out[i] == pytest.approx(hi, abs=1e-9)


def leaving_kw(case: Case) -> float:
    """What loads switched off less than their min_off ago still read: about to go."""
    return sum(max(row[twin.L_P], 0.0) for row in case.loads
               if row[twin.L_OK] > 0.5 and row[twin.L_ON] <= 0.5
               and row[twin.L_AGE] < row[twin.L_MIN_OFF])


def battery_reach(case: Case) -> tuple[float, float, float]:
    """Grid without the controllable batteries, and the sums of their bands this cycle."""
    natural = case.grid_kw + sum(row[twin.B_P] for row in case.bess if row[twin.B_OK] > 0.5)
    bands = [twin.battery_band(row.tolist(), case.dt_s) for row in case.bess
             if row[twin.B_OK] > 0.5]
    return natural, sum(lo for lo, _ in bands), sum(hi for _, hi in bands)


def switched(case: Case, out: Outcome) -> tuple[list[int], list[int]]:
    """Rows of controllable loads shed and switched on by this call."""
    shed, on = [], []
    for k, row in enumerate(case.loads):
        if row[twin.L_OK] > 0.5:
            if row[twin.L_ON] > 0.5 and out.load_out[k] == 0.0:
                shed.append(k)
            elif row[twin.L_ON] <= 0.5 and out.load_out[k] == 1.0:
                on.append(k)
    return shed, on


@LOAD_PROPERTY
@given(st.one_of(cases(), cases(shed=True)))
def test_no_load_switched_inside_its_minimum_on_or_off_time(kernel, case):
    out = run(kernel.dispatch, case)
    shed, on = switched(case, out)
    for k in shed:
        assert case.loads[k, twin.L_AGE] >= case.loads[k, twin.L_MIN_ON]
    for k in on:
        assert case.loads[k, twin.L_AGE] >= case.loads[k, twin.L_MIN_OFF]
    assert all(v in (0.0, 1.0) for k, v in enumerate(out.load_out)
               if case.loads[k, twin.L_OK] > 0.5)


@LOAD_PROPERTY
@given(cases())
def test_non_controllable_load_is_never_switched(kernel, case):
    out = run(kernel.dispatch, case)
    for k, row in enumerate(case.loads):
        if row[twin.L_OK] <= 0.5:
            assert out.load_out[k] == row[twin.L_ON]


@LOAD_PROPERTY
@given(st.one_of(cases(), cases(overloaded=True)))
def test_loads_shed_lowest_priority_first_and_never_restored_in_the_same_call(kernel, case):
    out = run(kernel.dispatch, case)
    shed, on = switched(case, out)
    if not shed:
        return
    assert not on
    # Every load that could have been shed instead and matters less was shed too.
    top = max(case.loads[k, twin.L_PRIO] for k in shed)
    for k, row in enumerate(case.loads):
        sheddable = (row[twin.L_OK] > 0.5 and row[twin.L_ON] > 0.5 and row[twin.L_P] > 0.0
                     and row[twin.L_AGE] >= row[twin.L_MIN_ON])
        if sheddable and row[twin.L_PRIO] < top:
            assert k in shed, (k, shed)


@LOAD_PROPERTY
@given(st.one_of(cases(), cases(shed=True)))
def test_loads_restored_highest_priority_first_one_per_call_unless_below_a_floor(kernel, case):
    out = run(kernel.dispatch, case)
    shed, on = switched(case, out)
    if not on:
        return
    natural, sum_lo, _ = battery_reach(case)
    below_floor = -case.export_limit_kw - (natural - leaving_kw(case) - sum_lo) > 0.0
    if not below_floor:
        assert len(on) == 1
    # Nothing that comes before the first load switched on was left off for a smaller one.
    first = min(on, key=lambda k: (-case.loads[k, twin.L_PRIO], k))
    for k, row in enumerate(case.loads):
        restorable = (row[twin.L_OK] > 0.5 and row[twin.L_ON] <= 0.5
                      and row[twin.L_AGE] >= row[twin.L_MIN_OFF])
        before = (-row[twin.L_PRIO], k) < (-case.loads[first, twin.L_PRIO], first)
        if restorable and before:
            assert below_floor, "a restore skipped a higher-priority load"


@LOAD_PROPERTY
@given(st.one_of(cases(), cases(overloaded=True)))
def test_import_limit_met_when_enough_sheddable_load_exists(kernel, case):
    out = run(kernel.dispatch, case)
    natural, _, sum_hi = battery_reach(case)
    excess = natural - leaving_kw(case) - sum_hi - case.import_limit_kw
    sheddable = sum(row[twin.L_P] for row in case.loads
                    if row[twin.L_OK] > 0.5 and row[twin.L_ON] > 0.5 and row[twin.L_P] > 0.0
                    and row[twin.L_AGE] >= row[twin.L_MIN_ON])
    pv_within_rating = all(row[twin.V_P] <= row[twin.V_RATED] for row in case.pv)
    if pv_within_rating and sheddable >= excess + 1e-9:
        assert out.site_out[0] <= case.import_limit_kw + 1e-6
        assert not out.status & twin.STATUS_IMPORT_UNMET


@LOAD_PROPERTY
@given(st.one_of(cases(), cases(shed=True)))
def test_restoring_a_load_never_breaks_the_import_limit(kernel, case):
    out = run(kernel.dispatch, case)
    _, on = switched(case, out)
    pv_within_rating = all(row[twin.V_P] <= row[twin.V_RATED] for row in case.pv)
    if on and pv_within_rating:
        assert not out.status & twin.STATUS_IMPORT_UNMET
        assert out.site_out[0] <= case.import_limit_kw + 1e-6


# -- hand-computed cases ------------------------------------------------------------------


def bess_row(*, p=0.0, prev=0.0, soc=50.0, max_ch=10.0, max_dis=10.0, ramp=100.0, ok=1.0):
    return [p, prev, soc, 10.0, 90.0, max_ch, max_dis, ramp, ok]


def pv_row(*, p, rated, prev=None, ramp=100.0, ok=1.0):
    return [p, rated, rated if prev is None else prev, ramp, ok]


def load_row(*, rated, prio, on=True, p=None, age=1000.0, min_on=60.0, min_off=60.0,
             margin=None, ok=1.0):
    draw = (rated if on else 0.0) if p is None else p
    margin = 0.1 * rated if margin is None else margin
    return [draw, rated, 1.0 if on else 0.0, prio, age, min_on, min_off, margin, ok]


def call(kernel, *, grid_kw, bess=(), pv=(), loads=(), imp=INF, exp=INF, target=NAN, dt=1.0):
    return layout.dispatch(
        kernel, grid_kw=grid_kw, import_limit_kw=imp, export_limit_kw=exp,
        grid_target_kw=target, dt_s=dt,
        bess=np.array(bess, dtype=np.float64).reshape(-1, layout.NB),
        pv=np.array(pv, dtype=np.float64).reshape(-1, layout.NV),
        loads=np.array(loads, dtype=np.float64).reshape(-1, layout.NL),
    )


def test_zero_export_curtails_pv_when_battery_full(kernel):
    # 10 kW of PV, 5 kW exported, battery at SoC max: only the PV can absorb the surplus.
    r = call(kernel, grid_kw=-5.0, exp=0.0, bess=[bess_row(soc=90.0)], pv=[pv_row(p=10.0, rated=10.0)])
    assert r.bess_kw.tolist() == [0.0]
    assert r.pv_limit_kw.tolist() == [5.0]
    assert r.expected_grid_kw == pytest.approx(0.0, abs=1e-12)
    assert r.status == 0


def test_import_limit_shared_by_headroom(kernel):
    # 30 kW import against a 10 kW limit: 20 kW split 10:30 by discharge headroom.
    r = call(kernel, grid_kw=30.0, imp=10.0,
             bess=[bess_row(max_dis=10.0), bess_row(max_dis=30.0)])
    assert r.bess_kw.tolist() == pytest.approx([5.0, 15.0])
    assert (r.required_bess_kw, r.target_kw, r.expected_grid_kw) == pytest.approx((20.0, 10.0, 10.0))
    assert r.status == 0


def test_ramp_limits_battery_step(kernel):
    # Target 0 kW asks for 10 kW of discharge; 1 kW/s over 2 s allows 2 kW this cycle.
    r = call(kernel, grid_kw=10.0, target=0.0, dt=2.0, bess=[bess_row(ramp=1.0)])
    assert r.bess_kw.tolist() == [2.0]
    assert r.expected_grid_kw == pytest.approx(8.0)
    assert r.target_unmet and not r.import_unmet


def test_battery_may_stop_at_once_when_a_limit_needs_it(kernel):
    # Discharging 30 kW at zero export when the load vanished: ramp 1 kW/s must not force
    # 29 kW of export; stopping is never ramp-limited.
    r = call(kernel, grid_kw=-30.0, exp=0.0, bess=[bess_row(p=30.0, prev=30.0, max_dis=40.0, ramp=1.0)])
    assert r.bess_kw.tolist() == [0.0]
    assert r.expected_grid_kw == pytest.approx(0.0, abs=1e-12)
    assert not r.export_unmet


def test_curtailed_pv_is_released_into_battery_charge_room(kernel):
    # PV held at 50 of 100 kW, grid at 0, battery idle with room to charge: the release must
    # not wait for an export margin that never comes (the battery only sees surplus it gets).
    r = call(kernel, grid_kw=0.0, target=0.0, exp=0.0, dt=1.0,
             bess=[bess_row()], pv=[pv_row(p=50.0, rated=100.0, prev=50.0, ramp=5.0)])
    assert r.pv_limit_kw.tolist() == [55.0]


def test_depleted_battery_is_held_at_its_window_despite_ramp(kernel):
    # Last setpoint 8 kW discharge but the SoC hit its minimum: the window wins over the ramp.
    r = call(kernel, grid_kw=10.0, target=0.0, bess=[bess_row(p=8.0, prev=8.0, soc=10.0, ramp=1.0)])
    assert r.bess_kw.tolist() == [0.0]
    assert r.expected_grid_kw == pytest.approx(18.0)


def test_unavailable_devices_are_left_alone(kernel):
    r = call(kernel, grid_kw=-20.0, exp=0.0,
             bess=[bess_row(p=-3.0, ok=0.0), bess_row()],
             pv=[pv_row(p=4.0, rated=10.0, prev=6.0, ok=0.0), pv_row(p=20.0, rated=20.0)])
    assert r.bess_kw.tolist() == [-3.0, -10.0]
    assert r.pv_limit_kw.tolist() == [6.0, 10.0]
    assert r.expected_grid_kw == pytest.approx(0.0, abs=1e-12)


def test_pv_release_respects_ramp_and_export_margin(kernel):
    # Both curtailed; 3 kW export margin shared 1:2 by rating, then capped by each ramp.
    r = call(kernel, grid_kw=-2.0, exp=5.0, dt=1.0,
             pv=[pv_row(p=4.0, rated=10.0, prev=4.0, ramp=0.5),
                 pv_row(p=8.0, rated=20.0, prev=8.0, ramp=50.0)])
    assert r.pv_limit_kw.tolist() == pytest.approx([4.5, 10.0])
    assert r.status == 0


def test_no_devices_reports_what_cannot_be_met(kernel):
    r = call(kernel, grid_kw=12.0, imp=10.0)
    assert r.expected_grid_kw == 12.0 and r.target_kw == 10.0
    assert r.import_unmet and r.target_unmet and not r.export_unmet


def test_batteries_with_different_ramps_each_stay_in_their_own_band(kernel):
    # 40 kW asked of three idle batteries ramping 1, 5 and 50 kW/s over 2 s: bands of 2, 10
    # and 60 kW (window 60), shared by headroom; each stays inside its own ramp.
    bess = [bess_row(max_dis=60.0, ramp=r) for r in (1.0, 5.0, 50.0)]
    r = call(kernel, grid_kw=40.0, target=0.0, dt=2.0, bess=bess)
    assert r.bess_kw.tolist() == pytest.approx([40 * 2 / 72, 40 * 10 / 72, 40 * 60 / 72])
    assert r.expected_grid_kw == pytest.approx(0.0, abs=1e-9)
    # From 1, 4 and 30 kW of discharge to 20 kW of charge asked: each may go down by its own
    # step (2, 10, 100 kW) from where it was, so charge at most 1, 6 and 60 (window) kW,
    # shared by that headroom.
    moving = [bess_row(p=p, prev=p, max_dis=60.0, max_ch=60.0, ramp=r)
              for p, r in ((1.0, 1.0), (4.0, 5.0), (30.0, 50.0))]
    r = call(kernel, grid_kw=-55.0, target=0.0, dt=2.0, bess=moving)
    assert r.bess_kw.tolist() == pytest.approx([-20 * 1 / 67, -20 * 6 / 67, -20 * 60 / 67])
    # 80 kW asked: more than the 72 kW the ramps allow; each at its own limit, rest reported.
    r = call(kernel, grid_kw=80.0, target=0.0, dt=2.0, bess=bess)
    assert r.bess_kw.tolist() == pytest.approx([2.0, 10.0, 60.0])
    assert r.target_unmet


def test_loads_shed_lowest_priority_first_until_the_import_limit_holds(kernel):
    # 95 kW against 60 kW with a 10 kW battery: 25 kW over. Priorities 1 and 2 go (2 x 15 kW);
    # priority 3 stays. The battery keeps discharging what it can.
    loads = [load_row(rated=15.0, prio=3.0), load_row(rated=15.0, prio=1.0),
             load_row(rated=15.0, prio=2.0)]
    r = call(kernel, grid_kw=95.0, imp=60.0, bess=[bess_row()], loads=loads)
    assert r.load_on.tolist() == [1.0, 0.0, 0.0]
    assert r.bess_kw.tolist() == pytest.approx([5.0])
    assert r.expected_grid_kw == pytest.approx(60.0)
    assert not r.import_unmet


def test_load_inside_its_minimum_on_time_is_not_shed(kernel):
    # The least important load was switched on 30 s ago (min_on 60 s): the next one goes.
    loads = [load_row(rated=10.0, prio=0.0, age=30.0), load_row(rated=10.0, prio=5.0)]
    r = call(kernel, grid_kw=70.0, imp=65.0, loads=loads)
    assert r.load_on.tolist() == [1.0, 0.0]
    # Nothing else may go: the limit is reported unmet, not hidden.
    r = call(kernel, grid_kw=70.0, imp=65.0, loads=loads[:1])
    assert r.load_on.tolist() == [1.0]
    assert r.import_unmet


def test_power_of_a_load_just_shed_is_not_shed_again(kernel):
    # A poll after the shed the meters still read the 20 kW of the load switched off 2 s ago:
    # 115 kW against 100. That power is leaving, so no second load goes for it.
    loads = [load_row(rated=20.0, prio=0.0, on=False, p=20.0, age=2.0),
             load_row(rated=20.0, prio=1.0)]
    r = call(kernel, grid_kw=115.0, imp=100.0, loads=loads)
    assert r.load_on.tolist() == [0.0, 1.0]
    assert r.expected_grid_kw == pytest.approx(95.0) and not r.import_unmet
    # Still read after its min_off (60 s): it is drawing, and counts as it reads.
    loads[0][layout.L_AGE] = 61.0
    assert call(kernel, grid_kw=115.0, imp=100.0, loads=loads).load_on.tolist() == [0.0, 0.0]


def test_grid_target_never_sheds_a_load(kernel):
    # Self-consumption asks for 0 kW; the battery is empty. Loads stay on: only a limit sheds.
    r = call(kernel, grid_kw=40.0, target=0.0, bess=[bess_row(soc=10.0)],
             loads=[load_row(rated=20.0, prio=0.0)])
    assert r.load_on.tolist() == [1.0]
    assert r.target_unmet and not r.import_unmet


def test_one_load_restored_per_call_highest_priority_first(kernel):
    # Plenty of room; two shed loads past min_off: only the more important one comes back.
    loads = [load_row(rated=10.0, prio=1.0, on=False), load_row(rated=10.0, prio=4.0, on=False),
             load_row(rated=10.0, prio=9.0, on=False, age=10.0)]  # still inside min_off
    r = call(kernel, grid_kw=20.0, imp=100.0, loads=loads)
    assert r.load_on.tolist() == [0.0, 1.0, 0.0]
    assert r.expected_grid_kw == pytest.approx(30.0)


def test_restore_waits_for_headroom_beyond_the_load_itself(kernel):
    # 20 kW load with a 2 kW margin, 21 kW room: restoring would leave it 1 kW from being
    # shed again; it needs 22 kW of room.
    shed = [load_row(rated=20.0, prio=1.0, on=False, margin=2.0)]
    assert call(kernel, grid_kw=39.0, imp=60.0, loads=shed).load_on.tolist() == [0.0]
    assert call(kernel, grid_kw=38.0, imp=60.0, loads=shed).load_on.tolist() == [1.0]
    shed[0][layout.L_MARGIN] = 5.0  # a noisier site asks for more
    assert call(kernel, grid_kw=38.0, imp=60.0, loads=shed).load_on.tolist() == [0.0]


def test_restore_holds_room_for_loads_that_have_not_started_drawing(kernel):
    # A 20 kW load switched on 5 s ago still reads 0 kW: its 20 kW are reserved, so the
    # second load (needs 22 kW of room) waits although the meter shows 35 kW free.
    loads = [load_row(rated=20.0, prio=1.0, p=0.0, age=5.0),
             load_row(rated=20.0, prio=1.0, on=False)]
    assert call(kernel, grid_kw=25.0, imp=60.0, loads=loads).load_on.tolist() == [1.0, 0.0]
    # Once it draws (or its min_on has passed), the room is what the meter shows.
    loads[0][layout.L_P] = 20.0
    assert call(kernel, grid_kw=45.0, imp=70.0, loads=loads).load_on.tolist() == [1.0, 1.0]


def test_restore_counts_on_battery_discharge_in_the_same_call(kernel):
    # 45 kW against a 50 kW limit, 30 kW of battery discharge free: the 20 kW load comes
    # back and the battery already covers it in this call, so the grid never reads 65 kW.
    r = call(kernel, grid_kw=45.0, imp=50.0, bess=[bess_row(max_dis=30.0)],
             loads=[load_row(rated=20.0, prio=1.0, on=False)])
    assert r.load_on.tolist() == [1.0]
    assert r.bess_kw.tolist() == pytest.approx([15.0])
    assert r.expected_grid_kw == pytest.approx(50.0)
    assert not r.import_unmet


def test_grid_floor_switches_on_deferrable_loads_the_battery_cannot_absorb(kernel):
    # Valley filling: import at least 30 kW; the site draws 5 kW and the battery is full.
    # Both loads go on in one call (the floor needs them), highest priority first.
    loads = [load_row(rated=10.0, prio=1.0, on=False), load_row(rated=15.0, prio=2.0, on=False),
             load_row(rated=40.0, prio=0.0, on=False)]  # would break the 60 kW import limit
    r = call(kernel, grid_kw=5.0, imp=60.0, exp=-30.0, bess=[bess_row(soc=90.0)], loads=loads)
    assert r.load_on.tolist() == [1.0, 1.0, 0.0]
    assert r.expected_grid_kw == pytest.approx(30.0)
    assert not r.export_unmet


def test_grid_floor_the_battery_can_meet_switches_no_load(kernel):
    r = call(kernel, grid_kw=5.0, imp=60.0, exp=-15.0, bess=[bess_row()],
             loads=[load_row(rated=10.0, prio=1.0, on=False, age=10.0)])  # inside min_off
    assert r.load_on.tolist() == [0.0]
    assert r.bess_kw.tolist() == pytest.approx([-10.0])


def test_unavailable_load_keeps_its_state(kernel):
    r = call(kernel, grid_kw=100.0, imp=50.0,
             loads=[load_row(rated=30.0, prio=0.0, ok=0.0), load_row(rated=30.0, prio=1.0)])
    assert r.load_on.tolist() == [1.0, 0.0]

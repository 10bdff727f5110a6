"""The compiled dispatch kernel against its pure-Python twin (the spec) and against the limits
it must never break. A missing build makes these tests error, never skip: a skipped kernel
test would let a broken wheel ship."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import kernel_twin as twin
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import dispatch as layout
from edge.dispatch import KernelUnavailable, load_kernel

INF = math.inf
NAN = math.nan
CONSTANTS = ("B_P", "B_PREV", "B_SOC", "B_SOC_MIN", "B_SOC_MAX", "B_MAX_CH", "B_MAX_DIS",
             "B_RAMP", "B_OK", "NB", "V_P", "V_RATED", "V_PREV", "V_RAMP", "V_OK", "NV",
             "STATUS_IMPORT_UNMET", "STATUS_EXPORT_UNMET", "STATUS_TARGET_UNMET")
PROPERTY = settings(deadline=None, max_examples=300)


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

    def args(self) -> tuple:
        return (self.grid_kw, self.import_limit_kw, self.export_limit_kw, self.grid_target_kw,
                self.dt_s, self.bess, self.pv)


@dataclass
class Outcome:
    status: int
    bess_out: np.ndarray
    pv_out: np.ndarray
    site_out: np.ndarray


def run(fn, case: Case) -> Outcome:
    bess_out = np.full(len(case.bess), NAN)
    pv_out = np.full(len(case.pv), NAN)
    site_out = np.full(3, NAN)
    status = fn(*case.args(), bess_out, pv_out, site_out)
    return Outcome(status, bess_out, pv_out, site_out)


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
def cases(draw) -> Case:
    limit = st.one_of(st.just(INF), st.just(0.0), kw(0.0, 300.0))
    bess = draw(st.lists(battery(), max_size=6))
    pv = draw(st.lists(inverter(), max_size=4))
    return Case(
        grid_kw=draw(kw(-500.0, 500.0)),
        import_limit_kw=draw(limit),
        export_limit_kw=draw(limit),
        grid_target_kw=draw(st.one_of(st.just(NAN), st.just(0.0), kw(-300.0, 300.0))),
        dt_s=draw(st.one_of(st.sampled_from([0.0, 1.0]), kw(0.0, 10.0))),
        bess=np.array(bess, dtype=np.float64).reshape(-1, twin.NB),
        pv=np.array(pv, dtype=np.float64).reshape(-1, twin.NV),
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
    with pytest.raises(ValueError, match="limits"):
        kernel.dispatch(0.0, -1.0, INF, NAN, 1.0, np.zeros((0, 9)), np.zeros((0, 5)),
                        np.zeros(0), np.zeros(0), np.zeros(3))


# -- agreement with the spec --------------------------------------------------------------


@PROPERTY
@given(cases())
def test_kernel_matches_twin(kernel, case):
    got, want = run(kernel.dispatch, case), run(twin.dispatch, case)
    assert got.status == want.status
    np.testing.assert_allclose(got.bess_out, want.bess_out, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.pv_out, want.pv_out, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.site_out, want.site_out, rtol=1e-9, atol=1e-9)


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


# -- hand-computed cases ------------------------------------------------------------------


def bess_row(*, p=0.0, prev=0.0, soc=50.0, max_ch=10.0, max_dis=10.0, ramp=100.0, ok=1.0):
    return [p, prev, soc, 10.0, 90.0, max_ch, max_dis, ramp, ok]


def pv_row(*, p, rated, prev=None, ramp=100.0, ok=1.0):
    return [p, rated, rated if prev is None else prev, ramp, ok]


def call(kernel, *, grid_kw, bess=(), pv=(), imp=INF, exp=INF, target=NAN, dt=1.0):
    return layout.dispatch(
        kernel, grid_kw=grid_kw, import_limit_kw=imp, export_limit_kw=exp,
        grid_target_kw=target, dt_s=dt,
        bess=np.array(bess, dtype=np.float64).reshape(-1, layout.NB),
        pv=np.array(pv, dtype=np.float64).reshape(-1, layout.NV),
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

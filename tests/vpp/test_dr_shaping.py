"""Shaping a DR event into grid instructions: ramp-in tightening monotonically to the level
at the start, hold at baseline ∓ declared, staggered restore up to the baseline peak (no
rebound above it), both directions, short notice, and how the shape combines in the book."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from edge.config import ControlConfig, DrConfig
from edge.control.instructions import Instruction, InstructionBook
from edge.vpp.baseline import event_intervals
from edge.vpp.shaping import (
    DrEvent,
    DrRejected,
    Segment,
    event_instructions,
    limit_problems,
    pieces,
    site_window,
)

T = datetime(2026, 6, 22, 8, 45, tzinfo=UTC)  # 16:45 in Shanghai
CFG = DrConfig(target_ratio=1.0, ramp_in_s=600, restore_s=900, restore_steps=3)
MIN = timedelta(minutes=1)


def event(direction="reduce", kw=20.0, target_kw=None, minutes=60, **kw_args) -> DrEvent:
    return DrEvent("ev1", "grid_operator", direction, T, T + timedelta(minutes=minutes), kw=kw,
                   target_kw=target_kw, **kw_args)


def kinds(ins: list[Instruction], kind: str) -> list[Instruction]:
    return [i for i in ins if f"#{kind}" in i.id]


def contiguous(ins: list[Instruction]) -> bool:
    return all(a.end == b.start for a, b in zip(ins, ins[1:], strict=False))


def test_reduce_ramps_in_holds_and_restores_in_steps():
    base = [60.0, 62.0, 64.0, 66.0]
    ins = event_instructions(event(), base, CFG)
    ramp, hold, restore = kinds(ins, "ramp"), kinds(ins, "hold"), kinds(ins, "restore")
    assert len(ins) == len(ramp) + len(hold) + len(restore)
    assert all(i.source == "grid_operator" for i in ins)

    # ramp-in: 10 one-minute steps from 16:35, ceiling tightening linearly 58 .. 40
    assert len(ramp) == 10 and contiguous(ramp)
    assert ramp[0].start == T - 10 * MIN and ramp[-1].end == T
    caps = [i.grid_max_kw for i in ramp]
    assert caps == pytest.approx([60 - 2 * k for k in range(1, 11)])
    assert all(a > b for a, b in zip(caps, caps[1:], strict=False)), "monotone"
    assert caps[-1] == pytest.approx(40.0), "at the level when the event starts"
    assert all(math.isnan(i.grid_target_kw) for i in ramp)

    # hold: baseline - 20 per quarter hour, as ceiling and target
    assert contiguous(hold) and hold[0].start == T and hold[-1].end == T + 60 * MIN
    assert [i.grid_max_kw for i in hold] == pytest.approx([40, 42, 44, 46])
    assert [i.grid_target_kw for i in hold] == pytest.approx([40, 42, 44, 46])

    # restore: 3 steps of 5 min from the last level (46) to the baseline peak (66)
    assert contiguous(restore) and restore[0].start == T + 60 * MIN
    assert restore[-1].end == T + 75 * MIN
    assert [i.grid_max_kw for i in restore] == pytest.approx([46 + 20 / 3, 46 + 40 / 3, 66])
    assert max(i.grid_max_kw for i in restore) <= max(base), "no rebound above the baseline peak"
    assert all(i.grid_min_kw == -math.inf for i in ins)


def test_increase_raises_a_floor_and_lowers_it_in_steps_after():
    base = [10.0, 12.0]
    ins = event_instructions(event("increase", kw=30.0, minutes=30), base, CFG)
    ramp, hold, restore = kinds(ins, "ramp"), kinds(ins, "hold"), kinds(ins, "restore")
    floors = [i.grid_min_kw for i in ramp]
    assert floors == pytest.approx([10 + 3 * k for k in range(1, 11)])
    assert all(a < b for a, b in zip(floors, floors[1:], strict=False))
    assert [i.grid_min_kw for i in hold] == pytest.approx([40, 42])
    assert [i.grid_target_kw for i in hold] == pytest.approx([40, 42])
    # restore from 42 down to the baseline minimum 10
    assert [i.grid_min_kw for i in restore] == pytest.approx([42 - 32 / 3, 42 - 64 / 3, 10])
    assert all(i.grid_max_kw == math.inf for i in ins)


def test_equal_levels_merge_into_one_hold():
    hold = kinds(event_instructions(event(), [60, 60, 60, 64], CFG), "hold")
    assert [(i.start, i.end, i.grid_max_kw) for i in hold] == [
        (T, T + 45 * MIN, 40.0), (T + 45 * MIN, T + 60 * MIN, 44.0)]


def test_target_ratio_aims_past_the_declared_amount():
    hold = kinds(event_instructions(event(), [60] * 4, DrConfig(target_ratio=1.05)), "hold")
    assert hold[0].grid_max_kw == pytest.approx(60 - 21)


def test_target_event_holds_the_target_and_declares_the_distance():
    ev = event(kw=None, target_kw=35.0, minutes=30)
    ins = event_instructions(ev, [60.0, 30.0], CFG)
    hold = kinds(ins, "hold")
    assert [(i.start, i.end, i.grid_max_kw) for i in hold] == [(T, T + 30 * MIN, 35.0)]
    starts, _ = event_intervals(ev.start, ev.end)
    # 25 kW asked in the first quarter; in the second the site is already below the target
    assert [p.declared_kw for p in pieces(ev, [60.0, 30.0], starts, 1.0)] == [25.0, 0.0]


def test_short_notice_ramps_over_what_is_left_and_drops_the_past():
    ins = event_instructions(event(), [60.0] * 4, CFG, now=T - 3 * MIN)
    ramp = kinds(ins, "ramp")
    assert len(ramp) == 3 and ramp[0].start == T - 3 * MIN
    assert [i.grid_max_kw for i in ramp] == pytest.approx([60 - 20 / 3, 60 - 40 / 3, 40])
    late = event_instructions(event(), [60.0] * 4, CFG, now=T + 20 * MIN)
    assert not kinds(late, "ramp")
    assert min(i.end for i in late) > T + 20 * MIN
    assert kinds(late, "hold")[0].end == T + 60 * MIN


def test_segments_step_between_their_amounts():
    ev = DrEvent("ev2", "park", "reduce", T, T + 30 * MIN, segments=(
        Segment(T, T + 15 * MIN, kw=10.0), Segment(T + 15 * MIN, T + 30 * MIN, kw=30.0)))
    hold = kinds(event_instructions(ev, [60.0, 60.0], CFG), "hold")
    assert [i.grid_max_kw for i in hold] == pytest.approx([50.0, 30.0])
    assert all(i.source == "park" for i in hold)


def test_no_ramp_or_restore_when_configured_off():
    cfg = DrConfig(target_ratio=1.0, ramp_in_s=0, restore_s=0)
    ins = event_instructions(event(), [60.0] * 4, cfg)
    assert ins and all("#hold" in i.id for i in ins)


def test_baseline_length_must_match_the_event():
    with pytest.raises(ValueError, match="spans 4 quarter hours"):
        event_instructions(event(), [60.0, 60.0], CFG)


def test_bad_events_are_rejected_naming_the_field():
    with pytest.raises(DrRejected, match="kw/target_kw needs exactly one"):
        event(kw=None)
    with pytest.raises(DrRejected, match="source"):
        DrEvent("x", "plan", "reduce", T, T + MIN, kw=5.0)
    with pytest.raises(DrRejected, match="end"):
        DrEvent("x", "park", "reduce", T, T, kw=5.0)
    with pytest.raises(DrRejected, match="kw -5"):
        event(kw=-5.0)
    with pytest.raises(DrRejected, match="UTC offset"):
        DrEvent("x", "park", "reduce", datetime(2026, 6, 22), datetime(2026, 6, 23), kw=5.0)


def test_levels_beyond_the_site_limits_are_named():
    ev = event(kw=50.0, minutes=15)
    starts, _ = event_intervals(ev.start, ev.end)
    problems = limit_problems(ev, pieces(ev, [30.0], starts, 1.0), ControlConfig(export_limit_kw=0))
    assert len(problems) == 1 and "control.export_limit_kw" in problems[0]
    up = event("increase", kw=50.0, minutes=15)
    problems = limit_problems(up, pieces(up, [40.0], starts, 1.0), ControlConfig(import_limit_kw=80))
    assert "control.import_limit_kw" in problems[0]


def test_in_the_book_dr_bounds_a_park_target_and_outranks_the_plan():
    book = InstructionBook()
    for i in event_instructions(event(), [60.0] * 4, CFG):
        book.put(i)
    book.put(Instruction("park:1", "park", T - 30 * MIN, T + 90 * MIN, grid_target_kw=55.0))
    book.put(Instruction("plan:1", "plan", T - 30 * MIN, T + 90 * MIN, grid_min_kw=50.0))
    during = book.combine(T + 5 * MIN)
    assert during.grid_max_kw == pytest.approx(40.0)
    assert during.grid_target_kw == pytest.approx(40.0), "DR's own target wins"
    assert during.grid_min_kw == -math.inf and not during.conflicts, \
        "the plan's bounds are soft: a plan floor never binds against a DR ceiling"
    ramping = book.combine(T - 5 * MIN + timedelta(seconds=1))
    assert ramping.grid_max_kw == pytest.approx(48.0)  # step 6 of 10
    assert ramping.grid_target_kw == pytest.approx(48.0), "the park target is clamped in"
    after = book.combine(T + 61 * MIN)
    assert after.grid_max_kw == pytest.approx(40 + 20 / 3)
    assert book.combine(T + 76 * MIN).grid_max_kw == math.inf


def test_the_margin_never_pushes_a_level_past_a_site_limit():
    # zero-export site: a 20 kW cut from 20 kW is allowed; the 2 % margin would export
    ev = event(kw=20.0, minutes=15)
    window = site_window(ControlConfig(export_limit_kw=0))
    starts, _ = event_intervals(ev.start, ev.end)
    ps = pieces(ev, [20.0], starts, 1.02, window)
    assert ps[0].level_kw == 0.0 and not limit_problems(ev, ps, ControlConfig(export_limit_kw=0))
    hold = kinds(event_instructions(ev, [20.0], DrConfig(), window=window), "hold")
    assert hold[0].grid_max_kw == 0.0

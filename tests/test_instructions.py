"""How DR, park dispatch and the plan combine into the cycle's grid window and target."""

import math
from datetime import UTC, datetime, timedelta

from edge.control.bounds import SiteBounds, apply_instructions
from edge.control.instructions import Instruction, InstructionBook

T0 = datetime(2026, 6, 22, 8, tzinfo=UTC)
H = timedelta(hours=1)


def _i(id_, source, **kw):
    return Instruction(id_, source, T0, T0 + H, **kw)


def test_most_restrictive_bound_wins_and_a_lower_priority_conflict_is_dropped_and_named():
    book = InstructionBook()
    book.put(_i("dr", "grid_operator", grid_max_kw=50.0))
    book.put(_i("park", "park", grid_max_kw=40.0))
    book.put(_i("fill", "park", grid_min_kw=60.0))  # cannot hold with the DR cap
    c = book.combine(T0 + timedelta(minutes=5))
    assert c.grid_max_kw == 40.0 and c.grid_min_kw == -math.inf
    assert c.active == ("dr", "park") and c.conflicts == ("fill",)


def test_instructions_outside_their_window_are_not_in_force():
    book = InstructionBook()
    book.put(_i("dr", "grid_operator", grid_max_kw=50.0))
    assert book.combine(T0 - timedelta(seconds=1)).active == ()
    assert book.combine(T0 + H).active == ()  # end is exclusive


def test_reduce_target_never_makes_a_site_below_it_climb_up_to_it():
    """A 30 kW reduce level on a site that would import 20 kW anyway: the DR target does
    not apply (no charging from the grid at the peak); the plan's target decides."""
    book = InstructionBook()
    book.put(_i("dr", "grid_operator", grid_max_kw=30.0, grid_target_kw=30.0, target_side="down"))
    book.put(_i("plan", "plan", grid_target_kw=12.0))
    c = book.combine(T0)
    assert apply_instructions(SiteBounds(), c, natural_kw=20.0).grid_target_kw == 12.0
    b = apply_instructions(SiteBounds(), c, natural_kw=80.0)
    assert b.grid_target_kw == 30.0 and b.import_limit_kw == 30.0


def test_increase_target_applies_only_while_the_site_imports_less_than_the_level():
    book = InstructionBook()
    book.put(_i("fill", "grid_operator", grid_min_kw=50.0, grid_target_kw=50.0, target_side="up"))
    c = book.combine(T0)
    assert apply_instructions(SiteBounds(), c, natural_kw=10.0).grid_target_kw == 50.0
    b = apply_instructions(SiteBounds(grid_target_kw=math.nan), c, natural_kw=70.0)
    assert math.isnan(b.grid_target_kw) and b.export_limit_kw == -50.0


def test_plan_cap_steers_the_target_but_is_not_a_limit_that_would_shed_loads():
    book = InstructionBook()
    book.put(_i("plan", "plan", grid_max_kw=59.5, grid_target_kw=70.0))
    b = apply_instructions(SiteBounds(import_limit_kw=100.0), book.combine(T0), natural_kw=90.0)
    assert b.import_limit_kw == 100.0
    assert b.soft_import_cap_kw == 59.5 and b.grid_target_kw == 59.5


def test_instruction_beyond_the_site_limits_is_cut_to_them_and_flagged():
    book = InstructionBook()
    book.put(_i("fill", "park", grid_min_kw=120.0))
    b = apply_instructions(SiteBounds(import_limit_kw=100.0, export_limit_kw=0.0),
                           book.combine(T0))
    assert b.clipped and b.import_limit_kw == 100.0 and b.export_limit_kw == 0.0

"""Every decision says why: what steers the grid (plan, park dispatch, DR event or the
control functions) and which limit binds; the log says it when that changes, not every
cycle."""

from __future__ import annotations

import logging
import math
from datetime import timedelta

import pytest
from test_decide import SITE, T0, image

from drivers.base import Quality
from edge.control.decide import Controller
from edge.control.instructions import Instruction, InstructionBook
from edge.control.kernel import load_kernel


@pytest.fixture
def ctl() -> Controller:
    return Controller(SITE, load_kernel())


def book_with(**fields) -> InstructionBook:
    book = InstructionBook()
    book.put(Instruction(fields.pop("id", "d-17"), fields.pop("source", "park"),
                         T0 - timedelta(minutes=1), T0 + timedelta(hours=1), **fields))
    return book


def test_without_instructions_the_functions_steer_and_say_their_target(ctl):
    d, _ = ctl.decide(image(grid=20.0), None, ctl.initial_memory(), 10.0)
    assert d.mode == "self_consumption+peak_shaving+export_limit"
    assert d.reason.startswith("self_consumption+peak_shaving+export_limit: grid to 0.0 kW")


def test_a_park_dispatch_names_itself_and_its_bound(ctl):
    d, _ = ctl.decide(image(grid=40.0), book_with(grid_max_kw=30.0), ctl.initial_memory(), 10.0)
    assert d.mode == "dispatch"
    assert d.reason.startswith("dispatch d-17: grid ≤ 30.0 kW")


def test_the_plan_names_its_battery_power(ctl):
    book = book_with(id="plan-3", source="plan", bess_target_kw=-20.0)
    d, _ = ctl.decide(image(grid=10.0), book, ctl.initial_memory(), 10.0)
    assert d.mode == "plan" and d.reason.startswith("plan plan-3: battery -20.0 kW")


def test_a_binding_import_limit_is_named(ctl):
    # 110 kW against the 60 kW limit: the 50 kW battery holds it, at the limit
    d, _ = ctl.decide(image(grid=110.0), None, ctl.initial_memory(), 10.0)
    assert "import limit 60.0 kW binds" in d.reason, d.reason
    d, _ = ctl.decide(image(grid=150.0), None, ctl.initial_memory(), 10.0)
    assert "import limit 60.0 kW not held" in d.reason, d.reason


def test_the_safe_state_says_which_meter_and_why(ctl):
    d, _ = ctl.decide(image(pcc=Quality.STALE), None, ctl.initial_memory(), 10.0)
    assert d.reason.startswith("safe state: PCC meter pcc is stale")
    assert not math.isnan(d.bess_kw["bess1"])


def test_the_log_says_it_when_the_reason_changes_not_every_cycle(ctl, caplog):
    caplog.set_level(logging.INFO, logger="edge.control.decide")
    mem = ctl.initial_memory()
    for i, grid in enumerate((20.0, 21.0, 22.0)):
        _, mem = ctl.decide(image(grid=grid), None, mem, 10.0 + i)
    _, mem = ctl.decide(image(grid=40.0), book_with(grid_max_kw=30.0), mem, 20.0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("control: ")]
    assert len(lines) == 2 and lines[1].startswith("control: dispatch d-17"), lines

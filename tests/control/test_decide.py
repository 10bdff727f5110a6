"""decide() as a function: no asyncio, no clock, no devices; the same image, book and memory
give the same decision, the memory passed in is left as it was, and each mode has its
trigger (docs/architecture.md)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from drivers.base import Quality, Reading
from edge.config import parse
from edge.control.decide import Controller, Mode
from edge.control.instructions import Instruction, InstructionBook
from edge.control.kernel import load_kernel
from edge.image.image import DeviceState, ProcessImage

T0 = datetime(2026, 6, 22, 12, tzinfo=UTC)
SITE = parse({
    "site": {"id": "s"},
    "devices": [
        {"id": "pv1", "host": "127.0.0.1", "role": "pv", "port": 1502, "rated_kw": 100},
        {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1503, "capacity_kwh": 200,
         "max_charge_kw": 50, "max_discharge_kw": 50},
        {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
        {"id": "heater", "host": "127.0.0.1", "role": "load", "port": 1505, "map": "flexload_generic",
         "rated_kw": 20, "min_on_s": 0, "min_off_s": 0},
    ],
    "control": {"import_limit_kw": 60, "export_limit_kw": 0},
    "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]},
})


def image(grid=40.0, pcc_missed=0, pcc=Quality.GOOD, heater_on=1.0, soc=50.0) -> ProcessImage:
    def state(dev, values, q=Quality.GOOD, missed=0):
        return DeviceState(Reading(dev, values), q, missed)

    return ProcessImage(T0, 1.0, {
        "pv1": state("pv1", {"power_kw": 10.0, "limit_kw": 100.0}),
        "bess1": state("bess1", {"power_kw": 0.0, "soc_pct": soc}),
        "pcc": state("pcc", {"power_kw": grid}, pcc, pcc_missed),
        "heater": state("heater", {"power_kw": 20.0 * heater_on, "on": heater_on}),
    })


@pytest.fixture
def ctl() -> Controller:
    return Controller(SITE, load_kernel())


def test_same_inputs_give_the_same_decision_and_leave_the_memory_as_it_was(ctl):
    memory = ctl.initial_memory()
    before = (dict((k, (w.value, w.at_s)) for k, w in memory.written.items()), memory.last)
    first, after = ctl.decide(image(), None, memory, 10.0)
    again, _ = ctl.decide(image(), None, memory, 10.0)
    assert first == again
    assert (dict((k, (w.value, w.at_s)) for k, w in memory.written.items()), memory.last) == before
    assert memory.roles["load"].by_id["heater"].on is None  # what decide observed is its own
    assert after.roles["load"].by_id["heater"].on is True
    assert after is not memory and after.last == first


def test_normal_mode_discharges_the_battery_towards_zero_grid(ctl):
    decision, _ = ctl.decide(image(grid=40.0), None, ctl.initial_memory(), 10.0)
    assert ctl.mode(image(), ctl.initial_memory()) is Mode.NORMAL
    assert decision.mode == "self_consumption+peak_shaving+export_limit"
    assert decision.bess_kw["bess1"] == pytest.approx(40.0)


def test_lost_pcc_meter_puts_every_device_in_its_safe_state(ctl):
    decision, _ = ctl.decide(image(pcc=Quality.STALE), None, ctl.initial_memory(), 10.0)
    assert decision.mode == "safe"
    assert decision.bess_kw == {"bess1": 0.0}
    assert decision.pv_limit_kw == {"pv1": 0.0}  # export-limited site: PV safe level 0 %
    assert decision.load_on == {"heater": True}  # its configured safe_state
    assert math.isnan(decision.expected_grid_kw)


def test_missed_pcc_poll_holds_the_last_setpoints(ctl):
    first, mem = ctl.decide(image(grid=40.0), None, ctl.initial_memory(), 10.0)
    held, _ = ctl.decide(image(grid=5.0, pcc_missed=1), None, mem, 11.0)
    assert held.mode == "hold" and held.setpoints == first.setpoints


def test_a_load_switch_holds_the_setpoints_until_a_second_fresh_poll_confirms_it(ctl):
    memory = ctl.initial_memory()
    decision, memory = ctl.decide(image(grid=70.0, soc=10.0), None, memory, 10.0)
    assert decision.load_on == {"heater": False}  # empty battery, import above 60 kW: shed
    memory = ctl.after_writes(memory, {"heater": 0.0, "bess1": 0.0, "pv1": 100.0}, 10.0)
    settling, memory = ctl.decide(image(grid=50.0, heater_on=0.0, soc=10.0), None, memory, 11.0)
    assert ctl.mode(image(heater_on=0.0), memory) is Mode.SETTLING
    assert settling.mode == "hold"
    _, memory = ctl.decide(image(grid=50.0, heater_on=0.0, soc=10.0), None, memory, 12.0)
    assert ctl.mode(image(heater_on=0.0), memory) is Mode.NORMAL


def test_an_instruction_in_the_book_bounds_the_grid(ctl):
    book = InstructionBook()
    book.put(Instruction(id="d-1", source="park", start=T0, end=T0.replace(hour=13),
                         grid_max_kw=20.0))
    decision, _ = ctl.decide(image(grid=40.0, soc=50.0), book, ctl.initial_memory(), 10.0)
    assert decision.instructions == ("d-1",)
    assert decision.bounds.import_limit_kw == 20.0
    assert decision.bess_kw["bess1"] >= 20.0 - 1e-6


def test_a_crashed_decision_is_the_safe_state_and_a_following_hold_repeats_it(ctl, monkeypatch):
    _, memory = ctl.decide(image(grid=40.0), None, ctl.initial_memory(), 10.0)
    import edge.control.decide as decide_mod

    def broken(*args, **kwargs):
        raise RuntimeError("bug in the kernel call")

    with monkeypatch.context() as m:
        m.setattr(decide_mod.kernel_mod, "dispatch", broken)
        crashed, memory = ctl.decide(image(grid=40.0), None, memory, 11.0)
    assert crashed.crashed and crashed.mode == "safe" and crashed.bess_kw == {"bess1": 0.0}
    held, _ = ctl.decide(image(grid=5.0, pcc_missed=1), None, memory, 12.0)
    assert held.mode == "hold" and held.bess_kw == {"bess1": 0.0}  # not the pre-crash 40 kW

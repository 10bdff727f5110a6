"""The write phase remembers each write as it completes: a cycle cancelled half-way (the
daemon stopping) keeps the shed that already went out, so the final safe state still
respects the load's minimum off time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from drivers.base import Quality, Reading
from edge.config import parse
from edge.control.decide import Controller
from edge.control.kernel import load_kernel
from edge.image.image import DeviceState, ProcessImage
from edge.setpoints.writer import Writer

SITE = parse({
    "site": {"id": "s"},
    "devices": [
        {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1503, "capacity_kwh": 200,
         "max_charge_kw": 50, "max_discharge_kw": 50, "soc_min_pct": 10},
        {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
        {"id": "heater", "host": "127.0.0.1", "role": "load", "port": 1505, "map": "flexload_generic",
         "rated_kw": 20, "min_on_s": 0, "min_off_s": 600, "safe_state": "on"},
    ],
    "control": {"import_limit_kw": 60},
    "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]},
})


class Relay:
    def __init__(self) -> None:
        self.writes: list[bool] = []

    async def write_on(self, on: bool, revert_s: int) -> None:
        self.writes.append(on)


class StuckPcs:
    async def write_power(self, kw: float, revert_s: int) -> None:
        await asyncio.sleep(3600)  # the daemon stops while this request is on the wire


def site_image(soc: float, heater_kw: float) -> ProcessImage:
    """70 kW at the PCC, the battery idle at `soc`, the heater drawing `heater_kw`."""
    def good(dev: str, values: dict) -> DeviceState:
        return DeviceState(Reading(dev, values), Quality.GOOD, 0)

    return ProcessImage(datetime(2026, 6, 22, 12, tzinfo=UTC), 1.0, {
        "bess1": good("bess1", {"power_kw": 0.0, "soc_pct": soc}),
        "pcc": good("pcc", {"power_kw": 70.0}),
        "heater": good("heater", {"power_kw": heater_kw, "on": float(heater_kw > 0)}),
    })


async def test_a_shed_that_went_out_is_remembered_when_the_cycle_is_cancelled():
    ctl = Controller(SITE, load_kernel())
    image = site_image(soc=10.0, heater_kw=20.0)
    decision, memory = ctl.decide(image, None, ctl.initial_memory(), 10.0)
    assert decision.load_on == {"heater": False}
    relay = Relay()
    writer = Writer(SITE, {"heater": relay, "bess1": StuckPcs()})
    task = asyncio.create_task(writer.write(
        decision, memory, 10.0, 5.0, False,
        lambda dev_id, value: ctl.after_writes(memory, {dev_id: value}, 10.0)))
    while not relay.writes:
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert memory.written["heater"].value == 0.0
    safe = ctl.safe(image, memory, 11.0)
    assert safe.load_on == {"heater": False}  # min_off_s holds it off, not its safe "on"


async def test_a_write_that_times_out_is_logged_with_its_unit_and_why(caplog):
    ctl = Controller(SITE, load_kernel())
    image = site_image(soc=50.0, heater_kw=0.0)
    decision, memory = ctl.decide(image, None, ctl.initial_memory(), 10.0)
    assert decision.bess_kw["bess1"] > 0
    failed = []
    writer = Writer(SITE, {"heater": Relay(), "bess1": StuckPcs()},
                    on_error=failed.append)
    await writer.write(decision, memory, 10.0, 0.05, False, lambda dev_id, value: None)
    assert failed == ["bess1"]
    assert "device bess1: writing 50.00 kW failed: no answer within 0.05 s" in caplog.text


class RefusingPcs:
    """Acks every write; its next poll finds the setpoint not taken while `refuses`."""

    def __init__(self) -> None:
        self.refuses = True
        self.found: str | None = None

    async def write_power(self, kw: float, revert_s: int) -> None:
        self.found = "holds 10 kW" if self.refuses else None

    def refused_write(self) -> str | None:
        found, self.found = self.found, None
        return found


async def test_a_setpoint_a_poll_found_not_taken_is_a_failed_write_told_once_while_it_lasts(caplog):
    ctl = Controller(SITE, load_kernel())
    image = site_image(soc=50.0, heater_kw=0.0)
    decision, memory = ctl.decide(image, None, ctl.initial_memory(), 10.0)
    pcs, failed = RefusingPcs(), []
    writer = Writer(SITE, {"heater": Relay(), "bess1": pcs}, on_error=failed.append)

    def record(dev_id: str, value: float | None) -> None:
        ctl.after_writes(memory, {dev_id: value}, 10.0)

    def cycle() -> bool:
        """After a poll: take its findings; whether the battery is owed a write now."""
        writer.collect_refused(memory, record)
        return memory.written["bess1"].failed

    await writer.write(decision, memory, 10.0, 1.0, False, record)
    for _ in range(3):  # refused each time: retried each cycle, told once
        assert cycle()
        await writer.write(decision, memory, 10.0, 1.0, False, record)
    pcs.refuses = False
    assert cycle()
    await writer.write(decision, memory, 10.0, 1.0, False, record)
    assert not cycle()  # taken: nothing owed, and a refusal later is news again
    pcs.refuses = True
    await writer.write(decision, memory, 10.0, 1.0, False, record, force=True)
    assert cycle()
    assert failed == ["bess1"] * 5
    told = [r.getMessage() for r in caplog.records if "holds 10 kW" in r.getMessage()]
    assert len(told) == 2 and told[0].startswith("device bess1: writing 50.00 kW failed: holds 10 kW")

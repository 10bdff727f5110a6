"""The poll round's deadline and what comes after it, with stand-in drivers: a device still
polling at the deadline is cancelled and counts a timeout, a driver's own fault is that
device's, and writes a driver defers to the end of the round go out only once every poll
has ended (answered, failed or cancelled)."""

from __future__ import annotations

import asyncio

from fakes import ManualClock

from drivers.base import Reading
from edge.config import parse
from edge.image.poll import Poller

CONFIG = {
    "site": {"id": "t"},
    "devices": [
        {"id": "pv1", "host": "127.0.0.1", "port": 15021, "role": "pv", "rated_kw": 50,
         "revert_s": 60},
        {"id": "bess1", "host": "127.0.0.1", "port": 15022, "role": "battery",
         "capacity_kwh": 100, "max_charge_kw": 50, "max_discharge_kw": 50, "revert_s": 60},
        {"id": "pcc", "host": "127.0.0.1", "port": 15023, "role": "meter", "measures": "grid"},
    ],
    "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]},
}


class Stub:
    """Answers, hangs until cancelled, or raises; logs when its deferred writes are sent."""

    def __init__(self, dev_id: str, events: list[str], behaviour: str = "answer") -> None:
        self.id, self.events, self.behaviour = dev_id, events, behaviour

    async def poll(self) -> Reading:
        if self.behaviour == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.events.append(f"{self.id} cancelled")
                raise
        if self.behaviour == "raise":
            raise ValueError("boom")
        self.events.append(f"{self.id} answered")
        return Reading(self.id, {"power_kw": 1.0, "soc_pct": 50.0})

    def send_deferred(self) -> None:
        self.events.append(f"{self.id} deferred sent")


async def test_a_hung_poll_times_out_alone_and_deferred_writes_wait_for_the_round():
    events: list[str] = []
    devices = {"pv1": Stub("pv1", events, "hang"), "bess1": Stub("bess1", events),
               "pcc": Stub("pcc", events, "raise")}
    poller = Poller(parse(CONFIG), devices, ManualClock())
    await poller.poll(0.25)  # deadline 0.2 s
    hung, good, faulty = poller.health["pv1"], poller.health["bess1"], poller.health["pcc"]
    assert (hung.failed_polls, hung.last_error) == (1, "TimeoutError")
    assert (faulty.failed_polls, faulty.last_error) == (1, "ValueError: boom")
    assert good.failed_polls == 0 and good.reading.values["soc_pct"] == 50.0
    assert events.index("pv1 cancelled") < events.index("bess1 deferred sent")
    assert events[-3:] == [f"{d} deferred sent" for d in devices]
    assert events.count("bess1 deferred sent") == 1

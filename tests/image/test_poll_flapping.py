"""A device that fails and answers on and off (a loose RS-485 lead, a gateway rebooting) is
one outage in the log: its first failure, its first recovery, a summary per SUMMARY_S with
the short recoveries counted, and one line once it has answered for SUMMARY_S; not a
failure line and a recovery line per flap. A fake device and clock (unit test)."""

from __future__ import annotations

import logging

from fakes import ManualClock
from site_harness import site_dict

from drivers.base import DeviceError, Reading
from edge import config as config_mod
from edge.image.poll import SUMMARY_S, Poller


class Flaky:
    def __init__(self, dev_id: str) -> None:
        self.id, self.down = dev_id, False

    async def poll(self) -> Reading:
        if self.down:
            raise DeviceError("no answer")
        return Reading(self.id, {"power_kw": 1.0})


class Wall:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_a_device_failing_on_and_off_is_logged_as_one_outage(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge.cycle")
    cfg = config_mod.parse(site_dict(tmp_path, 1883))
    devices = {d.id: Flaky(d.id) for d in cfg.devices}
    poller = Poller(cfg, devices, ManualClock())
    wall = Wall()
    poller.outages["pcc"].clock = wall

    async def poll(down: bool, seconds: float) -> None:
        devices["pcc"].down = down
        await poller.poll(1.0)
        wall.t += seconds

    for _ in range(int(1.5 * SUMMARY_S / 20)):  # down 10 s, up 10 s, for 1.5 summaries
        await poll(True, 10)
        await poll(False, 10)
    while wall.t < 2.7 * SUMMARY_S:  # then it keeps answering
        await poll(False, 10)

    said = [(r.levelname, r.getMessage().split(";")[0]) for r in caplog.records
            if r.getMessage().startswith("device pcc:")]
    assert said == [
        ("WARNING", "device pcc: poll failed: no answer"),
        ("INFO", "device pcc: answers again after 10 s (1 polls failed)"),
        ("WARNING", "device pcc: still failing after 10 min, 31 polls failed, 30 short "
                    "recoveries"),
        ("INFO", "device pcc: answers again after 15 min (45 polls failed, 44 short "
                 "recoveries)"),
    ]
    assert poller.health["pcc"].failed_polls == 0

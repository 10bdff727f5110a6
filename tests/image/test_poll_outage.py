"""A device that cannot be reached costs a few log lines, not one per poll: one WARNING
when it fails (saying what to check), a summary at most every SUMMARY_S while it stays
down, one INFO line when it answers again. Real sockets: the devices' loopback ports have
nothing listening until the HIL starts on them."""

from __future__ import annotations

import asyncio
import logging

from site_harness import site_dict

from edge import config as config_mod
from edge.app.clock import Clock
from edge.app.devices import build_devices
from edge.image.poll import Poller
from hil.config import hil_of
from hil.site import SimSite

POLLS = 30


def lines(caplog, dev_id: str, level: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelname == level and r.getMessage().startswith(f"device {dev_id}:")]


async def test_unreachable_device_logs_once_then_summaries_then_its_recovery(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge.cycle")
    cfg = config_mod.parse(site_dict(tmp_path, 1883))
    devices = build_devices(cfg)
    poller = Poller(cfg, devices, Clock(hil_of(cfg).start, 1.0))
    ids = [d.id for d in cfg.devices]
    try:
        for _ in range(POLLS):
            await poller.poll(1.0)
        for dev_id in ids:
            assert poller.health[dev_id].failed_polls == POLLS
            first = lines(caplog, dev_id, "WARNING")
            assert len(first) == 1, first
            assert "refused" in first[0] and "check that it is powered" in first[0]

        poller.outages["pcc"].every_s = 0.0  # the summary is due at the next failure
        await poller.poll(1.0)
        summary = lines(caplog, "pcc", "WARNING")[1:]
        assert len(summary) == 1 and f"{POLLS + 1} polls failed; last error:" in summary[0]
        assert len(lines(caplog, "bess1", "WARNING")) == 1

        site = SimSite(cfg, Clock(hil_of(cfg).start, 1.0))
        await site.start()
        try:
            for _ in range(POLLS):  # reconnect backoff: at most 10 s, then every device answers
                await poller.poll(1.0)
                if all(poller.health[d].failed_polls == 0 for d in ids):
                    break
                await asyncio.sleep(0.5)
            for dev_id in ids:
                assert poller.health[dev_id].failed_polls == 0
                back = lines(caplog, dev_id, "INFO")
                assert len(back) == 1 and "answers again after" in back[0], back
            for _ in range(3):
                await poller.poll(1.0)
            assert sum(len(lines(caplog, d, "INFO")) for d in ids) == len(ids)
        finally:
            await site.stop()
    finally:
        for dev in devices.values():
            await dev.close()

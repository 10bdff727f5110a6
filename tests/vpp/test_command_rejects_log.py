"""A flood of bad platform commands over a real broker: every one gets its rejected ack (the
contract), the log gets the first with its reason and then a count, not a line each."""

from __future__ import annotations

import logging

from site_harness import device, running_site, site_dict

from hil.emulators.platform import Platform

FLOOD = 300


async def test_rejected_commands_are_acked_each_and_logged_with_counts(tmp_path, mosquitto, caplog):
    caplog.set_level(logging.WARNING, logger="edge.vpp.commands.judge")
    data = site_dict(tmp_path, mosquitto.port)
    data["hil"]["start"] = "2026-06-22T02:00:00+08:00"
    device(data, "bess1")["sim"] = {"initial_soc_pct": 60}
    async with running_site(data, mosquitto, 20.0) as run:
        p = Platform(run.cfg.mqtt, run.cfg.site.id)
        await p.connect()
        try:
            p.send_many([("dispatch", "{not json")] * (FLOOD - 1) + [("reboot", "{}")])
            assert await p.wait(lambda: len(p.acks) >= FLOOD, 60), len(p.acks)
        finally:
            p.close()
    assert len(p.acks) == FLOOD and all(a["status"] == "rejected" for a in p.acks)
    said = [r.getMessage() for r in caplog.records if r.name == "edge.vpp.commands.judge"]
    assert len(said) == 2, said  # the first, then the rest summed up when the loop stopped
    assert "rejected: not valid JSON" in said[0] and "fix the sender" in said[0]
    assert said[1].startswith(f"{FLOOD - 1} more commands rejected in the last ")
    assert f"({FLOOD} since the first); last: command None (?) rejected: " in said[1]
    assert "reboot" in said[1]

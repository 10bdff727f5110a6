"""An accepted park command outlives a restart of the daemon: the real daemon on a HIL
site, a real broker, the same state dir across two runs. The site (see
test_mqtt_commands.night_site) rests at 40 kW import with the battery idle, so a battery
covering the load is the dispatch's doing."""

from __future__ import annotations

import asyncio

from test_mqtt_commands import LOAD_KW, SPEED, night_site, platform_for, running_site, settle_at


async def until(predicate, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def acks(run, cmd_id: str) -> list[dict]:
    return [d for topic, d in run.sub.documents()
            if topic.endswith("/ack") and d.get("cmd_id") == cmd_id]


async def test_a_dispatch_accepted_before_a_restart_is_followed_after_it(tmp_path, mosquitto):
    data = night_site(tmp_path, mosquitto.port)
    cmd = {"cmd_id": "d-keep", "grid_target_kw": 15, "duration_s": 3 * 3600}
    async with running_site(data, mosquitto, SPEED) as run:
        p = await platform_for(run)
        try:
            await settle_at(run, LOAD_KW, 0.0)
            p.send("dispatch", cmd)
            assert await p.ack("d-keep", "accepted", 10) is not None, p.acks
            await settle_at(run, 15.0, LOAD_KW - 15.0)
        finally:
            p.close()
    # The process is gone for ten minutes; nothing is re-sent. The new one follows the
    # dispatch it acked.
    data["hil"]["start"] = "2026-06-22T02:10:00+08:00"
    async with running_site(data, mosquitto, SPEED) as run:
        assert run.daemon.commands.active == ["d-keep"]
        await settle_at(run, 15.0, LOAD_KW - 15.0)
        assert "park:d-keep" in run.daemon.cycle.decision.instructions
        p = await platform_for(run)
        try:
            p.send("dispatch", cmd)  # the platform re-sends: a repeat, not a second dispatch
            again = await p.ack("d-keep", "accepted", 10)
            assert again is not None and again["grid_target_kw"] == 15
            assert run.daemon.commands.stats.repeated == 1
            assert run.daemon.commands.stats.accepted == 0
            p.send("dispatch", {**cmd, "grid_target_kw": 20})  # same cmd_id, other content
            other = await p.ack("d-keep", "rejected", 10)
            assert other is not None and "already used" in other["reason"]
        finally:
            p.close()


async def test_mode_hold_survives_a_restart_and_a_window_that_ended_meanwhile_is_done(
        tmp_path, mosquitto):
    data = night_site(tmp_path, mosquitto.port)
    async with running_site(data, mosquitto, SPEED) as run:
        p = await platform_for(run)
        try:
            await settle_at(run, LOAD_KW, 0.0)
            p.send("dispatch", {"cmd_id": "d-short", "grid_target_kw": 25, "duration_s": 1800})
            assert await p.ack("d-short", "accepted", 10) is not None, p.acks
            await settle_at(run, 25.0, LOAD_KW - 25.0)
        finally:
            p.close()
    # Down for two simulated hours: the dispatch's window ended while nobody ran.
    data["hil"]["start"] = "2026-06-22T04:00:00+08:00"
    async with running_site(data, mosquitto, SPEED) as run:
        assert await until(lambda: any(a["status"] == "done" for a in acks(run, "d-short")), 10)
        done = [a for a in acks(run, "d-short") if a["status"] == "done"]
        assert len(done) == 1 and done[0]["reason"] == "window ended"
        assert run.daemon.commands.active == []
        await settle_at(run, LOAD_KW, 0.0)  # the site is on its own again
        p = await platform_for(run)
        try:
            p.send("mode", {"cmd_id": "m-hold", "mode": "hold"})
            held = await p.ack("m-hold", "accepted", 10)
            assert held is not None, p.acks
        finally:
            p.close()
        hold_kw = held["grid_target_kw"]
    data["hil"]["start"] = "2026-06-22T04:10:00+08:00"
    async with running_site(data, mosquitto, SPEED) as run:
        assert run.daemon.commands.mode == "hold"
        hold = run.daemon.cycle.book.get("park:hold")
        assert hold is not None and hold.grid_target_kw == hold_kw
        assert hold.active(run.clock.now())  # in force now, not at some later time
        p = await platform_for(run)
        try:  # in hold, park dispatches stay refused after the restart too
            p.send("dispatch", {"cmd_id": "d-late", "grid_target_kw": 10, "duration_s": 600})
            refused = await p.ack("d-late", "rejected", 10)
            assert refused is not None and "mode hold" in refused["reason"]
        finally:
            p.close()


async def test_a_simulation_started_over_from_an_earlier_time_does_not_restore(
        tmp_path, mosquitto, caplog):
    """Saved commands belong to their run's timeline: a HIL run restarted from an earlier
    simulated time must not put them in force at times they were never meant for."""
    data = night_site(tmp_path, mosquitto.port)
    data["hil"]["start"] = "2026-06-22T03:00:00+08:00"
    async with running_site(data, mosquitto, SPEED) as run:
        p = await platform_for(run)
        try:
            await settle_at(run, LOAD_KW, 0.0)
            p.send("dispatch", {"cmd_id": "d-other", "grid_target_kw": 15, "duration_s": 7200})
            assert await p.ack("d-other", "accepted", 10) is not None, p.acks
        finally:
            p.close()
    data["hil"]["start"] = "2026-06-22T02:00:00+08:00"
    async with running_site(data, mosquitto, SPEED) as run:
        assert run.daemon.commands.active == [] and run.daemon.commands.mode == "auto"
        assert run.daemon.cycle.book.get("park:d-other") is None
        await settle_at(run, LOAD_KW, 0.0)
    assert any("not restored" in r.getMessage() for r in caplog.records)

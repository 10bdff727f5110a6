"""What the field does to a controller: a device that vanishes, a broker that restarts, a
process killed with SIGKILL. Nothing may be lost and control must carry on."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from conftest import Subscriber, wait_for
from site_harness import device, running_site, site_dict, write_config

from drivers.base import Quality
from edge import config as config_mod
from hil.process import SiteProcess

SPEED = 120.0


async def test_lost_battery_goes_stale_within_two_cycles_safe_state_then_recovers(tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port)
    data["hil"]["start"] = "2026-06-22T17:30:00+08:00"  # importing: self-consumption discharges
    device(data, "bess1")["sim"] = {"initial_soc_pct": 70}
    async with running_site(data, mosquitto, SPEED) as run:
        cycle = run.daemon.cycle
        seen: list[tuple[Quality, int, float]] = []
        build = cycle.build_image

        def spy():
            image = build()
            state = image.devices["bess1"]
            seen.append((state.quality, state.failed_polls, cycle.stats.cycles))
            return image

        cycle.build_image = spy
        await wait_for(lambda: run.site.state("bess1")["power_kw"] > 5, 30, "battery discharging")

        await run.site.stop_device("bess1")
        await wait_for(lambda: seen and seen[-1][0] is Quality.STALE, 30, "battery marked stale")
        first_stale = next(s for s in seen if s[0] is Quality.STALE)
        assert first_stale[1] == 2, "stale on the 2nd failed poll (stale_after_cycles=2)"
        await wait_for(lambda: cycle.decision.bess_kw["bess1"] == 0.0, 5, "safe state decided")
        # The device cannot be written while unreachable: its revert timer takes it to 0 kW.
        await wait_for(lambda: run.site.state("bess1")["power_kw"] == 0.0, 30, "device at 0 kW")
        await wait_for(lambda: any("bess1" in m["stale"] for m in run.telemetry()), 30,
                       "telemetry names the stale device")

        def bess_health() -> list[dict]:
            return [dev for topic, d in run.sub.documents() if topic.endswith("/devices")
                    for dev in d["devices"] if dev["id"] == "bess1"]

        await wait_for(lambda: any(h["state"] == "stale" for h in bess_health()), 30,
                       "device health reports the battery stale")
        down = next(h for h in bess_health() if h["state"] == "stale")
        assert down["errors"] >= 2 and down["last_error"] and down["last_good"]
        assert down["models"] == [1, 103, 124, 802] and down["serial"] == "bess1"
        cycles_while_down = cycle.stats.cycles
        await asyncio.sleep(0.5)
        assert cycle.stats.cycles > cycles_while_down and cycle.stats.crashes == 0
        assert cycle.decision.mode != "safe"  # the rest of the site is still controlled

        await run.site.start_device("bess1")
        await wait_for(lambda: seen[-1][0] is Quality.GOOD, 30, "battery good again")
        await wait_for(lambda: run.site.state("bess1")["power_kw"] > 5, 30, "battery controlled again")


async def test_broker_restart_mid_run_delivers_every_msg_id_once_in_order(tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port)
    async with running_site(data, mosquitto, SPEED) as run:
        outbox = run.daemon.outbox
        await wait_for(lambda: len(run.sub.msg_ids()) >= 10, 30, "telemetry flowing")
        mosquitto.stop()
        await wait_for(lambda: len(outbox) >= 20, 30, "telemetry held on disk while broker down")
        mosquitto.start()
        target = outbox.last_id
        await wait_for(lambda: run.sub.msg_ids() and run.sub.msg_ids()[-1] >= target + 10, 60,
                       "backlog drained and live telemetry resumed")
    ids = run.sub.msg_ids()
    assert ids == list(range(ids[0], ids[0] + len(ids))), "each msg_id once, in order"


def _outbox_rows(path) -> tuple[str, int, int]:
    db = sqlite3.connect(path)
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        count, top = db.execute("SELECT COUNT(*), COALESCE(MAX(msg_id), 0) FROM outbox").fetchone()
        return check, count, top
    finally:
        db.close()


@pytest.mark.parametrize("broker_up", [False, True], ids=["broker-down", "broker-up"])
async def test_kill_9_loses_nothing_and_ids_continue_after_restart(tmp_path, mosquitto, broker_up):
    """Broker down: the backlog sits on disk at the kill, so each id must arrive exactly once.
    Broker up: messages may be in flight at the kill; at-least-once allows a re-send of
    those (the platform de-duplicates by msg_id) but never a gap."""
    data = site_dict(tmp_path, mosquitto.port)
    cfg_path = write_config(tmp_path, data)
    cfg = config_mod.parse(data)
    site = SiteProcess(cfg, SPEED)
    await site.start()
    sub = Subscriber(mosquitto.host, mosquitto.port, f"pedf/v1/{cfg.site.id}/+", persistent=True)
    sub.subscribed.wait(10)
    cmd = [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg_path), "--speed", str(SPEED),
           "--log-level", "warning"]
    outbox_file = tmp_path / "state" / "outbox.sqlite"
    procs = []
    try:
        procs.append(subprocess.Popen(cmd, cwd=tmp_path))
        await wait_for(lambda: len(sub.msg_ids()) >= 10, 60, "telemetry from the first run")
        if not broker_up:
            mosquitto.stop()
            await wait_for(lambda: _outbox_rows(outbox_file)[1] >= 10, 60, "messages waiting on disk")
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(10)
        check, pending, top = _outbox_rows(outbox_file)
        assert check == "ok"
        if broker_up:
            top = max(top, sub.msg_ids()[-1])
        else:
            assert pending >= 10
            mosquitto.start()
        procs.append(subprocess.Popen(cmd, cwd=tmp_path))
        await wait_for(lambda: sub.msg_ids() and sub.msg_ids()[-1] >= top + 10, 60,
                       "backlog delivered and new ids after restart")
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        await site.stop()
        sub.close()
    ids = sub.msg_ids()
    unique = sorted(set(ids))
    assert unique == list(range(unique[0], unique[-1] + 1)), "no msg_id lost"
    if broker_up:
        assert len(ids) - len(unique) <= 10, "re-sends bounded by the in-flight window"
    else:
        assert ids == unique, "each msg_id once, in order"
    assert unique[-1] > top, "ids continue after the restart"
    assert any(topic.endswith("/telemetry") and d["mode"] for topic, d in sub.documents())

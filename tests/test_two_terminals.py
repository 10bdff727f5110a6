"""The two-terminal flow as real processes: `pedf-edge hil` and `pedf-edge run --hil-clock`
keep one simulated time however far apart they start, and `run --speed N` restarted goes
on with its simulated time instead of starting again at hil.start."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

from conftest import Subscriber, accepts, wait_for
from site_harness import site_dict, write_config

from edge.app.clock import HIL_CLOCK, RUN_CLOCK

SPEED = 60.0
# What a slow poll or a loaded machine may add between a poll and its timestamp, in
# simulated seconds (0.5 s of wall time): far below the 360 s a 6 s start gap gave.
TOLERANCE_S = 30.0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", *args, "--log-level", "warning"]


def telemetry(sub: Subscriber) -> list[tuple[int, datetime, list[str]]]:
    """(msg_id, ts, stale devices) of every telemetry message so far, in msg_id order."""
    return sorted((d["msg_id"], datetime.fromisoformat(d["ts"]), d["stale"])
                  for topic, d in sub.documents() if topic.endswith("/telemetry"))


async def test_daemon_on_the_hil_clock_keeps_the_hil_time(tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port)
    cfg = write_config(tmp_path, data)
    sub = Subscriber(mosquitto.host, mosquitto.port, f"pedf/v1/{data['site']['id']}/telemetry")
    hil = subprocess.Popen(cli("hil", "-c", str(cfg), "--speed", str(SPEED)), cwd=tmp_path)
    daemon = None
    seen: dict[int, float] = {}  # msg_id -> wall time (Unix s) it was first seen here

    def watch() -> list[tuple[int, datetime, list[str]]]:
        msgs = telemetry(sub)
        for msg_id, _, _ in msgs:
            seen.setdefault(msg_id, time.time())
        return msgs

    try:
        await wait_for(lambda: all(accepts("127.0.0.1", d["port"]) for d in data["devices"]), 60,
                       "the HIL serving its devices")
        clock = json.loads((tmp_path / "state" / HIL_CLOCK).read_text())
        start, epoch = datetime.fromisoformat(clock["start"]), clock["epoch"]
        assert clock["speed"] == SPEED

        def hil_at(wall: float) -> datetime:
            return start + timedelta(seconds=(wall - epoch) * SPEED)

        # a late start: as far apart as the terminals of the report, and more
        await wait_for(lambda: hil_at(time.time()) > start + timedelta(minutes=8), 30,
                       "the HIL 8 simulated minutes ahead")
        daemon = subprocess.Popen(cli("run", "-c", str(cfg), "--hil-clock"), cwd=tmp_path)
        await wait_for(lambda: sum(not s for _, _, s in watch()) >= 5, 90,
                       "telemetry with every device good")
        before = time.time()
        hil.send_signal(signal.SIGKILL)  # the devices vanish at once, at a known HIL time
        hil.wait(30)
        after = time.time()
        pcc = next(d["id"] for d in data["devices"] if d.get("measures") == "grid")
        await wait_for(lambda: any(pcc in s for _, _, s in watch()[-3:]), 60,
                       "telemetry naming the lost meter")
    finally:
        for proc in (daemon, hil):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        sub.close()
    msgs = watch()
    tol = timedelta(seconds=TOLERANCE_S)
    for msg_id, ts, _ in msgs:  # no telemetry from the HIL's future
        assert ts <= hil_at(seen[msg_id]) + timedelta(seconds=1), (msg_id, ts)
    last_good = max(i for i, (_, _, s) in enumerate(msgs) if not s)
    first_lost = next(m for m in msgs[last_good + 1:] if pcc in m[2])
    # polled before the HIL died, and polls that failed after it: the same time as the HIL
    assert msgs[last_good][1] <= hil_at(after) + tol
    assert first_lost[1] >= hil_at(before) - tol


async def test_restarted_accelerated_daemon_resumes_its_simulated_time(tmp_path, mosquitto):
    speed = 600.0
    data = site_dict(tmp_path, mosquitto.port)  # no HIL: the devices stay unreachable
    cfg = write_config(tmp_path, data)
    start = datetime.fromisoformat(data["hil"]["start"])
    sub = Subscriber(mosquitto.host, mosquitto.port, f"pedf/v1/{data['site']['id']}/telemetry")
    cmd = cli("run", "-c", str(cfg), "--speed", str(speed))
    procs = [subprocess.Popen(cmd, cwd=tmp_path)]
    try:
        await wait_for(lambda: len(telemetry(sub)) >= 10, 90, "telemetry from the first run")
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(60) == 0
        saved = json.loads((tmp_path / "state" / RUN_CLOCK).read_text())
        first = telemetry(sub)
        procs.append(subprocess.Popen(cmd, cwd=tmp_path))
        await wait_for(lambda: len(telemetry(sub)) >= len(first) + 10, 90,
                       "telemetry from the restarted run")
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        sub.close()
    stamps = [ts for _, ts, _ in telemetry(sub)]
    assert stamps == sorted(stamps), "simulated time never runs back over a restart"
    assert json.loads((tmp_path / "state" / RUN_CLOCK).read_text()) == saved
    assert stamps[-1] > first[-1][1] > start

"""One process per state dir: a second daemon on the same config is refused, naming the
first; demo and simulate lock their own state dirs and report under their own topics."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for
from site_harness import site_dict, write_config

from edge import config as config_mod
from edge.app.statedir import DAEMON_LOCK, StateDirBusy, StateLock, state_dir
from hil import scenario as scenario_mod
from tools.demo import demo_config, run_demo
from tools.simulate.run import isolated, run

ROOT = Path(__file__).resolve().parents[1]


def run_cmd(cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg), "--log-level", "warning",
            *extra]


async def test_second_daemon_on_one_state_dir_is_refused_naming_the_first(tmp_path, mosquitto):
    cfg = write_config(tmp_path, site_dict(tmp_path, mosquitto.port))
    lock_file = tmp_path / "state" / DAEMON_LOCK
    first = subprocess.Popen(run_cmd(cfg), cwd=tmp_path)
    try:
        await wait_for(lambda: lock_file.exists() and lock_file.read_text().startswith(
            f"{first.pid}\n"), 60, "the first daemon holding the lock")
        second = subprocess.run(run_cmd(cfg), cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
        assert first.poll() is None, "the first daemon runs on"
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
    assert second.returncode == 1
    err = second.stderr
    assert f"in use by pid {first.pid} (" in err and "edge.cli run -c" in err, err
    assert str(lock_file) in err and "storage.dir" in err and "Stop that one first" in err
    # the first one's end released the lock: the same command starts now
    third = subprocess.Popen(run_cmd(cfg), cwd=tmp_path)
    try:
        await wait_for(lambda: lock_file.read_text().startswith(f"{third.pid}\n"), 60,
                       "the next daemon taking the lock")
    finally:
        third.send_signal(signal.SIGTERM)
        assert third.wait(60) == 0


def test_hil_clock_without_a_running_hil_is_refused(tmp_path):
    cfg = write_config(tmp_path, site_dict(tmp_path, 1883))
    result = subprocess.run(run_cmd(cfg, "--hil-clock"), cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "no `pedf-edge hil` is running on the state dir" in result.stderr
    assert "pedf-edge hil -c CONFIG" in result.stderr


def test_lock_is_taken_once_and_released(tmp_path):
    with StateLock(tmp_path) as lock:
        assert lock.held_elsewhere()  # another open file of this process counts as another
        with pytest.raises(StateDirBusy, match=r"in use by pid \d+"):
            StateLock(tmp_path).acquire()
    assert not StateLock(tmp_path).held_elsewhere()


@pytest.fixture
def demo(tmp_path: Path) -> config_mod.Config:
    data = config_mod.load(ROOT / "configs/demo.yaml").model_dump()
    data["storage"]["dir"] = tmp_path / "state"
    return config_mod.Config.model_validate(data)


def test_demo_keeps_its_own_state_dir_and_topics(demo, tmp_path):
    cfg = demo_config(demo)
    assert state_dir(cfg) == tmp_path / "state" / "demo"
    assert cfg.mqtt.topic_prefix == "pedf-demo/v1" != demo.mqtt.topic_prefix
    with StateLock(state_dir(cfg)), pytest.raises(StateDirBusy):
        asyncio.run(run_demo(demo, wall_s=1.0, hours=0.01))


def test_simulate_keeps_its_own_topics_and_locks_its_state_dir(demo, tmp_path):
    assert isolated(demo).mqtt.topic_prefix == "pedf-sim/v1"
    sc = scenario_mod.load(ROOT / "hil/scenarios/summer_weekday_tou.yaml")
    with StateLock(tmp_path / "sim"), pytest.raises(StateDirBusy):
        asyncio.run(run(sc, demo, state_dir=tmp_path / "sim"))


def test_a_stop_that_lands_while_the_daemon_starts_is_a_clean_stop(tmp_path, mosquitto):
    """SIGTERM the moment the lock shows the new pid (before the event loop's handlers
    exist): the daemon still exits 0, as systemd expects of a stop during start-up."""
    cfg = write_config(tmp_path, site_dict(tmp_path, mosquitto.port))
    lock_file = tmp_path / "state" / DAEMON_LOCK
    for _ in range(4):
        daemon = subprocess.Popen(run_cmd(cfg), cwd=tmp_path)
        deadline = time.monotonic() + 60
        while not (lock_file.exists() and lock_file.read_text().startswith(f"{daemon.pid}\n")):
            assert daemon.poll() is None and time.monotonic() < deadline, "no lock taken"
            time.sleep(0.001)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0

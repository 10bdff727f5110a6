"""The control process stays small on the demo site with the planner on: the forecaster and
the solver live in its worker (a child process), so the daemon itself stays within the
80 MiB a small gateway can give it. Real processes: `pedf-edge hil` serves the demo site,
`pedf-edge run` controls it until the worker has published a plan."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml
from conftest import Subscriber, accepts, free_port

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MIB = 80


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", *args]


def test_control_process_stays_within_its_budget_while_the_worker_plans(tmp_path, mosquitto):
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    assert data["planner"]["enabled"]
    for dev in data["devices"]:
        dev["port"] = free_port()
    data["mqtt"]["port"] = mosquitto.port
    data["storage"]["dir"] = str(tmp_path / "state")
    data["hil"]["speed"] = 1
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump(data))
    plans = Subscriber("127.0.0.1", mosquitto.port, f"pedf/v1/{data['site']['id']}/plan")
    hil = subprocess.Popen(cli("hil", "-c", str(cfg)), cwd=tmp_path, stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT)
    daemon = None
    try:
        deadline = time.monotonic() + 60
        while not all(accepts("127.0.0.1", d["port"]) for d in data["devices"]):
            assert hil.poll() is None and time.monotonic() < deadline, "the HIL never served"
            time.sleep(0.1)
        daemon = subprocess.Popen(cli("run", "-c", str(cfg), "--log-level", "warning"),
                                  cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        control = psutil.Process(daemon.pid)
        deadline = time.monotonic() + 240
        while not plans.documents():
            assert daemon.poll() is None, daemon.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no plan published"
            time.sleep(0.2)
        workers = control.children()
        assert workers, "the planner runs in a worker process of its own"
        rss = []
        for _ in range(10):  # after a planning round, while cycles go on
            rss.append(control.memory_info().rss / 2**20)
            time.sleep(0.5)
        worker_mib = sum(w.memory_info().rss for w in workers) / 2**20
        print(f"control RSS max {max(rss):.1f} MiB; worker {worker_mib:.0f} MiB")
        assert max(rss) <= BUDGET_MIB, (rss, worker_mib)
    finally:
        plans.close()
        for proc in (daemon, hil):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()

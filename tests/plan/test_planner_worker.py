"""The planner in its worker process: the control process plans without loading the
forecast and solver libraries, and a killed worker is started again while control goes on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("worker_probe.py")


def test_control_plans_through_its_worker_and_survives_a_killed_one(tmp_path, mosquitto):
    done = subprocess.run([sys.executable, str(PROBE), str(tmp_path), str(mosquitto.port)],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["status"] == "optimal", out
    assert out["heavy"] == [] and out["heavy_end"] == [], out  # no pvlib/pandas/scipy/highspy
    assert out["plan_within_two_periods"], out  # what a dead worker leaves runs out on its own
    assert out["cycles_after_kill"] > 0, out  # control went on while the worker was down
    assert out["new_status"] == "optimal", out  # and the new worker plans again

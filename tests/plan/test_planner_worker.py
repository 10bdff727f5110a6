"""The planner in its worker process: the control process plans without loading the
forecast and solver libraries, and a killed worker is started again while control goes on."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from edge.control.instructions import Instruction, InstructionBook
from edge.plan.planner import Planner

PROBE = Path(__file__).with_name("worker_probe.py")


def test_control_plans_through_its_worker_and_survives_a_killed_one(tmp_path, mosquitto):
    done = subprocess.run([sys.executable, str(PROBE), str(tmp_path), str(mosquitto.port)],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["status"] == "optimal", out
    assert out["heavy"] == [] and out["heavy_end"] == [], out  # no pvlib/pandas/scipy/highspy
    assert out["plan_within_two_periods"], out  # what a dead worker leaves runs out on its own
    assert out["warm_solves"] >= 1, out  # the warm start lives in the worker, with the solver
    assert out["cycles_after_kill"] > 0, out  # control went on while the worker was down
    assert out["new_status"] == "optimal", out  # and the new worker plans again


def test_an_unchanged_commitment_from_the_daemon_asks_for_no_replan():
    """The worker's book is refilled from each tick's copies: a DR cap without a target
    (NaN) must still compare equal to itself."""
    t = datetime(2026, 6, 22, 2, 0, tzinfo=UTC)
    cap = Instruction("dr-1", "grid_operator", t, t + timedelta(hours=1), grid_max_kw=30.0)
    books = []
    for _ in range(2):
        book = InstructionBook()
        book.put(pickle.loads(pickle.dumps(cap)))
        books.append(Planner._commitments(SimpleNamespace(view=SimpleNamespace(book=book))))
    assert books[0] == books[1]

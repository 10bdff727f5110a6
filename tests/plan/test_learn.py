"""Zone models learnt from the site's own history file: the HIL zone (hil/devices/hvac.py,
10-s physics) is driven with a varied capacity command for a few days, each minute's
process image goes through the daemon's zone recorder into a real history SQLite file, and
the planner's learner fits R and C from that file. Stated tolerance: R and C within 5 % of
the simulator's (its weather and gains vary inside each 15-min sample, which the fit's
per-hour gain terms only approximate). Less than two days of history, or a fit whose
one-step error is above `model.max_rms_k`, leaves the configured model, and says why."""

from __future__ import annotations

import io
import math
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fakes import ManualClock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from api_helpers import check  # noqa: E402

from drivers.base import Quality, Reading  # noqa: E402
from edge.api import reads  # noqa: E402
from edge.api.openapi import document  # noqa: E402
from edge.config import parse  # noqa: E402
from edge.image.balance import SitePower  # noqa: E402
from edge.image.image import DeviceState, ProcessImage  # noqa: E402
from edge.plan.learn import Learner  # noqa: E402
from edge.plan.pipe import read_blocking  # noqa: E402
from edge.plan.worker import Worker  # noqa: E402
from edge.report.history import History  # noqa: E402
from edge.report.zonelog import ZoneLog, ZoneRecorder  # noqa: E402
from edge.vpp.schemas.reports import PlanReport  # noqa: E402
from hil.devices.base import Env  # noqa: E402
from hil.devices.hvac import MapHvacSim  # noqa: E402

START = datetime.fromisoformat("2026-07-01T00:00:00+08:00")
R, C = 2.5, 12.0  # the simulated zone; the config says 2.0 and 10.0


def config(**model):
    return parse({
        "site": {"id": "s", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
            {"id": "ahu", "host": "127.0.0.1", "role": "hvac", "port": 1505,
             "map": "hvac_generic", "rated_kw": 20,
             "model": {"r_k_per_kw": 2.0, "c_kwh_per_k": 10.0, "gains_kw": 5.0, **model},
             "sim": {"zone": {"r_k_per_kw": R, "c_kwh_per_k": C}}}],
        "tariff": {"periods": [{"name": "f", "start": "00:00", "end": "00:00", "price": 1.0}]},
        "planner": {"enabled": True, "horizon_h": 6, "step_min": 15},
    })


def record(path, cfg, days: float, noise_k: float = 0.0, seed: int = 7) -> datetime:
    """Simulate `days`, one process image a minute into the zone log of the history file
    at `path`; returns the end. `noise_k`: a poor sensor's random error on each reading."""
    dev = cfg.devices[1]
    sim = MapHvacSim(dev, 100.0)
    rng = np.random.default_rng(seed)
    history = History(path)
    log, recorder = ZoneLog(history.db), ZoneRecorder([dev.id])
    t = START
    for k in range(int(days * 1440)):
        if k % 15 == 0:  # a varied command, as plans and DR events give
            sim.held.update(control_mode=1.0, limit=float(rng.uniform(0, 100)), revert=0.0)
        for i in range(6):
            at = t + timedelta(seconds=i * 10 + 5)
            sim.step(Env(k * 60 + i * 10, at, at, 31.2, 121.5), 10.0)
        t += timedelta(minutes=1)
        zone = sim.read_c + (rng.normal(0, noise_k) if noise_k else 0.0)
        values = {"power_kw": sim.power_kw, "zone_temp_c": zone, "outdoor_temp_c": sim.t_out,
                  "rated_kw": 20.0}
        image = ProcessImage(t, 60.0, {dev.id: DeviceState(Reading(dev.id, values),
                                                           Quality.GOOD, 0)})
        if rows := recorder.add(image):
            log.put(rows)
    history.close()
    return t


def test_the_fit_on_the_history_file_recovers_r_and_c_within_5_pct(tmp_path):
    cfg = config()
    end = record(tmp_path / "h.sqlite", cfg, 4)
    history = History.reader(tmp_path / "h.sqlite")
    learner = Learner(cfg, history)
    r, c, _ = learner.models(end)["ahu"]
    s = learner.status["ahu"]
    assert s.source == "fitted", s
    assert r == pytest.approx(R, rel=0.05) and c == pytest.approx(C, rel=0.05), s
    assert s.rms_k < 0.1 and s.days == pytest.approx(4, abs=0.1)
    report = learner.report()[0]
    assert report["source"] == "fitted" and report["rms_k"] == round(s.rms_k, 4)


def test_with_less_than_two_days_the_configured_model_is_used_and_says_why(tmp_path):
    cfg = config()
    end = record(tmp_path / "h.sqlite", cfg, 1.5)
    learner = Learner(cfg, History.reader(tmp_path / "h.sqlite"))
    assert learner.models(end)["ahu"] == (2.0, 10.0, 5.0)
    s = learner.status["ahu"]
    assert s.source == "configured" and "days of history, 2 needed" in s.reason, s


def test_a_fit_above_max_rms_k_is_rejected(tmp_path):
    cfg = config(max_rms_k=0.3)
    end = record(tmp_path / "h.sqlite", cfg, 3, noise_k=0.5)  # a poor sensor
    learner = Learner(cfg, History.reader(tmp_path / "h.sqlite"))
    assert learner.models(end)["ahu"] == (2.0, 10.0, 5.0)
    s = learner.status["ahu"]
    assert s.source == "configured" and s.rms_k > 0.3, s
    assert "above max_rms_k 0.3 K" in s.reason
    loose = Learner(config(max_rms_k=2.0), History.reader(tmp_path / "h.sqlite"))
    loose.models(end)
    assert loose.status["ahu"].source == "fitted"  # the same fit, accepted when allowed


def test_identify_off_keeps_the_configured_model(tmp_path):
    cfg = config(identify=False)
    end = record(tmp_path / "h.sqlite", cfg, 2.5)
    learner = Learner(cfg, History.reader(tmp_path / "h.sqlite"))
    assert learner.models(end)["ahu"] == (2.0, 10.0, 5.0)
    assert "identify is off" in learner.status["ahu"].reason


async def test_the_planner_worker_plans_with_the_model_fitted_on_its_history_file(tmp_path):
    """The worker as the daemon runs it (edge/plan/worker.py), over the history file: its
    round's stats and its plan report carry the fitted zone model."""
    cfg = config()
    path = tmp_path / "history.sqlite"
    end = record(path, cfg, 3)
    clock = ManualClock(end)
    out = io.BytesIO()
    worker = Worker(cfg, clock, path, out)
    values = {"pcc": {"power_kw": 30.0},
              "ahu": {"power_kw": 5.0, "zone_temp_c": 24.0, "outdoor_temp_c": 30.0,
                      "rated_kw": 20.0}}
    image = ProcessImage(end, 1.0, {k: DeviceState(Reading(k, v), Quality.GOOD, 0)
                                    for k, v in values.items()})
    worker.handle(("tick", image, [], [(end, SitePower(30.0, 0.0, None, 25.0), False, 1.0)],
                   [], ()))
    await worker.planner.replan("test")
    worker.history.close()
    out.seek(0)
    kind, _, stats, summary, report = read_blocking(out)
    assert kind == "plan" and summary is not None, stats
    zones = {z["device"]: z for z in stats.zones}
    assert zones["ahu"]["source"] == "fitted", zones
    assert zones["ahu"]["r_k_per_kw"] == pytest.approx(R, rel=0.05)
    assert report["zone_models"] == stats.zones
    assert math.isclose(worker.planner.learn.status["ahu"].c_kwh_per_k, C, rel_tol=0.05)
    PlanReport.model_validate({**report, "msg_id": 1})  # the MQTT message's schema
    # GET /plan, from the stats the worker sent, against the API's OpenAPI document.
    doc = reads.plan(SimpleNamespace(config=cfg, planner=SimpleNamespace(
        plan=summary, stats=stats)), end)
    check(document(), "/api/v1/plan", 200, doc)
    assert doc["planner"]["zones"][0]["source"] == "fitted"

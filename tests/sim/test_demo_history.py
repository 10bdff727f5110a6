"""`pedf-edge demo` seeds the daemon's history with the week before `hil.start` from the
simulated site's physics, so the planner's forecasts of the demo day start from similar
days and a calibrated PV share instead of persistence."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from edge import config as config_mod
from edge.forecast.forecaster import Forecaster
from edge.report.history import History
from hil.config import hil_of
from hil.site import SimSite
from tools.demo import seed_history

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(tmp_path: Path) -> config_mod.Config:
    data = config_mod.load(ROOT / "configs/demo.yaml").model_dump()
    data["storage"]["dir"] = tmp_path / "state"
    return config_mod.Config.model_validate(data)


def test_demo_config_runs_the_planner(demo) -> None:
    assert demo.planner.enabled


def test_seeded_week_gives_the_planner_similar_days_and_a_calibrated_pv_forecast(demo) -> None:
    start = hil_of(demo).start
    assert seed_history(demo) == 7 * 96
    history = History(Path(demo.storage.dir) / "history.sqlite")
    try:
        ivs = history.intervals(start - timedelta(days=8), start + timedelta(days=1))
        assert len(ivs) == 7 * 96 and ivs[0].start == start - timedelta(days=7)
        assert all(iv.covered_s == 900 and iv.charge_kwh == iv.discharge_kwh == 0 for iv in ivs)
        assert all(iv.import_kwh - iv.export_kwh == pytest.approx(iv.load_kwh - iv.pv_kwh)
                   for iv in ivs)
        forecaster = Forecaster(demo, history)
        load, pv = forecaster(start, 96, 900)
    finally:
        history.close()
    assert forecaster.source == {"load": "similar_days", "pv": "clear_sky+history"}
    truth = SimSite(demo).history_kw(start, start + timedelta(days=1))
    # the office profile repeats every working day; PV differs from the HIL's clear sky in
    # shape only (pvlib on the tilted array), its daily energy is calibrated on the week
    assert np.abs(load - truth["load_kw"]).max() < 0.5
    assert pv.sum() == pytest.approx(truth["pv_kw"].sum(), rel=0.03)
    assert np.abs(pv - truth["pv_kw"]).mean() < 5.0


def test_seeding_again_replaces_the_same_days(demo) -> None:
    seed_history(demo)
    seed_history(demo)
    history = History(Path(demo.storage.dir) / "history.sqlite")
    try:
        start = hil_of(demo).start
        ivs = history.intervals(start - timedelta(days=7), start)
        assert len(ivs) == 7 * 96
        assert max(iv.load_kwh for iv in ivs) < 100 * 0.25  # not twice the office's 95 kW
    finally:
        history.close()

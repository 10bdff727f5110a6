"""The outage scenario: its grid_outage event needs a site with a PCC breaker."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load
from hil import scenario

ROOT = Path(__file__).resolve().parents[2]


def test_the_outage_scenario_runs_on_the_microgrid_and_is_refused_without_a_breaker():
    sc = scenario.load("grid_outage_evening")
    [w] = sc.windows
    assert isinstance(w.event, scenario.GridOutage) and (w.end - w.start).total_seconds() == 4 * 3600
    assert sc.apply(load(ROOT / "configs/microgrid.yaml")).devices
    with pytest.raises(scenario.ScenarioError, match="grid_outage needs a site with a PCC breaker"):
        sc.apply(load(ROOT / "configs/demo.yaml"))

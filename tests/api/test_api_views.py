"""The API's JSON views of a site with EV chargers (decided by the real controller and
kernel) and of a plan with EV demands: they fit the OpenAPI document and carry the chargers,
the sessions' demands and the plan's EV power."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from api_helpers import check

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vpp"))
from ev_site import T0, config, decide, ev, image  # noqa: E402

from edge.api import reads, views  # noqa: E402
from edge.api.openapi import document  # noqa: E402
from edge.control.instructions import InstructionBook  # noqa: E402
from edge.control.kernel import load_kernel  # noqa: E402
from edge.plan.stats import PlannerStats, PlanSummary  # noqa: E402


@pytest.fixture(scope="module")
def kernel():
    return load_kernel()


def test_the_state_of_an_ev_site_carries_chargers_demands_and_setpoints(kernel):
    cfg = config()
    img = image(30.0 + 16 * 0.69, ev1=ev(16.0, session=3.0, kwh=4.0), stale=("ev2",))
    decision, _ = decide(cfg, kernel, img)
    doc = views.state_of(cfg, img, decision, InstructionBook(), cycle=7)
    check(document(), "/api/v1/state", 200, doc)
    assert doc["ev_chargers"]["ev1"] == {"status": "Charging", "kw": 11.04, "a": 16.0,
                                         "offered_a": 16.0, "soc_pct": None,
                                         "session_kwh": 4.0}
    assert doc["ev_chargers"]["ev2"] == {"status": "Offline"}
    assert doc["not_good"] == {"ev2": "stale"} and doc["cycle"] == 7
    assert [(d["device_id"], d["max_kw"]) for d in doc["demands"]] == [("ev1", 22.08)]
    assert doc["setpoints"]["ev_charger"]["ev1"] is not None
    assert doc["bounds"]["import_limit_kw"] == 80.0 and doc["bounds"]["soft_import_cap_kw"] is None


def test_the_plan_view_gives_each_step_its_prices_and_ev_power():
    cfg = config()
    n = 8
    summary = PlanSummary(
        start=T0, step_s=900, grid_kw=np.full(n, 40.0), bess_kw=np.zeros(n),
        soc_pct=np.linspace(50, 60, n + 1), pv_kw=np.zeros(n), status="optimal",
        demand_kw={"ev1": np.array([0, 0, 11.04, 22.08, 22.08, 0, 0, 0.0])},
        first_step_s=300.0)
    stats = PlannerStats(solves=1, last_at=T0, last_status="optimal", last_solve_s=0.02)
    daemon = SimpleNamespace(config=cfg, planner=SimpleNamespace(plan=summary, stats=stats))
    doc = reads.plan(daemon, T0 + timedelta(minutes=10))
    check(document(), "/api/v1/plan", 200, doc)
    steps = doc["steps"]
    assert steps[0]["start"] == "2026-06-22T04:10:00.000Z", "the first step runs from the plan"
    assert steps[1]["start"] == "2026-06-22T04:15:00.000Z"
    assert [s["ev_kw"] for s in steps[:5]] == [0.0, 0.0, 11.04, 22.08, 22.08]
    assert steps[3]["ev_kw_by_device"] == {"ev1": 22.08}
    assert all(s["import_price"] == 0.5 for s in steps)  # the site's flat tariff
    assert steps[-1]["soc_pct"] == 60.0 and doc["soc_start_pct"] == 50.0
    assert doc["planner"]["restarts"] is None  # in process: no worker


def test_no_plan_is_an_empty_plan_view():
    cfg = config()
    doc = reads.plan(SimpleNamespace(config=cfg, planner=None), T0)
    check(document(), "/api/v1/plan", 200, doc)
    assert (doc["enabled"], doc["status"], doc["steps"], doc["planner"]) == (
        False, None, [], None)

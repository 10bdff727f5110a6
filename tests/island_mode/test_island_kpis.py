"""simulate's island KPIs: detection and transfer are timed from the HIL's grid loss (not
from the controller's own detection), and the critical loads' dark time comes from the HIL."""

from __future__ import annotations

import pytest

from edge.island.report import IslandEvent
from tools.simulate.islandkpis import island_kpis, outage


def record(events: list[IslandEvent], lost: list[float], dark_s: float) -> dict:
    return {"critical_kwh": 100.0, "unserved_critical_kwh": 25 * dark_s / 3600,
            "dark_s": dark_s, "longest_dark_s": dark_s, "interruptions": 2, "collapses": 1, "transitions": [], "step_ns": [1000],
            "events": [e.as_dict() for e in events],
            "outages": [outage(e, lost) for e in events], "state_at_end": "on_grid",
            "breaker_operations": 2, "closed_out_of_sync": 0}


def test_detection_and_transfer_are_timed_from_the_grid_loss():
    ev = IslandEvent(start_s=64802.31, stable_s=64803.12, end_s=79500.0)
    k = island_kpis(record([ev], [100.0, 64800.0], dark_s=2.9))
    assert k["detection_s"] == pytest.approx(2.31)
    assert k["transfer_s"] == pytest.approx(3.12)  # grid loss -> island standing
    assert k["dark_s"] == 2.9 and k["longest_dark_s"] == 2.9
    assert k["critical_interruptions"] == 2
    assert k["critical_served_ratio"] == pytest.approx(1 - 25 * 2.9 / 3600 / 100)


def test_an_island_the_hil_did_not_cause_has_no_detection_time():
    ev = IslandEvent(start_s=50.0, stable_s=51.0)  # a trip: no grid loss before it
    k = island_kpis(record([ev], [100.0], dark_s=0.0))
    assert k["detection_s"] is None and k["transfer_s"] is None

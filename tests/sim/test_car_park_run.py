"""The car park through `pedf-edge simulate`: the HIL's charge points connect to the
daemon's CSMS over real WebSockets, the controller charges the cars under an import limit
that uncontrolled charging breaks, and the KPI table, JSON and HTML report carry the EV
figures of every strategy.

Three chargers of configs/workplace_car_park.yaml (a 1.6J one, a 2.0.1 one whose car tells
its SoC, one with a 1-phase car) on a late afternoon, 15:30-18:00, with the cars leaving
before the end and the chargers told their departures; no battery, so the cars alone meet
the limit. 2.5 simulated hours at x720."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edge import config as config_mod
from hil import scenario as scenario_mod
from tools.simulate.command import command

ROOT = Path(__file__).resolve().parents[2]
LIMIT_KW = 90.0
CARS = {  # the building draws 40-69 kW net here: the three cars (51 kW) do not all fit
    "ev01": {"arrive": "15:45", "depart": "17:30", "capacity_kwh": 40, "soc_pct": 60,
             "id_tag": "T1"},
    "ev03": {"arrive": "15:45", "depart": "17:45", "capacity_kwh": 60, "soc_pct": 50,
             "reports_soc": True, "id_tag": "T3"},
    "ev04": {"arrive": "16:00", "depart": "17:30", "capacity_kwh": 18, "soc_pct": 40,
             "car_phases": 1, "id_tag": "T4"},
}
STRATEGIES = ("controller", "rule_based", "uncontrolled", "optimum")
EV_FIELDS = ("ev_kwh", "ev_valley_share_pct", "ev_sessions", "ev_sessions_met",
             "ev_sessions_open", "import_over_min", "import_worst_kw", "total_cost")


def car_park_site() -> config_mod.Config:
    data = config_mod.load(ROOT / "configs" / "workplace_car_park.yaml").model_dump()
    data["devices"] = [d for d in data["devices"]
                       if d["id"] in CARS or d["role"] in ("pv", "meter")]
    for d in data["devices"]:
        if d["id"] in CARS:
            d["sim"]["arrivals"] = [CARS[d["id"]]]
            d["default_departure"] = CARS[d["id"]]["depart"]
    return config_mod.Config.model_validate(data)


def afternoon(path: Path) -> Path:
    """15:30-18:00 of the shipped car-park day, as a scenario of its own."""
    day = scenario_mod.load("workplace_car_park")
    k = 62  # 15:30
    spec = {"name": "car_park_afternoon", "description": "three cars, 15:30-18:00",
            "start": "2026-07-01T15:30:00+08:00", "duration_h": 2.5, "step_s": 900,
            "history_days": 0,
            "series": {"pv_kw": [float(x) for x in day.pv_kw[k:k + 10]],
                       "load_kw": [float(x) for x in day.load_kw[k:k + 10]]},
            "tariff": day.spec.tariff.model_dump(mode="json", exclude_unset=True),
            "limits": {"import_limit_kw": LIMIT_KW, "export_limit_kw": 0}}
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def kpis(tmp_path_factory) -> tuple[dict, str, int]:
    tmp = tmp_path_factory.mktemp("carpark")
    out, report = tmp / "kpi.json", tmp / "day.html"
    code = command(car_park_site(), str(afternoon(tmp / "afternoon.yaml")), out=out,
                   report=report, forecast="perfect", planner=True, speed=720.0, hours=None,
                   quiet=True)
    return json.loads(out.read_text()), report.read_text(encoding="utf-8"), code


def strategy(k: dict, name: str) -> dict:
    return k["controller"] if name == "controller" else k["references"][name]


def test_the_run_completes_and_every_strategy_has_the_ev_figures(kpis) -> None:
    k, html, code = kpis
    assert code == 0 and k["crashes"] == 0
    for name in STRATEGIES:
        assert all(strategy(k, name).get(f) is not None for f in EV_FIELDS), name
        assert strategy(k, name)["ev_sessions"] == 3, name
    assert set(k["ev_sessions"]) == set(STRATEGIES)
    for row in ("EV energy delivered", "EV departures met", "Time above import limit"):
        assert row in html


def test_the_controller_charges_every_car_toward_what_it_needs(kpis) -> None:
    k, _, _ = kpis
    rows = k["ev_sessions"]["controller"]
    assert sorted(r["device"] for r in rows) == sorted(CARS)
    assert all(r["done"] and r["delivered_kwh"] >= 0.8 * r["need_kwh"] for r in rows), rows
    need = sum(r["need_kwh"] for r in rows)
    assert k["controller"]["ev_kwh"] >= 0.9 * need
    assert k["controller"]["ev_sessions_met"] >= 2
    assert k["references"]["optimum"]["ev_sessions_met"] == 3


def test_the_controller_holds_the_import_limit_that_uncontrolled_charging_breaks(kpis) -> None:
    k, _, _ = kpis
    ctrl, free = k["controller"], k["references"]["uncontrolled"]
    assert free["import_over_min"] > 15 and free["import_worst_kw"] > 5  # the limit binds
    assert ctrl["import_over_kwh"] <= 0.1 * free["import_over_kwh"]
    assert ctrl["import_worst_kw"] < free["import_worst_kw"]

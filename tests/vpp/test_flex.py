"""The flex message from a process image (and a plan): what the site offers the platform."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import yaml

from drivers.base import Quality, Reading
from edge import config as config_mod
from edge.image.image import DeviceState, ProcessImage
from edge.plan.stats import PlanSummary
from edge.vpp import flex
from edge.vpp.schemas.catalogue import undeclared
from edge.vpp.schemas.reports import Flex

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 22, 4, 7, 30, tzinfo=UTC)


def demo(**vpp):
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs/demo.yaml").read_text()))
    data["vpp"] = vpp
    return config_mod.parse(data)


def image(cfg, *, grid=40.0, pv=0.0, bess=0.0, soc=50.0, stale=()) -> ProcessImage:
    values = {"pv1": {"power_kw": pv}, "bess1": {"power_kw": bess, "soc_pct": soc},
              "pcc": {"power_kw": grid}, "load": {"power_kw": grid + pv + bess}}
    states = {}
    for d in cfg.devices:
        q = Quality.STALE if d.id in stale else Quality.GOOD
        states[d.id] = DeviceState(Reading(d.id, values[d.id]), q, 0)
    return ProcessImage(NOW, 1.0, states)


def test_current_baseline_offers_battery_room_on_the_quarter_hours():
    cfg = demo(flex_horizon_h=2)  # 200 kWh, 60/60 kW, SoC 10-95 %, 95 % efficiencies
    msg = flex.build(cfg, image(cfg, soc=50.0), NOW)
    Flex.model_validate({"msg_id": 1, **msg})
    assert undeclared(Flex, {"msg_id": 1, **msg}) == []
    assert msg["baseline_source"] == "current"
    starts = [iv["start"] for iv in msg["intervals"]]
    assert starts[0] == "2026-06-22T04:00:00.000Z" and len(starts) == 8
    first = msg["intervals"][0]
    assert first["baseline_kw"] == 40.0
    assert first["up_kw"] == 60.0 and first["down_kw"] == 60.0
    assert first["up_kwh"] == round(0.40 * 200 * 0.95, 3)  # SoC 50 -> 10 %
    assert first["down_kwh"] == round(0.45 * 200 / 0.95, 3)  # SoC 50 -> 95 %


def test_discharging_baseline_draws_the_soc_down_and_caps_up_power_by_energy():
    cfg = demo(flex_horizon_h=4)
    msg = flex.build(cfg, image(cfg, grid=0.0, bess=40.0, soc=20.0), NOW)
    ivs = msg["intervals"]
    # 40 kW discharge held: 20 kWh above the floor * 0.95 lasts about half an hour
    assert ivs[0]["up_kw"] == 20.0  # 60 kW rating - 40 kW already delivered
    assert ivs[0]["down_kw"] == 100.0  # stop discharging (40) and charge (60)
    assert [iv["baseline_kw"] for iv in ivs[:2]] == [0.0, 0.0]
    assert ivs[2]["baseline_kw"] == 40.0  # empty: the baseline battery stops, load is imported
    assert ivs[2]["up_kwh"] == 0.0 and ivs[2]["up_kw"] == 0.0
    assert all(a["down_kwh"] <= b["down_kwh"] for a, b in zip(ivs, ivs[1:]))


def test_pv_counts_as_downward_flex_and_a_stale_battery_as_nothing():
    cfg = demo()
    msg = flex.build(cfg, image(cfg, grid=-0.0, pv=50.0, bess=-30.0, soc=60.0, stale={"bess1"}),
                     NOW)
    first = msg["intervals"][0]
    assert msg["soc_pct"] is None
    assert first["up_kw"] == 0.0 and first["up_kwh"] == 0.0
    assert first["down_kw"] == 50.0 and first["down_kwh"] == 12.5


def test_a_plan_covering_now_is_the_baseline():
    cfg = demo(flex_horizon_h=1)
    n = 8
    plan = PlanSummary(NOW.replace(minute=0, second=0) - timedelta(minutes=15), 900,
                 grid_kw=np.linspace(10, 45, n), bess_kw=np.full(n, -20.0),
                 soc_pct=np.linspace(30, 60, n + 1), pv_kw=np.zeros(n))
    msg = flex.build(cfg, image(cfg, soc=30.0), NOW, plan)
    assert msg["baseline_source"] == "plan"
    assert [iv["baseline_kw"] for iv in msg["intervals"]] == [15.0, 20.0, 25.0, 30.0]
    first = msg["intervals"][0]
    assert first["up_kw"] == 80.0  # from the planned 20 kW charge to 60 kW discharge
    assert first["down_kw"] == 40.0  # planned charge 20 of 60 kW
    late = PlanSummary(NOW + timedelta(hours=1), 900, np.zeros(4), np.zeros(4), np.zeros(5), np.zeros(4))
    assert flex.build(cfg, image(cfg), NOW, late)["baseline_source"] == "current"

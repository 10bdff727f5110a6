"""One site with two batteries, two switchable loads and PV: the OpenADR opt decision, the MQTT
DR assessment, the dispatch reach check and the flex message count what it can deliver the
same way (edge/vpp/capability.py)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from drivers.base import Quality, Reading
from edge import config as config_mod
from edge.control.instructions import InstructionBook
from edge.image.image import DeviceState, ProcessImage
from edge.report.history import History
from edge.vpp import flex
from edge.vpp.capability import site_capability
from edge.vpp.commands.checks import reach
from edge.vpp.commands.parse import Rejected
from edge.vpp.dr.manager import DrManager
from edge.vpp.openadr.mapping import flexibility
from edge.vpp.shaping import DrEvent

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 22, 4, 0, tzinfo=UTC)
HOURS = 0.5
PCC_KW = 30.0


def site():
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs/demo.yaml").read_text()))
    data["devices"] += [
        {"id": "bess2", "host": "127.0.0.1", "role": "battery", "port": 15025, "capacity_kwh": 100,
         "max_charge_kw": 30, "max_discharge_kw": 30},
        *({"id": i, "host": "127.0.0.1", "role": "load", "map": "flexload_generic", "port": port, "rated_kw": kw}
          for i, port, kw in (("dhw", 15026, 8), ("hvac", 15027, 15)))]
    data["dr"] = {"target_ratio": 1.0, "ramp_in_s": 0}
    return config_mod.parse(data)


def image(cfg) -> ProcessImage:
    """Batteries at rest (DR assessment counts them from rest, the others from now)."""
    values = {"pv1": {"power_kw": 50.0}, "bess1": {"power_kw": 0.0, "soc_pct": 60.0},
              "bess2": {"power_kw": 0.0, "soc_pct": 12.0},  # 1.9 kWh: energy-limited
              "pcc": {"power_kw": PCC_KW}, "load": {"power_kw": 100.0},
              "dhw": {"power_kw": 8.0}, "hvac": {"power_kw": 12.0}}
    return ProcessImage(NOW, 1.0, {d.id: DeviceState(Reading(d.id, values[d.id]), Quality.GOOD, 0)
                                   for d in cfg.devices})


def test_every_path_counts_the_same_capability(tmp_path):
    cfg, img = site(), image(site())
    cap = site_capability(cfg, img, HOURS)
    batteries_up = 60.0 + 1.9 / HOURS  # bess1 at its rating, bess2 at its energy over 30 min
    assert cap.up_kw == pytest.approx(batteries_up + 8 + 12)  # + the loads it may shed
    assert cap.down_kw == pytest.approx(60 + 30 + 50)  # charge both, curtail the PV

    # OpenADR: the flexibility the opt decision weighs
    oadr = flexibility(cfg, img, HOURS)
    assert (oadr.reduce_kw, oadr.increase_kw) == (cap.up_kw, cap.down_kw)
    assert "switchable loads 20.0 kW" in oadr.detail

    # MQTT DR: asking exactly the capability is fully deliverable, twice it half
    mgr = DrManager(cfg, InstructionBook(), History(tmp_path / "history.sqlite"))

    def ratio(direction: str, kw: float) -> float:
        event = DrEvent("e", "grid_operator", direction, NOW + timedelta(hours=1),
                        NOW + timedelta(hours=1 + HOURS), kw=kw, baseline_kw=100.0)
        return mgr.assess(event, NOW, img).expected_ratio

    assert ratio("reduce", cap.up_kw) == pytest.approx(1.0)
    assert ratio("reduce", 2 * cap.up_kw) == pytest.approx(0.5)
    assert ratio("increase", cap.down_kw) == pytest.approx(1.0)
    assert ratio("increase", 2 * cap.down_kw) == pytest.approx(0.5)

    # dispatch: a grid target is chased by the batteries alone, as far as they can hold it
    reach(cap, PCC_KW, PCC_KW - batteries_up, HOURS)
    with pytest.raises(Rejected, match="kWh of discharge"):
        reach(cap, PCC_KW, PCC_KW - batteries_up - 2.0, HOURS)
    reach(cap, PCC_KW, PCC_KW + 90.0, HOURS)
    with pytest.raises(Rejected, match="beyond what the batteries can reach"):
        reach(cap, PCC_KW, PCC_KW + 92.0, HOURS)

    # flex: the first quarter hour of the current baseline is the capability over 15 min
    quarter = site_capability(cfg, img, 0.25)
    first = flex.build(cfg, img, NOW)["intervals"][0]
    assert (first["up_kw"], first["down_kw"], first["up_kwh"], first["down_kwh"]) == tuple(
        round(x, 3) for x in (quarter.up_kw, quarter.down_kw, quarter.up_kwh, quarter.down_kwh))
    assert first["up_kw"] == round(60 + 1.9 / 0.25 + 20, 3)
    mgr.close()

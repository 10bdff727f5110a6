"""The thermal_storage role through the real `decide` on hand-made process images, on a
zero-export site with PV: stored cold is spent only on import it replaces (a plan that says
discharge while PV is being curtailed is overruled), surplus PV the site cannot sell charges
the tank, and the HVAC and the tank share one import room rather than each taking all of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drivers.base import Quality, Reading
from edge.config import parse
from edge.control.decide import Controller
from edge.control.instructions import Instruction, InstructionBook
from edge.control.kernel import load_kernel
from edge.image.image import DeviceState, ProcessImage

T0 = datetime(2026, 7, 1, 4, tzinfo=UTC)  # 12:00 in Shanghai


def site() -> dict:
    return {
        "site": {"id": "s", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pv1", "host": "127.0.0.1", "role": "pv", "port": 1501, "rated_kw": 60},
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
            {"id": "ahu1", "host": "127.0.0.1", "role": "hvac", "port": 1511,
             "map": "hvac_generic", "rated_kw": 20, "min_on_s": 0, "min_off_s": 0,
             "comfort": [{"start": "08:00", "end": "19:00", "min_c": 22, "max_c": 26}],
             "model": {"r_k_per_kw": 2.5, "c_kwh_per_k": 12, "gains_kw": 8}},
            {"id": "tank", "host": "127.0.0.1", "role": "thermal_storage", "port": 1520,
             "map": "tes_generic", "capacity_kwh": 300, "max_charge_kw": 20,
             "max_discharge_kw": 20},
        ],
        "control": {"functions": ["export_limit"], "export_limit_kw": 0, "import_limit_kw": 150},
        "tariff": {"export_price": 0.0,
                   "periods": [{"name": "flat", "start": "00:00", "end": "00:00",
                                "price": 0.5}]},
    }


SITE = parse(site())


def image(pcc_kw: float, pv_kw: float, pv_limit_kw: float, tank_kw: float = 0.0,
          hvac_kw: float = 10.0) -> ProcessImage:
    def state(dev, values):
        return DeviceState(Reading(dev, values), Quality.GOOD, 0)

    return ProcessImage(T0, 1.0, {
        "pcc": state("pcc", {"power_kw": pcc_kw}),
        "pv1": state("pv1", {"power_kw": pv_kw, "limit_kw": pv_limit_kw}),
        "ahu1": state("ahu1", {"power_kw": hvac_kw, "rated_kw": 20.0, "zone_temp_c": 24.0,
                               "outdoor_temp_c": 35.0}),
        "tank": state("tank", {"power_kw": tank_kw, "tank_temp_c": 8.0})})


def plan(tank_kw: float, hvac_kw: float = 10.0, cap_kw: float | None = None) -> InstructionBook:
    book = InstructionBook()
    book.put(Instruction(id="plan-1", source="plan", start=T0 - timedelta(minutes=5),
                         end=T0 + timedelta(minutes=10),
                         demand_kw=(("ahu1", hvac_kw), ("tank", tank_kw))))
    if cap_kw is not None:
        book.put(Instruction(id="dr-1", source="grid_operator", start=T0 - timedelta(hours=1),
                             end=T0 + timedelta(hours=1), grid_max_kw=cap_kw))
    return book


@pytest.fixture
def ctl() -> Controller:
    return Controller(SITE, load_kernel())


def test_a_planned_discharge_is_not_spent_while_pv_is_curtailed(ctl):
    # The tank discharges 15 kW as planned and PV is held at its 40 kW limit to keep the
    # PCC at zero export: the cold only replaced PV that is now thrown away.
    # PV is probed upwards (how far it would go is not seen while it is held back), and the
    # discharge gives way by as much, cycle after cycle, until PV is no longer held back.
    d, _ = ctl.decide(image(pcc_kw=0.0, pv_kw=40.0, pv_limit_kw=40.0, tank_kw=-15.0),
                      plan(-15.0), ctl.initial_memory(), 0.0)
    assert d.setpoints["thermal_storage"]["tank"] > -15.0 + 1.0
    assert d.setpoints["pv"]["pv1"] > 40.0 + 1.0


def test_a_discharge_stops_at_the_import_it_replaces(ctl):
    # 8 kW of import with the tank idle: discharging 15 kW would push 7 kW into export.
    d, _ = ctl.decide(image(pcc_kw=8.0, pv_kw=30.0, pv_limit_kw=60.0), plan(-15.0),
                      ctl.initial_memory(), 0.0)
    assert d.setpoints["thermal_storage"]["tank"] == pytest.approx(-8.0, abs=0.5)


def test_a_discharge_the_site_imports_for_is_followed(ctl):
    d, _ = ctl.decide(image(pcc_kw=40.0, pv_kw=10.0, pv_limit_kw=60.0), plan(-15.0),
                      ctl.initial_memory(), 0.0)
    assert d.setpoints["thermal_storage"]["tank"] == pytest.approx(-15.0)


def test_surplus_pv_the_site_cannot_sell_charges_the_tank(ctl):
    # PV held at its limit with the tank idle and the plan saying idle: the surplus would be
    # curtailed, so the tank takes it (probed upwards while PV stays held back).
    mem = ctl.initial_memory()
    d, _ = ctl.decide(image(pcc_kw=0.0, pv_kw=40.0, pv_limit_kw=40.0), plan(0.0), mem, 0.0)
    assert d.setpoints["thermal_storage"]["tank"] > 0.0
    assert d.setpoints["pv"]["pv1"] > 40.0


def test_the_hvac_and_the_tank_share_one_import_room_under_a_cap(ctl):
    # Site 20 kW without them, DR cap 35 kW: 15 kW of room for both, not 15 kW each.
    d, _ = ctl.decide(image(pcc_kw=30.0, pv_kw=0.0, pv_limit_kw=60.0, hvac_kw=10.0),
                      plan(15.0, hvac_kw=10.0, cap_kw=35.0), ctl.initial_memory(), 0.0)
    both = d.setpoints["hvac"]["ahu1"] + d.setpoints["thermal_storage"]["tank"]
    assert both <= 15.0 + 1e-6

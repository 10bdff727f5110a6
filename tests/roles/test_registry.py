"""The role registry is the one extension point: every role's config model answers to its
name, the config union and error hints come from the registry, every role's telemetry fields
are present even on a site without such a device, and each role's hooks do what it says."""

from __future__ import annotations

import typing
from datetime import UTC, datetime

import pytest

from drivers.base import Quality, Reading
from edge.config import ConfigError, parse
from edge.image.balance import site_power
from edge.image.image import DeviceState, ProcessImage
from edge.report import telemetry
from edge.roles import ROLES, DeviceConfig, role_of
from edge.vpp.capability import site_capability

T0 = datetime(2026, 6, 22, 12, tzinfo=UTC)
TARIFF = {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]}
PCC = {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504}


def site(*devices: dict) -> object:
    return parse({"site": {"id": "s"}, "devices": [PCC, *devices], "tariff": TARIFF})


def test_each_role_model_is_named_for_its_role_and_in_the_config_union():
    union = typing.get_args(typing.get_args(DeviceConfig)[0])
    assert {m.model_fields["role"].annotation.__args__[0] for m in union} == set(ROLES)
    for name, role in ROLES.items():
        assert role.model.model_fields["role"].annotation.__args__ == (name,)


def test_an_unknown_role_is_refused_with_the_registered_ones_named():
    with pytest.raises(ConfigError) as err:
        site({"id": "x", "host": "127.0.0.1", "role": "windmill", "port": 1510})
    assert err.value.problems == [f"devices[1]: role must be one of: {', '.join(ROLES)}"]


def test_every_roles_telemetry_fields_are_there_on_a_meter_only_site():
    cfg = site()
    image = ProcessImage(T0, 1.0, {"pcc": DeviceState(Reading("pcc", {"power_kw": 12.0}),
                                                      Quality.GOOD, 0)})
    msg = telemetry.build(cfg, image, None)
    for name, role in ROLES.items():
        assert role.telemetry([], image).keys() <= msg.keys(), name
    assert msg["grid_kw"] == 12.0 and msg["load_kw"] == 12.0  # balance: no PV, no battery


def test_balance_terms_come_from_each_role():
    cfg = site({"id": "pv1", "host": "127.0.0.1", "role": "pv", "port": 1502, "rated_kw": 50},
               {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1503, "capacity_kwh": 100,
                "max_charge_kw": 50, "max_discharge_kw": 50})
    image = ProcessImage(T0, 1.0, {
        "pcc": DeviceState(Reading("pcc", {"power_kw": 5.0}), Quality.GOOD, 0),
        "pv1": DeviceState(Reading("pv1", {"power_kw": 30.0}), Quality.GOOD, 0),
        "bess1": DeviceState(Reading("bess1", {"power_kw": 10.0, "soc_pct": 50}),
                             Quality.GOOD, 0),
    })
    p = site_power(cfg, image)
    assert (p.grid_kw, p.pv_kw, p.bess_kw, p.load_kw) == (5.0, 30.0, 10.0, 45.0)
    stale = ProcessImage(T0, 1.0, {**image.devices, "pv1": DeviceState(
        Reading("pv1", {"power_kw": 30.0}), Quality.STALE, 3)})
    assert site_power(cfg, stale).load_kw is None  # never a partial sum


def test_a_switchable_load_and_a_battery_say_what_they_can_deliver():
    cfg = site({"id": "heater", "host": "127.0.0.1", "role": "load", "port": 1505, "map": "flexload_generic",
                "rated_kw": 20},
               {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 1503, "capacity_kwh": 100,
                "max_charge_kw": 40, "max_discharge_kw": 50, "soc_min_pct": 10})
    image = ProcessImage(T0, 1.0, {
        "pcc": DeviceState(Reading("pcc", {"power_kw": 5.0}), Quality.GOOD, 0),
        "heater": DeviceState(Reading("heater", {"power_kw": 20.0, "on": 1.0}), Quality.GOOD, 0),
        "bess1": DeviceState(Reading("bess1", {"power_kw": 0.0, "soc_pct": 10.0}),
                             Quality.GOOD, 0),
    })
    heater = next(d for d in cfg.devices if d.id == "heater")
    part = role_of(heater).capability(heater, image)
    assert (part.push_kw, part.max_kw, part.min_kw) == (-20.0, 0.0, -20.0)
    cap = site_capability(cfg, image, hours=1.0)
    assert cap.up_kw == pytest.approx(20.0)  # shed the heater; the empty battery adds nothing
    assert cap.down_kw == pytest.approx(40.0)  # the battery can charge


def test_check_summary_lines_come_from_the_roles():
    cfg = site({"id": "dc1", "host": "127.0.0.1", "role": "dcdc", "port": 1506, "map": "dcdc_generic",
                "rated_kw": 30, "bus_nominal_v": 375})
    assert role_of(cfg.devices[1]).summary(cfg.devices[1]) == \
        "30 kW, DC bus 375 V, alarm outside 337.5-412.5 V"
    assert role_of(cfg.devices[0]).summary(cfg.devices[0]) == "measures grid"

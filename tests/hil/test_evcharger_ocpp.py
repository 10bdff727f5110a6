"""Simulated charge points in the HIL against a real CSMS (the ocpp library's central-system
side on websockets, tests/hil/ocpp_csms.py) over loopback WebSockets, in OCPP 1.6 and 2.0.1:
boot, a transaction when the car comes, MeterValues, charging profiles that limit the car,
a control profile that lapses to the stack-0 fail-safe, a charger that refuses
TxDefaultProfile, dropped connections and a CSMS that is not up yet.

The site's clock runs at ×1 and the tests step simulated time themselves (`site.step_to`),
then wait for what the CSMS receives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, timedelta

import pytest
from conftest import free_port, wait_for
from ocpp.v16 import call as c16
from ocpp.v201 import call as c201
from ocpp_csms import HEARTBEAT_S, Csms
from test_ev_car import T0, site_dict

from edge.app.clock import Clock
from edge.config import parse
from hil.site import SimSite

VERSIONS = ["1.6", "2.0.1"]
FULL_KW = 32 * 230 * 3 / 1000


@pytest.fixture
async def running() -> AsyncIterator:
    opened: list[tuple[Csms, SimSite]] = []

    async def _open(csms_up: bool = True, **sim) -> tuple[Csms, SimSite]:
        csms = Csms(free_port())
        if csms_up:
            await csms.start()
        site = SimSite(parse(site_dict(csms.port, **sim)), Clock(T0, 1.0))
        await site.start()
        opened.append((csms, site))
        return csms, site

    yield _open
    for csms, site in opened:
        await site.stop()
        await csms.stop()


def utc_at(t_s: float) -> str:
    return (T0 + timedelta(seconds=t_s)).astimezone(UTC).isoformat()


def set_profile(version: str, amps: float, *, purpose: str = "TxDefaultProfile", stack: int = 0,
                pid: int = 1, connector: int = 0, duration: int | None = None,
                start_s: float | None = None, tx_id=None):
    """SetChargingProfile in A, Absolute from `start_s` (sim s) or Relative without it."""
    schedule = {"charging_rate_unit": "A", "duration": duration,
                "start_schedule": utc_at(start_s) if start_s is not None else None,
                "charging_schedule_period": [{"start_period": 0, "limit": amps}]}
    schedule = {k: v for k, v in schedule.items() if v is not None}
    profile = {"stack_level": stack, "charging_profile_purpose": purpose,
               "charging_profile_kind": "Absolute" if start_s is not None else "Relative"}
    if tx_id is not None:
        profile["transaction_id"] = tx_id
    if version == "1.6":
        return c16.SetChargingProfile(connector, {**profile, "charging_profile_id": pid,
                                                  "charging_schedule": schedule})
    if purpose == "ChargePointMaxProfile":
        profile["charging_profile_purpose"] = "ChargingStationMaxProfile"
    return c201.SetChargingProfile(connector, {**profile, "id": pid,
                                               "charging_schedule": [{**schedule, "id": pid}]})


async def started(csms: Csms, version: str) -> dict:
    """The transaction the CSMS saw start: its id and meter start (Wh)."""
    if version == "1.6":
        p = (await csms.wait("CP1", "StartTransaction"))[0]
        return {"id": p["transaction_id"], "meter_wh": p["meter_start"]}
    p = (await csms.wait("CP1", "TransactionEvent", where=lambda p: p["event_type"] == "Started"))[0]
    assert p["evse"] == {"id": 1, "connector_id": 1}
    energy = readings(p["meter_value"])[0]["Energy.Active.Import.Register"]
    return {"id": p["transaction_info"]["transaction_id"], "meter_wh": energy}


def readings(meter_value: list[dict]) -> list[dict[str, float]]:
    """Per MeterValue, measurand -> value (phase L1 for per-phase ones)."""
    return [{sv.get("measurand", "Energy.Active.Import.Register"): float(sv["value"])
             for sv in mv["sampled_value"] if sv.get("phase") in (None, "L1")}
            for mv in meter_value]


async def meter_readings(csms: Csms, version: str, count: int) -> list[tuple[dict, object]]:
    """(reading, transaction id) of the first `count` periodic readings."""
    if version == "1.6":
        got = await csms.wait("CP1", "MeterValues", count)
        return [(readings(p["meter_value"])[0], p.get("transaction_id")) for p in got]
    got = await csms.wait("CP1", "TransactionEvent", count,
                          where=lambda p: p["trigger_reason"] == "MeterValuePeriodic")
    return [(readings(p["meter_value"])[0], p["transaction_info"]["transaction_id"]) for p in got]


async def stopped(csms: Csms, version: str) -> dict:
    if version == "1.6":
        return (await csms.wait("CP1", "StopTransaction"))[0]
    return (await csms.wait("CP1", "TransactionEvent", where=lambda p: p["event_type"] == "Ended"))[0]


def statuses(csms: Csms, version: str) -> list[str]:
    key = "status" if version == "1.6" else "connector_status"
    return [p[key] for p in csms.of("CP1", "StatusNotification") if p.get("connector_id", 1) == 1
            and p.get("evse_id", 1) == 1]


@pytest.mark.parametrize("version", VERSIONS)
async def test_charge_point_boots_reports_its_connector_and_keeps_a_heartbeat(running, version) -> None:
    csms, site = await running(ocpp_version=version)
    boot = (await csms.wait("CP1", "BootNotification"))[0]
    vendor = boot["charge_point_vendor"] if version == "1.6" else boot["charging_station"]["vendor_name"]
    assert vendor == "PEDF-HIL"
    # a 1.6 charger may report its connector 0 (the whole station) first
    await csms.wait("CP1", "StatusNotification",
                    where=lambda p: p.get("connector_id", 1) == 1 and p.get("evse_id", 1) == 1)
    assert statuses(csms, version) == ["Available"]
    site.step_to(3 * HEARTBEAT_S + 5)  # simulated time: the granted interval is simulated s
    await csms.wait("CP1", "Heartbeat", 3)
    assert site.state("ev1")["connected"] == 1


@pytest.mark.parametrize("version", VERSIONS)
async def test_arriving_car_starts_a_transaction_reported_by_meter_values(running, version) -> None:
    csms, site = await running(ocpp_version=version)
    await csms.wait("CP1", "BootNotification")
    site.step_to(10 * 60)  # 08:05; the car came at 08:00
    tx = await started(csms, version)
    assert tx["meter_wh"] == 0
    assert (await csms.wait("CP1", "Authorize"))
    got = await meter_readings(csms, version, 5)
    assert {t for _, t in got} == {tx["id"]}
    last = got[-1][0]
    assert last["Power.Active.Import"] == pytest.approx(FULL_KW * 1000, rel=1e-3)
    assert last["Current.Import"] == pytest.approx(32)
    assert last["SoC"] > 20
    energies = [r["Energy.Active.Import.Register"] for r, _ in got]
    assert energies == sorted(energies) and energies[-1] > energies[0]
    await wait_for(lambda: "Charging" in statuses(csms, version) or "Occupied" in statuses(csms, version),
                   20, "the connector in use")
    state = site.state("ev1")
    assert state["status"] == "Charging" and state["transactions"] == 1
    site.step_to(9 * 3600 + 10 * 60)  # 17:05: the car left at 17:00
    stop = await stopped(csms, version)
    if version == "1.6":
        assert stop["transaction_id"] == tx["id"] and stop["reason"] == "EVDisconnected"
        assert stop["meter_stop"] == pytest.approx(site.state("ev1")["energy_kwh"] * 1000, abs=1)
    else:
        assert stop["transaction_info"]["stopped_reason"] == "EVDisconnected"
    await wait_for(lambda: statuses(csms, version)[-1] == "Available", 20, "connector free again")


@pytest.mark.parametrize("version", VERSIONS)
async def test_tx_default_profile_limits_the_cars_power_at_the_pcc(running, version) -> None:
    csms, site = await running(ocpp_version=version)
    site.step_to(10 * 60)
    await started(csms, version)
    full = site.last.grid_kw
    res = await csms.call("CP1", set_profile(version, 10))
    assert res.status == "Accepted"
    site.step_to(12 * 60)
    state = site.state("ev1")
    assert state["limit_a"] == 10 and state["power_kw"] == pytest.approx(6.9)
    assert site.last.grid_kw == pytest.approx(full - FULL_KW + 6.9, abs=0.5)
    assert state["received"][-1]["purpose"] == "TxDefaultProfile"
    assert state["limits"][-1] == (600, 1, 10)  # in force from the next simulated second


@pytest.mark.parametrize("version", VERSIONS)
async def test_control_profile_with_a_duration_lapses_to_the_stack_0_fail_safe(running, version) -> None:
    csms, site = await running(ocpp_version=version)
    site.step_to(10 * 60)
    await started(csms, version)
    assert (await csms.call("CP1", set_profile(version, 6, pid=1))).status == "Accepted"
    res = await csms.call("CP1", set_profile(version, 16, stack=1, pid=2, duration=300, start_s=600))
    assert res.status == "Accepted"
    site.step_to(10 * 60 + 299)
    assert site.state("ev1")["limit_a"] == 16
    assert site.state("ev1")["power_kw"] == pytest.approx(16 * 0.69)
    site.step_to(20 * 60)
    state = site.state("ev1")
    assert state["limit_a"] == 6 and state["power_kw"] == pytest.approx(6 * 0.69)
    assert [(t, a) for t, _, a in state["limits"]][-2:] == [(600, 16), (900, 6)]


@pytest.mark.parametrize("version", VERSIONS)
async def test_charger_rejecting_tx_default_still_honours_a_tx_profile(running, version) -> None:
    csms, site = await running(ocpp_version=version, rejects_tx_default=True)
    site.step_to(10 * 60)
    tx = await started(csms, version)
    assert (await csms.call("CP1", set_profile(version, 10))).status == "Rejected"
    site.step_to(11 * 60)
    assert site.state("ev1")["power_kw"] == pytest.approx(FULL_KW)
    res = await csms.call("CP1", set_profile(version, 10, purpose="TxProfile", connector=1,
                                             stack=1, tx_id=tx["id"]))
    assert res.status == "Accepted"
    site.step_to(12 * 60)
    assert site.state("ev1")["power_kw"] == pytest.approx(6.9)
    assert [r["status"] for r in site.state("ev1")["received"]] == ["Rejected", "Accepted"]


async def test_tx_profile_sent_right_behind_the_start_answer_finds_its_transaction(running):
    csms, site = await running(ocpp_version="1.6", rejects_tx_default=True, csms_up=False)
    csms.tx_limit_at_start = 10
    await csms.start()
    site.step_to(10 * 60)
    assert (await csms.wait("CP1", "SetChargingProfile.conf"))[0]["status"] == "Accepted"
    site.step_to(11 * 60)
    assert site.state("ev1")["power_kw"] == pytest.approx(6.9)


@pytest.mark.parametrize("version", VERSIONS)
async def test_charger_reconnects_after_drops_at_and_the_transaction_goes_on(running, version) -> None:
    csms, site = await running(ocpp_version=version, drops_at=["08:10"])
    await csms.wait("CP1", "BootNotification")
    site.step_to(20 * 60)  # 08:15
    tx = await started(csms, version)
    await wait_for(lambda: csms.connections.get("CP1") == 2, 30, "a second connection")
    await wait_for(lambda: site.state("ev1")["connections"] == 2, 30, "the charger back")
    assert site.state("ev1")["drops"] == 1
    assert len(csms.of("CP1", "BootNotification")) == 1  # a dropped link is not a reboot
    site.step_to(30 * 60)
    got = await meter_readings(csms, version, 25)
    assert {t for _, t in got} == {tx["id"]}  # one transaction throughout, nothing lost
    assert site.state("ev1")["transactions"] == 1


async def test_charge_point_keeps_retrying_until_the_csms_is_up(running, caplog) -> None:
    caplog.set_level("WARNING", logger="hil.serve.ocpp_client")
    csms, site = await running(csms_up=False)
    await wait_for(lambda: "no CSMS at ws://127.0.0.1" in caplog.text, 20, "the first failure")
    await csms.start()
    await csms.wait("CP1", "BootNotification", timeout=30)
    assert caplog.text.count("no CSMS at") == 1  # said once, not once per attempt


@pytest.mark.parametrize("version", VERSIONS)
async def test_charge_point_tells_its_highest_stack_level_and_refuses_above_it(running, version) -> None:
    csms, site = await running(ocpp_version=version)
    if version == "1.6":
        res = await csms.call("CP1", c16.GetConfiguration(key=["ChargeProfileMaxStackLevel"]))
        assert res.configuration_key[0]["value"] == "8"
    else:
        res = await csms.call("CP1", c201.GetVariables(get_variable_data=[
            {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "ProfileStackLevel"}}]))
        assert res.get_variable_result[0]["attribute_value"] == "8"
    assert (await csms.call("CP1", set_profile(version, 10, stack=9))).status == "Rejected"


@pytest.mark.parametrize("version", VERSIONS)
async def test_cleared_profile_gives_the_car_its_full_current_back(running, version) -> None:
    csms, site = await running(ocpp_version=version)
    site.step_to(10 * 60)
    await started(csms, version)
    await csms.call("CP1", set_profile(version, 10, pid=5))
    site.step_to(11 * 60)
    assert site.state("ev1")["limit_a"] == 10
    clear = (c16.ClearChargingProfile(id=5) if version == "1.6"
             else c201.ClearChargingProfile(charging_profile_id=5))
    assert (await csms.call("CP1", clear)).status == "Accepted"
    site.step_to(12 * 60)
    assert site.state("ev1")["limit_a"] == 32


async def test_stopped_charger_drops_its_connection_and_comes_back(running) -> None:
    csms, site = await running()
    await csms.wait("CP1", "BootNotification")
    await site.stop_device("ev1")
    site.step_to(1)
    await wait_for(lambda: not site.state("ev1")["connected"], 20, "the charger offline")
    await site.start_device("ev1")
    site.step_to(2)
    await wait_for(lambda: csms.connections.get("CP1") == 2, 30, "the charger back")


async def test_refused_id_tag_stops_the_car_before_any_transaction(running) -> None:
    csms, site = await running()
    csms.id_tag_status = "Invalid"
    await csms.wait("CP1", "BootNotification")
    site.step_to(10 * 60)
    await csms.wait("CP1", "Authorize")
    await wait_for(lambda: "Finishing" in statuses(csms, "1.6"), 20, "the connector finishing")
    site.step_to(11 * 60)
    assert csms.of("CP1", "StartTransaction") == []  # queued before Finishing: it came first
    assert site.state("ev1")["power_kw"] == 0 and site.state("ev1")["status"] == "Finishing"

"""The CSMS with a real OCPP 2.0.1 charging station over a real WebSocket: boot, the stack
depth read with GetVariables, ChargingStationMaxProfile and the fail-safe TxDefaultProfile,
TransactionEvent Started/Updated/Ended with meter values, status refinement, limits."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from conftest import wait_for
from ocpp.v201 import call
from ocpp_clients import Site, now_iso

from drivers.base import CHARGER_STATUS

TIMEOUT = 10.0


@pytest.fixture
async def site():
    s = Site()
    yield s
    await s.close()


def status_of(values: dict) -> str:
    return CHARGER_STATUS[int(values["status"])]


def event(kind: str, seq: int, state: str | None, sampled: list | None = None,
          **extra) -> call.TransactionEvent:
    info = {"transaction_id": "TX-7"} | ({"charging_state": state} if state else {})
    meter = [{"timestamp": now_iso(), "sampled_value": sampled}] if sampled else None
    return call.TransactionEvent(event_type=kind, timestamp=now_iso(),
                                 trigger_reason="ChargingStateChanged", seq_no=seq,
                                 transaction_info=info, meter_value=meter, **extra)


def sample(value: float, measurand: str, unit: str | None = None, phase: str | None = None,
           context: str | None = None, multiplier: int | None = None) -> dict:
    s = {"value": value, "measurand": measurand}
    if unit is not None or multiplier is not None:
        s["unit_of_measure"] = {k: v for k, v in (("unit", unit), ("multiplier", multiplier))
                                if v is not None}
    return s | {k: v for k, v in (("phase", phase), ("context", context)) if v is not None}


async def boot(client):
    res = await client.cp.call(call.BootNotification(
        charging_station={"model": "Station 2", "vendor_name": "Acme", "serial_number": "S-2",
                          "firmware_version": "2.0"}, reason="PowerUp"))
    await wait_for(lambda: len(client.cp.got) >= 2, TIMEOUT, "the fail-safe profiles")
    return res


async def test_a_2_0_1_station_gets_its_fail_safe_and_limits_and_reports_its_session(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client("2.0.1")
    cp = client.cp
    res = await boot(client)
    assert (res.status, res.interval) == ("Accepted", site.spec.heartbeat_s)
    top, safe = cp.got[:2]
    assert (top.purpose, top.where, top.stack, top.kind, top.limit, top.duration) == (
        "ChargingStationMaxProfile", 0, 0, "Absolute", 32.0, None)
    assert (safe.purpose, safe.where, safe.stack, safe.limit, safe.duration) == (
        "TxDefaultProfile", 0, 0, 6.0, None)
    d = charger.describe()
    assert (d["protocol"], d["vendor"], d["model"], d["serial"], d["firmware"]) == (
        "ocpp2.0.1", "Acme", "Station 2", "S-2", "2.0")
    assert cp.configured == {"SampledDataCtrlr.TxUpdatedInterval": "10"}

    await cp.call(call.StatusNotification(timestamp=now_iso(), connector_status="Occupied",
                                          evse_id=1, connector_id=1))
    assert status_of((await charger.poll()).values) == "Preparing"
    t0 = time.time()
    await cp.call(event("Started", 0, "EVConnected",
                        [sample(5.0, "Energy.Active.Import.Register", "kWh",
                                context="Transaction.Begin")],
                        evse={"id": 1, "connector_id": 1}, id_token={"id_token": "T",
                                                                     "type": "ISO14443"}))
    v = (await charger.poll()).values
    assert (v["charging"], v["connected"], status_of(v)) == (1.0, 1.0, "Preparing")
    assert v["session_start_s"] == pytest.approx(t0, abs=5) and v["session"] != 0

    await cp.call(event("Updated", 1, "Charging", [
        sample(11000.0, "Power.Active.Import", "W"),
        sample(16.0, "Current.Import", "A", "L1"), sample(15.9, "Current.Import", "A", "L2"),
        sample(16.1, "Current.Import", "A", "L3"),
        sample(7.0, "Energy.Active.Import.Register", "Wh", multiplier=3),  # 7 kWh
        sample(40.0, "SoC", "Percent")]))
    v = (await charger.poll()).values
    assert v["power_kw"] == pytest.approx(11.0)
    assert (v["l1_a"], v["l2_a"], v["l3_a"], v["current_a"]) == pytest.approx(
        (16.0, 15.9, 16.1, 16.1))
    assert (v["energy_kwh"], v["session_kwh"], v["soc_pct"]) == pytest.approx((7.0, 2.0, 40))
    assert status_of(v) == "Charging"

    await charger.write_current(16, 120)
    await wait_for(lambda: cp.control(), TIMEOUT, "the limit")
    got = cp.control()[-1]
    assert (got.purpose, got.where, got.stack, got.kind, got.limit, got.tx) == (
        "TxDefaultProfile", 0, 5, "Absolute", 16.0, None)  # 5: its ProfileStackLevel
    start = datetime.fromisoformat(got.start).timestamp()
    assert start == pytest.approx(time.time() - 60, abs=5)
    assert start + got.duration == pytest.approx(time.time() + 120, abs=5)
    await wait_for(lambda: charger.settled, TIMEOUT, "the writer to settle")
    assert (await charger.poll()).values["offered_a"] == 16.0

    await cp.call(event("Updated", 2, "SuspendedEV"))
    assert status_of((await charger.poll()).values) == "SuspendedEV"
    await cp.call(event("Ended", 3, "EVConnected",
                        [sample(7.5, "Energy.Active.Import.Register", "kWh",
                                context="Transaction.End")], ))
    v = (await charger.poll()).values
    assert (v["charging"], v["session"], v["session_kwh"], v["power_kw"]) == (0, 0, 0, 0)
    assert (v["connected"], v["energy_kwh"], status_of(v)) == (1.0, 7.5, "Finishing")
    await cp.call(call.StatusNotification(timestamp=now_iso(), connector_status="Available",
                                          evse_id=1, connector_id=1))
    v = (await charger.poll()).values
    assert (v["connected"], status_of(v)) == (0.0, "Available")


async def test_a_2_0_1_station_refusing_tx_default_gets_tx_profile_for_its_transaction(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client("2.0.1", stack_level=None)
    cp = client.cp
    cp.answer = lambda got: "Rejected" if got.purpose == "TxDefaultProfile" and got.stack else (
        "Accepted")
    await boot(client)
    await cp.call(event("Started", 0, "Charging", evse={"id": 2, "connector_id": 1}))
    await charger.write_current(20, 300)
    await wait_for(lambda: any(g.purpose == "TxProfile" for g in cp.got), TIMEOUT,
                   "the TxProfile")
    tx = cp.control()[-1]
    assert (tx.purpose, tx.where, tx.tx, tx.stack, tx.limit) == ("TxProfile", 2, "TX-7", 1,
                                                                 20.0)


async def test_a_station_without_power_measurand_gets_power_from_its_currents(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client("2.0.1")
    await boot(client)
    await client.cp.call(event("Started", 0, "Charging", [
        sample(8.0, "Current.Import", "A")], evse={"id": 1}))  # no phase: each phase
    v = (await charger.poll()).values
    assert (v["l1_a"], v["l2_a"], v["l3_a"]) == (8.0, 8.0, 8.0)
    assert v["power_kw"] == pytest.approx(3 * 8 * 230 / 1000)

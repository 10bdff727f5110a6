"""The CSMS with a real OCPP 1.6J charge point over a real WebSocket: boot, the fail-safe
profiles, a transaction with meter values, and the current limit as TxDefaultProfile with
its deadband, minimum interval for raises, immediate cuts and pause; the TxProfile fallback
for a charger that refuses TxDefaultProfile."""

from __future__ import annotations

import math
import time
from datetime import datetime

import pytest
from conftest import wait_for
from ocpp.v16 import call
from ocpp_clients import Site, now_iso

from drivers.base import CHARGER_STATUS, DeviceError, EvCharger

TIMEOUT = 10.0


@pytest.fixture
async def site():
    s = Site()
    yield s
    await s.close()


def meter_values(tx_id: int, *, kw="7.36", amps=("10.7", "10.6", "10.8"), kwh="12.5",
                 soc="55") -> call.MeterValues:
    sampled = [{"value": kw, "measurand": "Power.Active.Import", "unit": "kW"}]
    sampled += [{"value": a, "measurand": "Current.Import", "phase": p, "unit": "A"}
                for a, p in zip(amps, ("L1", "L2", "L3"), strict=True)]
    sampled += [{"value": kwh, "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                {"value": soc, "measurand": "SoC", "unit": "Percent", "location": "EV"}]
    return call.MeterValues(connector_id=1, transaction_id=tx_id,
                            meter_value=[{"timestamp": now_iso(), "sampled_value": sampled}])


async def boot(client, site_charger=None):
    res = await client.cp.call(call.BootNotification(charge_point_model="Wallbox X",
                                                     charge_point_vendor="Acme",
                                                     charge_point_serial_number="S-1",
                                                     firmware_version="1.2.3"))
    await wait_for(lambda: len(client.cp.got) >= 2, TIMEOUT, "the fail-safe profiles")
    return res


async def start_session(client) -> int:
    cp = client.cp
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                          status="Preparing"))
    started = await cp.call(call.StartTransaction(connector_id=1, id_tag="TAG1",
                                                  meter_start=10_000, timestamp=now_iso()))
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                          status="Charging"))
    return started.transaction_id


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


async def test_boot_is_accepted_with_the_heartbeat_and_gets_the_fail_safe_profiles(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client()
    res = await boot(client)
    assert res.status == "Accepted" and res.interval == site.spec.heartbeat_s
    assert abs(seconds(res.current_time) - time.time()) < 60
    top, safe = client.cp.got[:2]
    assert (top.purpose, top.where, top.stack, top.kind, top.limit, top.duration) == (
        "ChargePointMaxProfile", 0, 0, "Absolute", 32.0, None)
    assert (safe.purpose, safe.where, safe.stack, safe.limit, safe.duration) == (
        "TxDefaultProfile", 0, 0, 6.0, None)
    d = charger.describe()
    assert (d["protocol"], d["vendor"], d["model"], d["serial"], d["firmware"]) == (
        "ocpp1.6", "Acme", "Wallbox X", "S-1", "1.2.3")
    assert d["stack_level"] == 3  # the test charge point says ChargeProfileMaxStackLevel 3
    assert client.cp.configured == {"MeterValueSampleInterval": "10"}


async def test_transaction_and_meter_values_make_the_reading(site):
    charger = site.charger()
    assert isinstance(charger, EvCharger)
    await charger.connect()
    client = await site.client()
    await boot(client)
    before = await charger.poll()
    assert before.values["charging"] == 0.0 and before.values["session"] == 0.0
    t0 = time.time()
    tx_id = await start_session(client)
    await client.cp.call(meter_values(tx_id))
    v = (await charger.poll()).values
    assert v["power_kw"] == pytest.approx(7.36)
    assert (v["l1_a"], v["l2_a"], v["l3_a"], v["current_a"]) == pytest.approx(
        (10.7, 10.6, 10.8, 10.8))
    assert v["energy_kwh"] == pytest.approx(12.5)
    assert v["soc_pct"] == pytest.approx(55.0)
    assert v["session_kwh"] == pytest.approx(2.5)  # 12.5 kWh now, 10 000 Wh at its start
    assert v["session_start_s"] == pytest.approx(t0, abs=5)
    assert v["session"] != 0.0
    assert (v["connected"], v["charging"]) == (1.0, 1.0)
    assert CHARGER_STATUS[int(v["status"])] == "Charging"
    assert math.isnan(v["offered_a"])  # no limit of ours yet

    await client.cp.call(call.StopTransaction(meter_stop=13_000, timestamp=now_iso(),
                                              transaction_id=tx_id))
    await client.cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                                 status="Finishing"))
    v = (await charger.poll()).values
    assert (v["charging"], v["session"], v["session_kwh"], v["power_kw"]) == (0, 0, 0, 0)
    assert v["connected"] == 1.0 and v["energy_kwh"] == pytest.approx(13.0)
    assert CHARGER_STATUS[int(v["status"])] == "Finishing"


async def test_power_comes_from_the_currents_when_the_charger_sends_none(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client()
    await boot(client)
    tx_id = await start_session(client)
    sampled = [{"value": "10", "measurand": "Current.Import", "phase": p} for p in
               ("L1", "L2", "L3")]
    await client.cp.call(call.MeterValues(connector_id=1, transaction_id=tx_id, meter_value=[
        {"timestamp": now_iso(), "sampled_value": sampled}]))
    v = (await charger.poll()).values
    assert v["power_kw"] == pytest.approx(3 * 10 * 230 / 1000)


async def test_currents_come_from_the_power_when_the_charger_sends_only_power(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client()
    await boot(client)
    tx_id = await start_session(client)
    await client.cp.call(call.MeterValues(connector_id=1, transaction_id=tx_id, meter_value=[
        {"timestamp": now_iso(), "sampled_value": [
            {"value": "6900", "measurand": "Power.Active.Import", "unit": "W"}]}]))
    v = (await charger.poll()).values
    assert (v["l1_a"], v["l2_a"], v["l3_a"]) == pytest.approx((10.0, 10.0, 10.0))
    assert v["power_kw"] == pytest.approx(6.9)


async def test_limits_go_as_tx_default_profile_with_deadband_min_interval_cuts_and_pause(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client()
    cp = client.cp
    await boot(client)
    tx_id = await start_session(client)
    await cp.call(meter_values(tx_id))

    await charger.write_current(16, 300)
    await wait_for(lambda: cp.control(), TIMEOUT, "the first limit")
    first = cp.control()[-1]
    assert (first.purpose, first.where, first.stack, first.kind, first.limit) == (
        "TxDefaultProfile", 0, 3, "Absolute", 16.0)
    start = seconds(first.start)
    assert start == pytest.approx(time.time() - 60, abs=5)  # a minute in the past
    assert start + first.duration == pytest.approx(time.time() + 300, abs=5)  # lapses in 300 s
    await wait_for(lambda: charger.settled, TIMEOUT, "the writer to settle")
    assert (await charger.poll()).values["offered_a"] == 16.0

    await charger.write_current(10, 300)  # a cut: goes at once
    await wait_for(lambda: cp.control()[-1].limit == 10.0, TIMEOUT, "the cut to 10 A")
    cut = cp.control()[-1]

    await charger.write_current(10.5, 300)  # within the 1 A deadband: not sent
    await wait_for(lambda: charger.settled, TIMEOUT, "the writer to settle")
    assert [g.limit for g in cp.control()] == [16.0, 10.0]

    await charger.write_current(16, 300)  # a raise: not before min_interval_s after the cut
    await wait_for(lambda: cp.control()[-1].limit == 16.0, TIMEOUT, "the raise to 16 A")
    assert cp.control()[-1].at - cut.at >= site.spec.min_interval_s

    await charger.write_current(0, 300)  # pause: a cut, goes at once
    await wait_for(lambda: cp.control()[-1].limit == 0.0, TIMEOUT, "the pause")
    await charger.write_current(0.5, 300)  # within the deadband, but a resume: it goes
    await wait_for(lambda: cp.control()[-1].limit == 0.5, TIMEOUT, "the resume")
    await charger.write_current(99, 300)  # clamped to the charger's max
    await wait_for(lambda: cp.control()[-1].limit == 32.0, TIMEOUT, "the clamped raise")
    await wait_for(lambda: charger.settled, TIMEOUT, "the writer to settle")
    assert (await charger.poll()).values["offered_a"] == 32.0


async def test_a_limit_is_refreshed_before_it_lapses(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client()
    await boot(client)
    await charger.write_current(16, 2)  # lapses in 2 s: re-sent after about 1 s
    await wait_for(lambda: len(client.cp.control()) >= 3, TIMEOUT, "two refreshes")
    assert {(g.limit, g.duration) for g in client.cp.control()} == {(16.0, 62)}


async def test_a_charger_refusing_tx_default_gets_tx_profile_with_its_transaction(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client(stack_level=None)  # does not say: stack level 1
    cp = client.cp
    cp.answer = lambda got: "Rejected" if got.purpose == "TxDefaultProfile" and got.stack else (
        "Accepted")
    await boot(client)
    tx_id = await start_session(client)
    await charger.write_current(16, 300)
    await wait_for(lambda: any(g.purpose == "TxProfile" for g in cp.got), TIMEOUT,
                   "the TxProfile")
    tried, tx = cp.control()[-2:]
    assert (tried.purpose, tried.stack) == ("TxDefaultProfile", 1)
    assert (tx.purpose, tx.where, tx.tx, tx.stack, tx.limit) == ("TxProfile", 1, tx_id, 1, 16)
    await wait_for(lambda: charger.settled, TIMEOUT, "the writer to settle")
    await charger.write_current(8, 300)  # from now on straight to TxProfile
    await wait_for(lambda: cp.control()[-1].limit == 8.0, TIMEOUT, "the cut")
    await wait_for(lambda: charger.settled, TIMEOUT, "the writer to settle")
    assert cp.control()[-1].purpose == "TxProfile"
    assert sum(g.purpose == "TxDefaultProfile" for g in cp.control()) == 1
    assert charger.describe()["limit_profile"] == "TxProfile"
    assert (await charger.poll()).values["offered_a"] == 8.0


async def test_poll_raises_when_the_charger_is_not_connected(site):
    charger = site.charger()
    await charger.connect()
    with pytest.raises(DeviceError, match="not connected"):
        await charger.poll()
    client = await site.client()
    await boot(client)
    await charger.poll()
    await client.close()
    await wait_for(lambda: not charger.connected, TIMEOUT, "the disconnect")
    with pytest.raises(DeviceError, match="not connected"):
        await charger.poll()


async def test_poll_raises_when_a_connected_charger_went_silent(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client()
    await boot(client)
    await charger.poll()
    charger.station.last_seen -= 2 * site.spec.heartbeat_s + 11  # as if silent that long
    with pytest.raises(DeviceError, match="silent"):
        await charger.poll()
    await client.cp.call(call.Heartbeat())
    await charger.poll()


async def test_times_told_to_the_charger_follow_the_sites_clock(site):
    """Under the HIL both sides run on simulated time: a schedule stamped with the wall
    clock would start months away from the simulated charger's now."""
    from datetime import UTC

    simulated = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    charger = site.charger(now=lambda: simulated)
    await charger.connect()
    client = await site.client()
    res = await boot(client)
    assert seconds(res.current_time) == simulated.timestamp()
    await start_session(client)
    await charger.write_current(16.0, 300)
    await wait_for(lambda: len(client.cp.got) >= 3, TIMEOUT, "the limit")
    assert seconds(client.cp.got[2].start) == simulated.timestamp() - 60

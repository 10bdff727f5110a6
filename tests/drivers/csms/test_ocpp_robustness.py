"""What a charger cannot break: frames that are not OCPP and actions we do not handle get
a CallError and the session goes on (logged once per kind, not per frame); absurd meter
values never reach the reading; a reply that arrives after its CALL timed out is not taken
as the answer to the next CALL."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import websockets
from conftest import wait_for
from ocpp.v16 import call
from ocpp_clients import Site, now_iso

TIMEOUT = 10.0


@pytest.fixture
async def site():
    s = Site()
    yield s
    await s.close()


async def exchange(ws, frame: object) -> list:
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def test_bad_frames_and_unknown_actions_get_a_call_error_and_the_session_goes_on(
        site, caplog):
    charger = site.charger()
    await charger.connect()
    ws = await websockets.connect(f"ws://127.0.0.1:{site.port}/CP1", subprotocols=["ocpp1.6"])
    for _ in range(3):
        assert (await exchange(ws, "this is not json"))[:3] == [4, "-1", "FormationViolation"]
    assert (await exchange(ws, [2, "a1"]))[:3] == [4, "a1", "ProtocolError"]
    assert (await exchange(ws, [9, "a2", "X", {}]))[:2] == [4, "-1"]
    for i in range(3):
        assert (await exchange(ws, [2, f"b{i}", "NoSuchAction", {}]))[:3] == [
            4, f"b{i}", "NotSupported"]
    assert (await exchange(ws, [2, "c1", "Reset", {"type": "Hard"}]))[:3] == [
        4, "c1", "NotImplemented"]  # a 1.6 action, but one a charge point answers
    bad = await exchange(ws, [2, "d1", "Heartbeat", {"bogus": 1}])
    assert bad[:2] == [4, "d1"] and bad[2] in ("FormatViolation", "FormationViolation")
    bad = await exchange(ws, [2, "d2", "StatusNotification", {"connectorId": "one"}])
    assert bad[:2] == [4, "d2"]
    ok = await exchange(ws, [2, "e1", "Heartbeat", {}])
    assert ok[:2] == [3, "e1"] and "currentTime" in ok[2]
    await charger.poll()  # still connected, still fresh
    await ws.close()

    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("unreadable frame" in m for m in lines) == 1, lines
    assert sum("NoSuchAction" in m for m in lines) <= 1, lines
    assert len(lines) <= 4, lines  # one per kind of fault, not one per frame


async def test_a_2_0_1_station_s_bad_frame_is_a_format_violation_and_it_goes_on(site):
    await site.charger().connect()
    ws = await websockets.connect(f"ws://127.0.0.1:{site.port}/CP1",
                                  subprotocols=["ocpp2.0.1"])
    assert (await exchange(ws, "{not json"))[:3] == [4, "-1", "FormatViolation"]
    assert (await exchange(ws, [2, "x1", "Heartbeat", {}]))[:2] == [3, "x1"]
    await ws.close()


async def test_absurd_meter_values_never_reach_the_reading(site, caplog):
    charger = site.charger()
    await charger.connect()
    client = await site.client()
    cp = client.cp
    await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
    started = await cp.call(call.StartTransaction(connector_id=1, id_tag="T", meter_start=0,
                                                  timestamp=now_iso()))

    def values(*sampled: tuple) -> call.MeterValues:
        return call.MeterValues(
            connector_id=1, transaction_id=started.transaction_id, meter_value=[
                {"timestamp": now_iso(), "sampled_value": [
                    {"value": v, "measurand": m, **({"phase": p} if p else {}),
                     **({"unit": u} if u else {})} for v, m, p, u in sampled]}])

    await cp.call(values(("7000", "Power.Active.Import", None, "W"),
                         ("10", "Current.Import", "L1", "A"),
                         ("5000", "Energy.Active.Import.Register", None, "Wh"),
                         ("50", "SoC", None, "Percent")))
    good = (await charger.poll()).values
    for _ in range(2):
        await cp.call(values(("-7000", "Power.Active.Import", None, "W"),
                             ("NaN", "Current.Import", "L1", "A"),
                             ("-3", "Current.Import", "L2", "A"),
                             ("-1", "Energy.Active.Import.Register", None, "kWh"),
                             ("150", "SoC", None, "Percent"),
                             ("not a number", "Current.Import", "L3", "A")))
        await cp.call(values(("1e9", "Power.Active.Import", None, "W"),
                             ("221", "Power.Active.Import", None, "kW"),  # > 10 x 22 kW
                             ("inf", "Energy.Active.Import.Register", None, "Wh"),
                             ("5000", "Current.Import", "L1", "A")))
    assert (await charger.poll()).values == pytest.approx(good, nan_ok=True)
    ignored = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1, [r.getMessage() for r in ignored]  # not one per value

    await cp.call(values(("7.5", "Power.Active.Import", None, "kW")))  # sane again
    assert (await charger.poll()).values["power_kw"] == pytest.approx(7.5)


async def test_a_late_reply_is_not_taken_as_the_answer_to_the_next_call(site, caplog):
    charger = site.charger(response_timeout_s=1.0, retry_s=0.1)
    await charger.connect()
    client = await site.client()
    cp = client.cp
    answers = []

    async def slow_first_then_accept(got):
        if got.stack == 0:
            return "Accepted"  # the fail-safe profiles
        if not answers:
            answers.append("late")
            await asyncio.sleep(1.5)  # past the CSMS's 1 s: its CALL has timed out
            return "Rejected"  # taken as the next call's answer, it would switch profiles
        answers.append("on time")
        return "Accepted"

    cp.answer = slow_first_then_accept
    await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
    await wait_for(lambda: len(cp.got) >= 2, TIMEOUT, "the fail-safe profiles")
    await charger.write_current(16, 300)
    await wait_for(lambda: charger.station.offered_a == 16.0, TIMEOUT, "16 A in force")
    assert answers[0] == "late" and len(cp.control()) >= 2  # timed out, sent again
    assert not charger.station.tx_profiles  # the late "Rejected" was not the 2nd's answer
    assert all(g.purpose == "TxDefaultProfile" for g in cp.control())
    await charger.write_current(10, 300)
    await wait_for(lambda: cp.control()[-1].limit == 10.0, TIMEOUT, "the next limit")
    await wait_for(lambda: charger.station.offered_a == 10.0, TIMEOUT, "10 A in force")
    stale = [r for r in caplog.records if "unknown unique id" in r.getMessage()]
    assert len(stale) == 1

"""Who may connect to the CSMS and what happens to connections: unknown ids and foreign
subprotocols refused (logged once), a second socket for the same id replacing the first, a
reconnect mid-session finding its state and getting the latest limit again, the server's
life from the first connect to the last close, and the registry sharing one CSMS."""

from __future__ import annotations

import logging
import socket

import pytest
import websockets
from conftest import accepts, wait_for
from ocpp.v16 import call
from ocpp_clients import Site, now_iso
from websockets.exceptions import InvalidStatus

from drivers.base import DeviceError
from drivers.ocpp import Csms, OcppCharger
from drivers.ocpp import charger as ocpp_charger
from drivers.registry import build_device
from drivers.spec import DeviceSpec

TIMEOUT = 10.0


@pytest.fixture
async def site():
    s = Site()
    yield s
    await s.close()


async def boot(client) -> None:
    await client.cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
    await wait_for(lambda: len(client.cp.got) >= 2, TIMEOUT, "the fail-safe profiles")


def refusals(caplog, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "drivers.ocpp.csms" and what in r.message]


async def test_an_unknown_charge_point_id_is_refused_and_logged_once(site, caplog):
    await site.charger().connect()
    for _ in range(3):
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{site.port}/STRANGER",
                                     subprotocols=["ocpp1.6"])
        assert refused.value.response.status_code == 404
    assert len(refusals(caplog, "'STRANGER'")) == 1
    client = await site.client()  # the configured one still gets in
    await boot(client)


async def test_a_charger_speaking_no_ocpp_version_of_ours_is_refused(site, caplog):
    await site.charger().connect()
    for offered in (["ocpp1.5"], None):
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{site.port}/CP1", subprotocols=offered)
        assert refused.value.response.status_code == 400
    assert len(refusals(caplog, "subprotocols")) == 1


async def test_the_charger_s_preferred_version_is_chosen(site):
    charger = site.charger()
    await charger.connect()
    ws = await websockets.connect(f"ws://127.0.0.1:{site.port}/CP1",
                                  subprotocols=["ocpp1.6", "ocpp2.0.1"])
    assert ws.subprotocol == "ocpp1.6"
    await ws.close()
    ws = await websockets.connect(f"ws://127.0.0.1:{site.port}/ocpp/CP1",
                                  subprotocols=["ocpp2.0.1", "ocpp1.6"])
    assert ws.subprotocol == "ocpp2.0.1"  # and a longer path still finds the charger
    await ws.close()


async def test_a_second_socket_for_the_same_id_replaces_the_first(site):
    charger = site.charger()
    await charger.connect()
    first = await site.client()
    await boot(first)
    second = await site.client()
    await wait_for(lambda: first.closed, TIMEOUT, "the first socket to be dropped")
    assert first.ws.close_code == 1008
    await second.cp.call(call.Heartbeat())
    await charger.poll()
    await charger.write_current(12, 300)
    await wait_for(lambda: second.cp.control(), TIMEOUT, "the limit on the new socket")
    assert first.cp.control() == []


async def test_a_reconnect_mid_session_keeps_the_session_and_gets_the_latest_limit(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client()
    await boot(client)
    started = await client.cp.call(call.StartTransaction(
        connector_id=1, id_tag="T", meter_start=1000, timestamp=now_iso()))
    await client.cp.call(call.MeterValues(
        connector_id=1, transaction_id=started.transaction_id, meter_value=[
            {"timestamp": now_iso(), "sampled_value": [
                {"value": "3.5", "measurand": "Power.Active.Import", "unit": "kW"},
                {"value": "3000", "measurand": "Energy.Active.Import.Register"}]}]))
    await charger.write_current(16, 300)
    await wait_for(lambda: client.cp.control(), TIMEOUT, "the limit")
    before = (await charger.poll()).values
    await charger.write_current(13, 300)  # wanted while it is gone
    await client.close()
    await wait_for(lambda: not charger.connected, TIMEOUT, "the disconnect")
    with pytest.raises(DeviceError):
        await charger.poll()

    again = await site.client()  # no BootNotification: it was accepted before
    await wait_for(lambda: again.cp.control(), TIMEOUT, "the limit on the new socket")
    assert again.cp.control()[-1].limit == 13.0
    after = (await charger.poll()).values
    for key in ("charging", "session", "session_start_s", "session_kwh", "power_kw"):
        assert after[key] == before[key], key
    assert after["session_kwh"] == pytest.approx(2.0)
    await again.cp.call(call.StopTransaction(meter_stop=4000, timestamp=now_iso(),
                                             transaction_id=started.transaction_id))
    assert (await charger.poll()).values["charging"] == 0.0


async def test_a_rebooted_charger_gets_its_fail_safe_and_the_latest_limit_again(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client()
    await boot(client)
    await charger.write_current(16, 300)
    await wait_for(lambda: client.cp.control(), TIMEOUT, "the limit")
    client.cp.got.clear()
    await boot(client)  # it restarted: what it had may be gone
    await wait_for(lambda: client.cp.control(), TIMEOUT, "the limit again")
    assert [g.purpose for g in client.cp.got] == [
        "ChargePointMaxProfile", "TxDefaultProfile", "TxDefaultProfile"]
    assert client.cp.control()[-1].limit == 16.0


async def test_a_csms_that_cannot_listen_is_retried_from_poll(site, monkeypatch):
    monkeypatch.setattr(ocpp_charger, "RESTART_S", 0.0)
    charger = site.charger()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", site.port))
        squatter.listen()
        with pytest.raises(OSError):
            await charger.connect()
        with pytest.raises(DeviceError, match="cannot listen"):
            await charger.poll()
    with pytest.raises(DeviceError, match="not connected"):
        await charger.poll()  # listening now
    client = await site.client()
    await boot(client)
    await charger.poll()


async def test_the_csms_runs_from_the_first_connect_to_the_last_close(site):
    one, two = site.charger("ev1"), site.charger("ev2", cp_id="CP2")
    assert not accepts("127.0.0.1", site.port)
    await one.connect()
    await two.connect()
    await one.connect()  # idempotent
    assert site.csms.serving and accepts("127.0.0.1", site.port)
    await one.close()
    assert accepts("127.0.0.1", site.port)
    with pytest.raises(InvalidStatus):  # a closed driver's charger is a stranger now
        await websockets.connect(f"ws://127.0.0.1:{site.port}/CP1", subprotocols=["ocpp1.6"])
    client = await site.client(cp_id="CP2")
    await client.cp.call(call.Heartbeat())
    await two.close()
    assert not site.csms.serving and not accepts("127.0.0.1", site.port)
    await wait_for(lambda: client.closed, TIMEOUT, "the charger's socket to close")


async def test_closing_the_driver_clears_our_limit_so_the_fail_safe_applies(site):
    charger = site.charger()
    await charger.connect()
    client = await site.client()
    await boot(client)
    await charger.write_current(16, 300)
    await wait_for(lambda: client.cp.control(), TIMEOUT, "the limit")
    await charger.close()
    assert client.cp.cleared == [client.cp.control()[-1].profile_id]
    await wait_for(lambda: client.closed, TIMEOUT, "the socket to close")


async def test_chargers_on_one_listen_address_share_one_csms(site):
    endpoints: dict = {}

    def spec(dev_id: str, cp_id: str, port: int) -> DeviceSpec:
        from dataclasses import replace
        return DeviceSpec(id=dev_id, role="ev_charger", protocol="ocpp", host=None, port=None,
                          serial=None, unit_id=0, map=None, address=None, timeout_s=1.0,
                          ocpp=replace(site.spec, charge_point_id=cp_id, listen_port=port))

    a = build_device(spec("ev1", "A", site.port), endpoints)
    b = build_device(spec("ev2", "B", site.port), endpoints)
    c = build_device(spec("ev3", "C", site.port + 1), endpoints)
    assert isinstance(a, OcppCharger) and a.csms is b.csms and a.csms is not c.csms
    assert isinstance(a.csms, Csms) and len(endpoints) == 2
    with pytest.raises(ValueError, match="EV chargers"):
        build_device(DeviceSpec(id="x", role="meter", protocol="ocpp", host=None, port=None,
                                serial=None, unit_id=0, map=None, address=None,
                                timeout_s=1.0), endpoints)

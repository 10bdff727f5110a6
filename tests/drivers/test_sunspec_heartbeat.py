"""Controller heartbeats (802 CtrlHb here) go out without holding up the poll that sends
them, and only once the poll round is over: the next poll waits for them and fails if they
failed, so a device whose beats are refused still goes stale, while setpoint writes are not
held up by a failed beat.

Over real sockets: the HIL behind the Modbus proxy of test_sunspec_driver, which holds or
refuses requests."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from test_sunspec_driver import NOON, drivers_on, proxy, site  # noqa: F401 (fixtures)

from drivers.modbus.endpoint import Endpoint, ModbusExceptionReply
from drivers.sunspec import models as sunspec
from drivers.sunspec.roles import SunSpecBattery, SunSpecMeter, SunSpecPv
from edge.app.clock import Clock
from edge.image.poll import Poller

SLAVE_FAILURE = 4
READ, WRITE = 0x03, 0x10


def beat_address(dev) -> int:  # type: ignore[no-untyped-def]
    return dev.sunspec.models[802] + sunspec.model(802).point("CtrlHb").offset


async def poll_and_send(dev):  # type: ignore[no-untyped-def]
    """One poll, then what the poller does once the round is over."""
    reading = await dev.poll()
    dev.send_deferred()
    return reading


async def connected_battery(proxy):  # type: ignore[no-untyped-def]  # noqa: F811
    """The battery driver after one poll whose beat has landed."""
    _, devices = drivers_on(proxy.port, timeout_s=5.0)
    bess = devices["bess1"]
    await bess.poll()
    await bess.heartbeats_sent()
    assert bess.describe()["heartbeats"] == ["802.CtrlHb"]
    return bess


def refuse_beats(proxy, bess, times: int) -> list[int]:  # type: ignore[no-untyped-def]  # noqa: F811
    """The next `times` heartbeat writes are answered SLAVE DEVICE FAILURE; the list counts them."""
    refused: list[int] = []

    async def on_request(unit: int, fc: int, address: int) -> int | None:
        if fc == WRITE and address == beat_address(bess) and len(refused) < times:
            refused.append(address)
            return SLAVE_FAILURE
        return None

    proxy.on_request = on_request
    return refused


async def test_a_poll_returns_while_its_heartbeat_write_is_unanswered(site, proxy):  # noqa: F811
    bess = await connected_battery(proxy)
    release, held = asyncio.Event(), asyncio.Event()

    async def hold(unit: int, fc: int, address: int) -> None:
        if fc == WRITE and address == beat_address(bess):
            held.set()
            await release.wait()

    proxy.on_request = hold
    before = site.devices["bess1"].rw[802]["CtrlHb"]
    # The write stays unanswered until released (the endpoint's timeout is 5 s): a poll that
    # waited for its beat would not return.
    reading = await asyncio.wait_for(poll_and_send(bess), 3.0)
    assert reading.values["soc_pct"] == pytest.approx(50.0, abs=1.0)
    await asyncio.wait_for(held.wait(), 3.0)  # the beat is on the wire, held
    assert site.devices["bess1"].rw[802]["CtrlHb"] == before
    release.set()
    await bess.poll()  # waits for the held beat, reads it back, queues the next
    await bess.heartbeats_sent()
    assert site.devices["bess1"].rw[802]["CtrlHb"] == before + 2


async def test_a_refused_heartbeat_fails_the_next_poll_not_the_one_that_sent_it(site, proxy):  # noqa: F811
    bess = await connected_battery(proxy)
    refused = refuse_beats(proxy, bess, times=1)
    await poll_and_send(bess)  # its beat is refused in the background
    with pytest.raises(ModbusExceptionReply) as err:
        await bess.poll()
    assert err.value.code == SLAVE_FAILURE and refused
    reading = await bess.poll()  # the device takes beats again: polls go on
    await bess.heartbeats_sent()
    assert reading.values["soc_pct"] == pytest.approx(50.0, abs=1.0)


async def test_a_setpoint_write_goes_out_while_a_refused_heartbeat_is_pending(site, proxy):  # noqa: F811
    bess = await connected_battery(proxy)
    beat = site.devices["bess1"].rw[802]["CtrlHb"]
    refused = refuse_beats(proxy, bess, times=1)
    await poll_and_send(bess)  # its beat will be refused
    await bess.write_power(-5.0, revert_s=60)  # neither waits for nor raises that failure
    held = site.devices["bess1"].read(124)
    assert held["StorCtl_Mod"] == 3 and held["InWRte"] > 0 and held["OutWRte"] == 0
    assert refused  # the poll's beat was refused before the write's own beat went out
    assert site.devices["bess1"].rw[802]["CtrlHb"] == beat + 1  # the write's beat landed
    with pytest.raises(ModbusExceptionReply):  # the refused beat still fails the next poll
        await bess.poll()
    await bess.poll()


async def test_heartbeats_go_out_after_the_last_read_of_the_poll_round(site, proxy):  # noqa: F811
    """Each device on its own connection; the meter's read is held a while. The battery's
    beat goes out after it: sent during the round, it would delay the replies the others
    are still waiting for."""
    cfg = site.config
    devices = {"pv1": SunSpecPv("pv1", Endpoint("127.0.0.1", proxy.port, 5.0), 1),
               "bess1": SunSpecBattery("bess1", Endpoint("127.0.0.1", proxy.port, 5.0), 2),
               "pcc": SunSpecMeter("pcc", Endpoint("127.0.0.1", proxy.port, 5.0), 3)}
    poller = Poller(cfg, devices, Clock(datetime.fromisoformat(NOON)))
    try:
        await poller.poll(period_wall_s=10.0)  # connect; beats queued and sent
        assert all(h.reading is not None for h in poller.health.values())
        await devices["bess1"].heartbeats_sent()
        hold_meter = asyncio.Event()

        async def on_request(unit: int, fc: int, address: int) -> None:
            if unit == 3 and fc == READ and not hold_meter.is_set():
                await asyncio.sleep(0.3)  # the meter answers late; the others have answered
                hold_meter.set()

        proxy.on_request = on_request
        proxy.requests.clear()
        await poller.poll(period_wall_s=10.0)
        await devices["bess1"].heartbeats_sent()
        assert all(h.failed_polls == 0 for h in poller.health.values())
        assert proxy.requests.index((3, READ)) < proxy.requests.index((2, WRITE)), proxy.requests
    finally:
        for dev in devices.values():
            await dev.close()

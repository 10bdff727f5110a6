"""Controller heartbeats (802 CtrlHb here) go out without holding up the poll that sends
them: the next poll waits for them and fails if they failed, so a device whose beats are
refused still goes stale, while setpoint writes are not held up by a failed beat.

Over real sockets: the HIL battery behind the Modbus proxy of test_sunspec_driver, which
holds or refuses the heartbeat's write."""

from __future__ import annotations

import asyncio

import pytest
from test_sunspec_driver import drivers_on, proxy, site  # noqa: F401 (fixtures)

from drivers.modbus.endpoint import ModbusExceptionReply
from drivers.sunspec import models as sunspec

SLAVE_FAILURE = 4


def beat_address(dev) -> int:  # type: ignore[no-untyped-def]
    return dev.sunspec.models[802] + sunspec.model(802).point("CtrlHb").offset


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

    async def on_write(unit: int, address: int) -> int | None:
        if address == beat_address(bess) and len(refused) < times:
            refused.append(address)
            return SLAVE_FAILURE
        return None

    proxy.on_write = on_write
    return refused


async def test_a_poll_returns_while_its_heartbeat_write_is_unanswered(site, proxy):  # noqa: F811
    bess = await connected_battery(proxy)
    release, held = asyncio.Event(), asyncio.Event()

    async def hold(unit: int, address: int) -> None:
        if address == beat_address(bess):
            held.set()
            await release.wait()

    proxy.on_write = hold
    before = site.devices["bess1"].rw[802]["CtrlHb"]
    # The write stays unanswered until released (the endpoint's timeout is 5 s): a poll that
    # waited for its beat would not return.
    reading = await asyncio.wait_for(bess.poll(), 3.0)
    assert reading.values["soc_pct"] == pytest.approx(50.0, abs=1.0)
    await asyncio.wait_for(held.wait(), 3.0)  # the beat is on the wire, held
    assert site.devices["bess1"].rw[802]["CtrlHb"] == before
    release.set()
    await bess.poll()  # waits for the held beat, reads it back, beats again
    await bess.heartbeats_sent()
    assert site.devices["bess1"].rw[802]["CtrlHb"] == before + 2


async def test_a_refused_heartbeat_fails_the_next_poll_not_the_one_that_sent_it(site, proxy):  # noqa: F811
    bess = await connected_battery(proxy)
    refused = refuse_beats(proxy, bess, times=1)
    await bess.poll()  # its beat is refused in the background
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
    await bess.poll()  # its beat will be refused
    await bess.write_power(-5.0, revert_s=60)  # neither waits for nor raises that failure
    held = site.devices["bess1"].read(124)
    assert held["StorCtl_Mod"] == 3 and held["InWRte"] > 0 and held["OutWRte"] == 0
    assert refused  # the poll's beat was refused before the write's own beat went out
    assert site.devices["bess1"].rw[802]["CtrlHb"] == beat + 1  # the write's beat landed
    with pytest.raises(ModbusExceptionReply):  # the refused beat still fails the next poll
        await bess.poll()
    await bess.poll()

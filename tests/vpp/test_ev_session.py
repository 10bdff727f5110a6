"""The `ev_session` command through the real command path: a platform on a real Mosquitto,
the daemon's MQTT link, command handler, outbox and command store, a site view holding the
last image. Accepted requests reach the decision (its `demands`), bad ones are rejected
with the reason, and an accepted one outlives a restart of the handler."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import timedelta
from pathlib import Path

import pytest
from ev_site import FULL_KW, T0, config, decide, ev, image

from edge.app.clock import Clock
from edge.app.fanout import SiteView
from edge.control.instructions import InstructionBook
from edge.control.kernel import load_kernel
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox
from edge.roles.evsession import EvRequest
from edge.vpp.cmdstore import CommandStore
from edge.vpp.commands.handler import CommandHandler
from edge.vpp.commands.judge import SEEN_MAX
from edge.vpp.schemas.commands import EvSession
from hil.emulators.platform import Platform, run_step
from hil.emulators.script import Result, ev_session_steps

LEAVES = T0 + timedelta(hours=6)


@pytest.fixture(scope="module")
def kernel():
    return load_kernel()


def site(broker):
    return config(mqtt={"host": broker.host, "port": broker.port})


@contextlib.asynccontextmanager
async def command_path(cfg, state: Path, view: SiteView, start=T0):
    """The daemon's command side: link, handler (restored from the store), outbox, on a
    clock that starts at `start`."""
    outbox = Outbox(state / "outbox.sqlite")
    link = MqttLink(cfg.mqtt, cfg.site.id, outbox, reconnect_min_s=0.2, reconnect_max_s=1.0)
    store = CommandStore(state / "commands.sqlite", SEEN_MAX)
    handler = CommandHandler(cfg, Clock(start, speed=1.0001), view, outbox, link,
                             store=store)
    handler.restore()
    handler.subscribe()
    await link.start()
    task = asyncio.create_task(handler.run())
    p = Platform(cfg.mqtt, cfg.site.id)
    try:
        await p.connect()
        await until_listening(p)
        yield handler, p
    finally:
        p.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await link.stop()
        outbox.close()
        store.close()


async def until_listening(p: Platform) -> None:
    """Probe until the handler answers (its subscription is in place): a session for a
    device the site does not have, rejected each time."""
    for n in itertools.count():
        p.send("ev_session", {"cmd_id": f"probe-{n}", "device_id": "nosuch",
                              "energy_kwh": 1.0})
        if await p.wait(lambda: bool(p.acks), 1.0):
            return
        assert n < 30, "the command handler never answered"


async def answer(p: Platform, cmd_id: str, payload, status: str) -> dict:
    p.send("ev_session", {"cmd_id": cmd_id, **payload} if isinstance(payload, dict) else payload)
    ack = await p.ack(cmd_id, status, 10)
    assert ack is not None, p.acks_for(cmd_id)
    return ack


def stamp(t):
    return t.isoformat().replace("+00:00", "Z")


async def test_an_accepted_session_reaches_the_decision_and_a_car_yet_to_come_gets_its_own(
        tmp_path, mosquitto, kernel):
    cfg = site(mosquitto)
    view = SiteView(InstructionBook())
    now_img = image(30.0 + 16 * 0.69, ev1=ev(16.0, session=3.0))
    view.image = now_img
    async with command_path(cfg, tmp_path, view) as (handler, p):
        ack = await answer(p, "s-1", {"device_id": "ev1", "departure": stamp(LEAVES),
                                      "energy_kwh": 30}, "accepted")
        assert (ack["device_id"], ack["session"], ack["energy_kwh"]) == ("ev1", 3, 30.0)
        assert ack["departure"] == "2026-06-22T10:00:00.000Z"
        done = await p.ack("s-1", "done", 10)
        assert done is not None and done["reason"] == "applied to session 3"
        req = view.book.requests["ev1"]
        assert (req.session, req.departure, req.energy_kwh) == (3.0, LEAVES, 30.0)

        d, _ = decide(cfg, kernel, now_img, view.book)
        (ev1,) = [x for x in d.demands if x.id == "ev1"]
        assert ev1.deadline == LEAVES and ev1.energy_kwh == pytest.approx(30.0)
        assert ev1.max_kw == pytest.approx(FULL_KW)

        # No car on ev2 yet: the request waits for the next one to plug in.
        ack = await answer(p, "s-2", {"device_id": "ev2", "energy_kwh": 12.5}, "accepted")
        assert ack["session"] == 0 and "departure" not in ack
        assert (await p.ack("s-2", "done", 10))["reason"] == "applied to the next session"
        later = T0 + timedelta(minutes=15)
        arrived = image(30.0, ev1=ev(16.0, session=3.0),
                        ev2=ev(0.0, session=7.0, started=T0 + timedelta(minutes=10)), ts=later)
        d, _ = decide(cfg, kernel, arrived, view.book)
        by_id = {x.id: x for x in d.demands}
        assert by_id["ev2"].energy_kwh == pytest.approx(12.5)
        assert by_id["ev1"].deadline == LEAVES  # the first request still stands
        assert not p.invalid and not p.undocumented, (p.invalid, p.undocumented)


async def test_bad_sessions_are_rejected_with_the_reason_and_change_nothing(
        tmp_path, mosquitto):
    cfg = site(mosquitto)
    view = SiteView(InstructionBook())
    view.image = image(40.0, ev1=ev(16.0), stale={"ev2"})
    ok = {"device_id": "ev1", "energy_kwh": 10}
    cases = [
        ("r-bess", {"device_id": "bess1", "energy_kwh": 10}, "is a battery, not an EV charger"),
        ("r-pcc", {"device_id": "pcc", "departure": stamp(LEAVES)}, "not an EV charger"),
        ("r-none", {"device_id": "ev9", "energy_kwh": 10}, "no device 'ev9'"),
        ("r-past", {"device_id": "ev1", "departure": stamp(T0 - timedelta(minutes=5))},
         "is not after now"),
        ("r-far", {"device_id": "ev1", "departure": stamp(T0 + timedelta(days=30))},
         "days ahead"),
        ("r-neg", {"device_id": "ev1", "energy_kwh": -5}, "energy_kwh: Input should be greater"),
        ("r-zero", {"device_id": "ev1", "energy_kwh": 0}, "energy_kwh"),
        ("r-huge", {"device_id": "ev1", "energy_kwh": 5000}, "less than or equal to 200"),
        ("r-text", {"device_id": "ev1", "energy_kwh": "10"}, "energy_kwh"),
        ("r-empty", {"device_id": "ev1"}, "give departure, energy_kwh or both"),
        ("r-nodev", {"energy_kwh": 10}, "device_id"),
        ("r-local", {"device_id": "ev1", "departure": "2026-06-22T18:00:00"}, "departure"),
        ("r-extra", {**ok, "priority": 1}, "priority"),
        ("r-stale", {"device_id": "ev2", "energy_kwh": 10}, "no good reading"),
    ]
    async with command_path(cfg, tmp_path, view) as (handler, p):
        for cmd_id, payload, why in cases:
            ack = await answer(p, cmd_id, payload, "rejected")
            assert ack["command"] == "ev_session" and why in ack["reason"], (cmd_id, ack)
        assert view.book.requests == {}
        assert handler.stats.accepted == 0
        await answer(p, "r-ok", ok, "accepted")  # the handler goes on after all of them
        assert set(view.book.requests) == {"ev1"}
        assert not p.invalid


async def test_a_session_accepted_before_a_restart_stands_after_it(tmp_path, mosquitto, kernel):
    cfg = site(mosquitto)
    img = image(40.0, ev1=ev(16.0, session=3.0))
    cmd = {"device_id": "ev1", "departure": stamp(LEAVES), "energy_kwh": 18}
    first = SiteView(InstructionBook())
    first.image = img
    async with command_path(cfg, tmp_path, first) as (_, p):
        await answer(p, "k-1", cmd, "accepted")
        assert await p.ack("k-1", "done", 10) is not None
    saved = first.book.requests["ev1"]

    # A new process ten minutes on: an empty book, the same state dir, the same car.
    later = T0 + timedelta(minutes=10)
    again = SiteView(InstructionBook())
    again.image = img = image(40.0, ev1=ev(16.0, session=3.0), ts=later)
    async with command_path(cfg, tmp_path, again, start=later) as (handler, p):
        assert again.book.requests == {"ev1": saved}
        d, _ = decide(cfg, kernel, img, again.book)
        (ev1,) = [x for x in d.demands if x.id == "ev1"]
        assert ev1.deadline == LEAVES and ev1.energy_kwh == pytest.approx(18.0)
        await answer(p, "k-1", cmd, "done")  # a re-send: answered again, not applied again
        assert handler.stats.repeated == 1 and handler.stats.accepted == 0
        assert again.book.requests["ev1"] == saved


async def test_the_platform_emulator_sets_a_session_on_a_reachable_charger(tmp_path, mosquitto):
    cfg = site(mosquitto)
    view = SiteView(InstructionBook())
    view.image = image(40.0, ev1=ev(16.0), stale={"ev2"})
    telemetry = {"ts": stamp(T0), "ev_chargers": {"ev2": {"status": "Offline"},
                                                  "ev1": {"status": "Charging"}}}
    steps = ev_session_steps(telemetry)
    assert [s.payload["device_id"] for s in steps] == ["ev1", "nosuch-{run}"]
    assert ev_session_steps({"ts": stamp(T0), "ev_chargers": {}}) == []
    result = Result()
    async with command_path(cfg, tmp_path, view) as (_, p):
        for step in steps:
            await run_step(p, step, "t1", result)
    assert result.passed, [(c.name, c.detail) for c in result.checks]
    assert isinstance(view.book.requests["ev1"], EvRequest)
    assert view.book.requests["ev1"].departure == T0 + timedelta(hours=8)


def test_the_schema_needs_a_device_and_something_to_say():
    EvSession.model_validate_json('{"cmd_id": "a", "device_id": "ev1", "energy_kwh": 7}',
                                  strict=True)
    for bad in ('{"cmd_id": "a", "device_id": "ev1"}',
                '{"cmd_id": "a", "device_id": "e/v", "energy_kwh": 7}',
                '{"cmd_id": "a", "device_id": "ev1", "energy_kwh": 200.5}'):
        with pytest.raises(ValueError):
            EvSession.model_validate_json(bad, strict=True)

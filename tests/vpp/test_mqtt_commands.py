"""Platform commands over a real Mosquitto into the real daemon controlling a HIL site.

The site: flat 40 kW load at night (no PV), one 60 kW battery at 60 % SoC, no
self-consumption, so the battery rests at 0 kW and the grid imports 40 kW unless a
command says otherwise: every kW the battery delivers is the command's doing.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from site_harness import device, running_site, site_dict

from hil.emulators.platform import Platform  # noqa: E402

SPEED = 20.0
LOAD_KW = 40.0


def night_site(tmp_path, broker_port: int, **vpp) -> dict:
    data = site_dict(tmp_path, broker_port, functions=["peak_shaving", "export_limit"])
    data["hil"]["start"] = "2026-06-22T02:00:00+08:00"
    device(data, "load")["sim"] = {"profile": "flat", "day_kw": LOAD_KW}
    device(data, "bess1")["sim"] = {"initial_soc_pct": 60}
    data["vpp"] = {"flex_s": 30, **vpp}
    data["dr"] = {"restore_s": 60}  # a cancelled event restores within 3 s of wall time
    return data


async def platform_for(run) -> Platform:
    p = Platform(run.cfg.mqtt, run.cfg.site.id)
    await p.connect()
    return p


async def settle_at(run, grid_kw: float, bess_kw: float, timeout: float = 20.0) -> None:
    """Wait until the simulated site sits at these powers (HIL truth, not telemetry)."""
    async def near() -> None:
        while not (abs(run.site.last.grid_kw - grid_kw) < 1.0
                   and abs(run.site.last.bess_kw - bess_kw) < 1.0):
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(near(), timeout)
    except TimeoutError:
        last = run.site.last
        raise AssertionError(f"site at grid {last.grid_kw:.1f} / battery {last.bess_kw:.1f} kW, "
                             f"expected {grid_kw} / {bess_kw}") from None


async def test_dispatch_is_accepted_followed_by_the_battery_and_cancel_restores(
        tmp_path, mosquitto):
    async with running_site(night_site(tmp_path, mosquitto.port), mosquitto, SPEED) as run:
        p = await platform_for(run)
        try:
            await settle_at(run, LOAD_KW, 0.0)
            cmd = {"cmd_id": "d-1", "grid_target_kw": 15, "duration_s": 3600}
            p.send("dispatch", cmd)
            ack = await p.ack("d-1", "accepted", 10)
            assert ack is not None, p.acks
            assert ack["grid_target_kw"] == 15
            await settle_at(run, 15.0, LOAD_KW - 15.0)
            assert "park:d-1" in run.daemon.cycle.decision.instructions

            p.send("dispatch", cmd)  # an exact re-send: acknowledged again, nothing new
            assert await p.wait(lambda: len(p.acks_for("d-1")) == 2, 10)
            assert [a["status"] for a in p.acks_for("d-1")] == ["accepted", "accepted"]
            assert run.daemon.commands.active == ["d-1"]

            p.send("cancel", {"cmd_id": "c-1", "target_cmd_id": "d-1"})
            done = await p.ack("d-1", "done", 10)
            assert done is not None and done["reason"] == "cancelled by c-1"
            assert await p.ack("c-1", "done", 10) is not None
            assert [a["status"] for a in p.acks_for("c-1")] == ["accepted", "done"]
            await settle_at(run, LOAD_KW, 0.0)
            assert not p.invalid, p.invalid
        finally:
            p.close()


async def test_dr_reduce_event_caps_import_above_park_dispatch_until_cancelled(tmp_path, mosquitto):
    async with running_site(night_site(tmp_path, mosquitto.port), mosquitto, SPEED) as run:
        p = await platform_for(run)
        try:
            await settle_at(run, LOAD_KW, 0.0)
            p.send("dr_event", {"cmd_id": "e-1", "event_id": "ev-1", "direction": "reduce",
                                "kw": 12, "baseline_kw": 40, "notice": "minute",
                                "duration_s": 1800})
            ack = await p.ack("e-1", "accepted", 10)
            level = 40 - 12 * run.cfg.dr.target_ratio  # the DR manager aims a little beyond
            assert ack is not None and ack["grid_max_kw"] == pytest.approx(level)
            await settle_at(run, level, 40 - level)
            # a park dispatch asking for more import cannot lift the grid operator's cap
            p.send("dispatch", {"cmd_id": "d-2", "grid_target_kw": 35, "duration_s": 80})
            assert await p.ack("d-2", "accepted", 10) is not None
            await asyncio.sleep(0.5)
            assert run.site.last.grid_kw < level + 0.5
            p.send("cancel", {"cmd_id": "c-2", "event_id": "ev-1"})
            done = await p.ack("e-1", "done", 10)
            assert done is not None and done["reason"] == "cancelled by c-2"
            await settle_at(run, 35.0, 5.0)  # the dispatch takes over
            done = await p.ack("d-2", "done", 10)  # 80 simulated s after it started
            assert done is not None and done["reason"] == "window ended"
            await settle_at(run, LOAD_KW, 0.0)
            assert run.daemon.cycle.book.get("park:d-2") is None
            assert run.daemon.commands.active == []
        finally:
            p.close()


def hostile_commands(now, start_ok) -> list[tuple[str, bytes | str | dict]]:
    """Malformed, hostile or out-of-limit commands; every one must be rejected."""
    iso = lambda t: t.isoformat()  # noqa: E731
    ok = {"grid_target_kw": 30, "duration_s": 600}
    bad_json = [b'{"cmd_id": "x",', b"not json", b"", b"\xff\xfe\x00", b"[1, 2]", b'"str"',
                b"null", b"[" * 2000 + b"]" * 2000, b'{"cmd_id": "nan-1", "grid_target_kw": NaN,'
                b' "duration_s": 60}', b'{"cmd_id": "inf-1", "grid_target_kw": Infinity, '
                b'"duration_s": 60}', b'{"cmd_id": "inf-2", "grid_target_kw": -Infinity, '
                b'"duration_s": 60}', b'{"cmd_id": "big-1", "grid_target_kw": 1e400, '
                b'"duration_s": 60}', b'{"cmd_id": "twice", "grid_target_kw": 10, '
                b'"grid_target_kw": 999, "duration_s": 60}']
    wrong_types = [
        {"cmd_id": "t-1", "grid_target_kw": "10", "duration_s": 60},
        {"cmd_id": "t-2", "grid_target_kw": True, "duration_s": 60},
        {"cmd_id": "t-3", "grid_target_kw": [10], "duration_s": 60},
        {"cmd_id": "t-4", "grid_target_kw": {"kw": 10}, "duration_s": 60},
        {"cmd_id": 1234, **ok},
        {"cmd_id": "t-6", "grid_target_kw": 10, "start": 1781000000, "duration_s": 60},
        {"cmd_id": "t-7", "grid_target_kw": 10, "duration_s": "60"},
        {"cmd_id": "t-8", "grid_target_kw": 10, "end": "2026-06-22T03:00:00", "start":
         "2026-06-22T02:00:00"},  # no UTC offset
        {"cmd_id": "t-16", "grid_target_kw": 10, "start": "1796291792", "duration_s": 60},
        {"cmd_id": "t-9", "grid_target_kw": 10},  # no end, no duration
        {"cmd_id": "t-10", "grid_target_kw": 10, "grid_delta_kw": 5, "duration_s": 60},
        {"cmd_id": "t-11", **ok, "shell": "rm -rf /"},
        {"cmd_id": "t-12", "duration_s": 60},  # nothing to do
        {"grid_target_kw": 10, "duration_s": 60},  # no cmd_id
        {"cmd_id": "t-14", "grid_target_kw": 10, "duration_s": -5},
        {"cmd_id": "t-15", "grid_min_kw": 30, "grid_max_kw": 10, "duration_s": 60},
    ]
    limits = [
        {"cmd_id": "l-1", "grid_target_kw": 500, "duration_s": 60},  # import limit 150
        {"cmd_id": "l-2", "grid_target_kw": -5, "duration_s": 60},  # zero export site
        {"cmd_id": "l-3", "grid_min_kw": 200, "duration_s": 60},
        {"cmd_id": "l-4", "grid_max_kw": -10, "duration_s": 60},
        {"cmd_id": "l-5", "grid_target_kw": 0, "duration_s": 86000},  # 955 kWh > battery
        {"cmd_id": "l-6", "grid_delta_kw": -70, "duration_s": 60},  # beyond 60 kW discharge
        {"cmd_id": "l-7", "grid_target_kw": 1e6, "duration_s": 60},
        {"cmd_id": "l-8", "grid_target_kw": 120, "duration_s": 60},  # 40 + 60 kW charge max
    ]
    windows = [
        {"cmd_id": "w-1", "grid_target_kw": 30, "start": iso(now - timedelta(hours=2)),
         "end": iso(now - timedelta(hours=1))},
        {"cmd_id": "w-2", "grid_target_kw": 30, "start": iso(now - timedelta(minutes=10)),
         "duration_s": 3600},  # stale start
        {"cmd_id": "w-3", "grid_target_kw": 30, "start": iso(now + timedelta(days=30)),
         "duration_s": 60},
        {"cmd_id": "w-4", "grid_target_kw": 30, "start": iso(start_ok), "duration_s": 10 ** 6},
        {"cmd_id": "w-5", "grid_target_kw": 30, "start": iso(start_ok),
         "end": iso(start_ok - timedelta(seconds=1))},
    ]
    injection = [
        {"cmd_id": "a/b", **ok}, {"cmd_id": "+", **ok}, {"cmd_id": "#", **ok},
        {"cmd_id": "../x", **ok}, {"cmd_id": "x\ny", **ok}, {"cmd_id": "$SYS", **ok},
        {"cmd_id": "ｄ-1", **ok}, {"cmd_id": "x" * 200, **ok}, {"cmd_id": "", **ok},
    ]
    items: list[tuple[str, bytes | str | dict]] = []
    items += [("dispatch", b) for b in bad_json]
    items += [("dispatch", d) for d in wrong_types + limits + windows + injection]
    items += [("dispatch", b'{"cmd_id": "huge", "pad": "' + b"x" * 5000 + b'"}'),
              ("dispatch", b"x" * 1_000_000)]
    items += [("shutdown", {"cmd_id": "u-1"}), ("DISPATCH", {"cmd_id": "u-2", **ok}),
              ("dispatch_now", {"cmd_id": "u-3", **ok}), ("..", {"cmd_id": "u-4"})]
    items += [("dr_event", {"cmd_id": "n-1", "event_id": "ev", "direction": "reduce", "kw": 5,
                            "notice": "minute", "duration_s": 60})]  # not allow-listed
    items += [("cancel", {"cmd_id": "k-1", "event_id": "a/../b"}),
              ("cancel", {"cmd_id": "k-2", "target_cmd_id": "never-sent"}),
              ("mode", {"cmd_id": "m-1", "mode": "turbo"}),
              ("mode", {"cmd_id": "m-2"})]
    items += [("dispatch", {"cmd_id": "dup-1", "grid_target_kw": 31, "duration_s": 600})]
    return items


@pytest.mark.timeout(120)
async def test_a_thousand_hostile_commands_are_each_rejected_and_control_goes_on(
        tmp_path, mosquitto, caplog):
    data = night_site(tmp_path, mosquitto.port, allow=["dispatch", "cancel", "mode"])
    data["control"]["import_limit_kw"] = 150  # beyond the battery's reach (40 + 60 kW)
    caplog.set_level(logging.WARNING, logger="edge.vpp.commands")
    async with running_site(data, mosquitto, SPEED) as run:
        p = await platform_for(run)
        try:
            await settle_at(run, LOAD_KW, 0.0)
            p.send("dispatch", {"cmd_id": "dup-1", "grid_target_kw": 30, "duration_s": 600})
            assert await p.ack("dup-1", "accepted", 10) is not None
            await settle_at(run, 30.0, 10.0)
            cycles = run.daemon.cycle.stats.cycles
            now = run.clock.now()
            kinds = hostile_commands(now, now + timedelta(minutes=5))
            flood = [kinds[i % len(kinds)] for i in range(1000)]
            grid: list[float] = []  # the HIL's PCC power, every 50 ms through the flood

            async def watch() -> None:
                while True:
                    grid.append(run.site.last.grid_kw)
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch())
            before = len(p.acks)
            await asyncio.to_thread(p.send_many, flood)  # off the loop the site runs on
            rejected = lambda: [a for a in p.acks[before:] if a["status"] == "rejected"]  # noqa: E731
            assert await p.wait(lambda: len(rejected()) >= 1000, 60), len(rejected())
            await asyncio.sleep(0.5)  # nothing else may follow
            answers = p.acks[before:]
            assert len(answers) == 1000
            assert all(a["status"] == "rejected" and a["reason"] for a in answers)
            reasons = [a["reason"] for a in answers]
            for expected in ("not valid JSON: NaN", "not valid JSON: key 'grid_target_kw' appears "
                             "twice", "nested too deeply", "invalid: grid_target_kw", "invalid: "
                             "cmd_id", "Extra inputs", "timezone", "payload of 1000000 bytes",
                             "'1796291792' is not an ISO 8601 time",
                             "unknown command 'shutdown'", "command dr_event is not allowed",
                             "window is over", "is more than vpp.max_ahead_s",
                             "longer than vpp.max_window_s", "past_tolerance_s",
                             "above the site import limit", "below the site export limit",
                             "kWh of discharge", "beyond what the batteries can reach",
                             "cmd_id dup-1 was already used", "nothing active"):
                assert any(expected in r for r in reasons), expected
            # Each gets its ack; the log says it once and then counts (rate-limited).
            logged = [r for r in caplog.records if r.name.startswith("edge.vpp.commands")]
            assert 1 <= len(logged) <= 3
            assert run.daemon.commands.stats.rejected == 1000
            assert run.daemon.commands.active == ["dup-1"]
            assert not p.invalid, p.invalid[:3]

            # controlling all along, and after it:
            watcher.cancel()
            assert len(grid) > 20 and max(abs(g - 30.0) for g in grid) < 1.0, grid
            assert not run.daemon.cycle.stats.crashes
            assert run.daemon.cycle.stats.cycles > cycles
            mark = len(p.acks)
            p.send("dispatch", {"cmd_id": "after", "grid_target_kw": 12, "duration_s": 600})
            assert await p.ack("after", "accepted", 10) is not None
            done = await p.ack("dup-1", "done", 10, after=mark)
            assert done is not None and done["reason"] == "superseded by after"
            await settle_at(run, 12.0, 28.0)
        finally:
            p.close()


async def test_mode_hold_holds_the_grid_and_refuses_dispatch_until_auto(tmp_path, mosquitto):
    async with running_site(night_site(tmp_path, mosquitto.port), mosquitto, SPEED) as run:
        p = await platform_for(run)
        try:
            p.send("dispatch", {"cmd_id": "h-1", "grid_target_kw": 25, "duration_s": 3600})
            assert await p.ack("h-1", "accepted", 10) is not None
            await settle_at(run, 25.0, 15.0)
            p.send("mode", {"cmd_id": "m-1", "mode": "hold"})
            ack = await p.ack("m-1", "accepted", 10)
            assert ack is not None and abs(ack["grid_target_kw"] - 25) < 1.5
            done = await p.ack("h-1", "done", 5)
            assert done is not None and "mode hold" in done["reason"]
            p.send("dispatch", {"cmd_id": "h-2", "grid_target_kw": 10, "duration_s": 600})
            rej = await p.ack("h-2", "rejected", 10)
            assert rej is not None and "mode hold" in rej["reason"]
            await asyncio.sleep(1.0)
            assert abs(run.site.last.grid_kw - ack["grid_target_kw"]) < 1.0
            p.send("mode", {"cmd_id": "m-2", "mode": "auto"})
            assert await p.ack("m-2", "done", 10) is not None
            await settle_at(run, LOAD_KW, 0.0)
            assert run.daemon.cycle.decision.instructions == ()
        finally:
            p.close()

"""The API server as a part of the daemon: off unless configured, a port in use costs the
API and not the control, a bad token file is a configuration error, a slow stream client
loses old states without holding anyone up."""

from __future__ import annotations

import asyncio
import logging
import socket
from types import SimpleNamespace

import httpx
import psutil
import pytest
import yaml
from api_helpers import AUTH, TOKEN, client, with_api
from conftest import wait_for
from site_harness import running_site, site_dict

from drivers.fileerrors import FileError
from edge import config as config_mod
from edge.api import routes
from edge.api.server import read_token
from edge.api.stream import QUEUE, Stream
from edge.app.daemon import Daemon

SPEED = 60.0


def listening() -> set[int]:
    """TCP ports this process listens on."""
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN}


@pytest.mark.parametrize("enabled", [False, True])
async def test_the_api_listens_only_when_enabled(tmp_path, mosquitto, enabled):
    data = site_dict(tmp_path, mosquitto.port)
    port = with_api(data, tmp_path)
    if not enabled:
        del data["api"]  # not configured at all: the default
    before = listening()
    async with running_site(data, mosquitto, SPEED) as run:
        await run.until_sim(run.clock.elapsed_s() + 5)
        opened = listening() - before
        assert (run.daemon.api is not None) == enabled
    assert opened == ({port} if enabled else set())


async def test_a_port_in_use_leaves_the_daemon_controlling_without_the_api(
        tmp_path, mosquitto, caplog):
    data = site_dict(tmp_path, mosquitto.port)
    port = with_api(data, tmp_path)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        with caplog.at_level(logging.ERROR, logger="edge.api.server"):
            async with running_site(data, mosquitto, SPEED) as run:
                cycles = run.daemon.cycle.stats.cycles
                await wait_for(lambda: run.daemon.cycle.stats.cycles > cycles + 20, 30,
                               "the cycle to go on")
                assert run.daemon.api.port is None
                assert run.telemetry(), "reports still go out"
    finally:
        squatter.close()
    assert any(f"cannot listen on 127.0.0.1:{port}" in r.getMessage() for r in caplog.records)


def test_a_short_or_unreadable_token_file_is_a_configuration_error(tmp_path):
    short = tmp_path / "short.token"
    short.write_text("secret\n")
    with pytest.raises(FileError) as err:
        read_token(short)
    assert err.value.source == "api.token_file" and "at least 16" in str(err.value)
    with pytest.raises(FileError) as err:
        read_token(tmp_path / "missing.token")
    assert err.value.source == "api.token_file" and "cannot read" in str(err.value)
    assert read_token(None) is None
    good = tmp_path / "good.token"
    good.write_text("  0123456789abcdef0123\n")
    assert read_token(good) == "0123456789abcdef0123"

    data = site_dict(tmp_path, 1883)
    with_api(data, tmp_path)
    data["api"]["token_file"] = str(short)
    with pytest.raises(FileError):
        Daemon(config_mod.parse(data))


async def test_a_slow_stream_client_loses_its_oldest_states_not_the_newest():
    at = {"cycle": 0}

    def build() -> dict:
        return dict(at)

    stream = Stream(build, max_clients=2)
    stream.start()
    try:
        slow, fast = stream.events(), stream.events()
        for gen in (slow, fast):
            assert await anext(gen) == "retry: 2000\n\n"
            assert "id: 0\n" in await anext(gen)  # the state at connect
        seen_fast = []
        for n in range(1, 3 * QUEUE + 1):
            at["cycle"] = n
            stream.cycle_done()
            await asyncio.sleep(0)  # the stream task offers it
            await asyncio.sleep(0)
            seen_fast.append(await anext(fast))
        assert [s.split("\n")[1] for s in seen_fast] == [
            f"id: {n}" for n in range(1, 3 * QUEUE + 1)], "a reader that keeps up gets each"
        held = [await anext(slow) for _ in range(QUEUE)]
        assert [s.split("\n")[1] for s in held] == [
            f"id: {n}" for n in range(2 * QUEUE + 1, 3 * QUEUE + 1)], "the newest are kept"
        assert stream.dropped == 2 * QUEUE
        assert stream.full()
    finally:
        await stream.stop()
    assert await anext(slow, "ended") == "ended" and await anext(fast, "ended") == "ended"
    assert stream.clients == 0


async def test_a_read_that_arrives_while_a_cycle_runs_is_answered_after_the_cycle():
    idle = asyncio.Event()  # clear: a cycle is in progress
    daemon = SimpleNamespace(cycle=SimpleNamespace(idle=idle), commands=None,
                             view=SimpleNamespace(image=None, decision=None))
    app = routes.build(SimpleNamespace(daemon=daemon, token=TOKEN))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://edge") as c:
        read = asyncio.create_task(c.get("/api/v1/state"))
        command = await c.post("/api/v1/commands/mode", headers=AUTH, content=b"{}")
        assert command.status_code == 503, "a command is not held back by the cycle"
        await asyncio.sleep(0.2)
        assert not read.done(), "answered while the cycle ran"
        idle.set()
        answer = await asyncio.wait_for(read, 10)
    assert answer.status_code == 503 and "no control cycle" in answer.json()["detail"]


async def test_too_many_streams_are_answered_503(tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port)
    port = with_api(data, tmp_path, max_connections=4)  # 2 streams at most
    async with running_site(data, mosquitto, SPEED), client(port) as c:
        async with c.stream("GET", "/api/v1/stream") as one, \
                c.stream("GET", "/api/v1/stream") as two:
            assert one.status_code == two.status_code == 200
            third = await c.get("/api/v1/stream")
            assert third.status_code == 503 and "2 streams" in third.json()["detail"]


@pytest.mark.parametrize("api", [None, {"enabled": True, "port": 8181}])
def test_check_names_the_api_only_when_it_is_enabled(tmp_path, capsys, api):
    from edge.cli import main

    data = site_dict(tmp_path, 1883)
    if api is not None:
        data["api"] = api
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["check", "-c", str(path)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("api:")]
    assert lines == ([] if api is None else [
        "api: http://127.0.0.1:8181/api/v1 and /metrics; no token_file: commands refused"])

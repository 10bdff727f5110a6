"""A `SimSite` in a child process, for tests that run a controller against it at a high
speed-up. In one event loop with the controller, a stall of a loaded machine holds the
physics and the device servers still and then lets simulated time jump ahead in one catch-up
step, expiring revert timers no real device would; in its own process the simulator keeps
its own pace. Both sides keep one simulated time: the child starts its clock, and the parent
builds the same `Clock` from the child's start and monotonic t0 (CLOCK_MONOTONIC is one
clock for all processes of a machine).

The parent talks to the child over a pipe, request and reply: `SiteProcess` offers the
`SimSite` methods and attributes tests use; exceptions raised in the child are raised in
the parent, and a child that dies raises `SiteCrashed` with the child's traceback."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import multiprocessing
import pickle
import time
import traceback
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from edge.app.clock import Clock
from edge.config import Config
from hil.config import hil_of
from hil.devices.base import Fault
from hil.site import Sample, SimSite

REPLY_TIMEOUT_S = 30.0  # a child that does not answer a request by then is hung


class SiteCrashed(RuntimeError):
    """The simulator's process died; the message carries its traceback."""


class ChildTraceback(Exception):
    """Where in the child an exception raised again in the parent came from."""


def _child(conn: Connection, config: Config, start: datetime | None, speed: float) -> None:
    """Entry point of the child process."""
    try:
        asyncio.run(_serve(conn, config, Clock(start, speed)))
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("crash", traceback.format_exc()))
        raise


async def _serve(conn: Connection, config: Config, clock: Clock) -> None:
    site = SimSite(config, clock)
    await site.start()
    requests: asyncio.Queue[tuple | None] = asyncio.Queue()

    def receive() -> None:
        try:
            requests.put_nowait(conn.recv())
        except (EOFError, OSError):  # the parent is gone
            asyncio.get_running_loop().remove_reader(conn.fileno())
            requests.put_nowait(None)

    asyncio.get_running_loop().add_reader(conn.fileno(), receive)
    conn.send(("ready", clock.start, clock.t0))
    physics = site._task  # noqa: SLF001 - its death ends the child, as in hil.site.run_hil
    answering: set[asyncio.Task[None]] = set()
    try:
        while True:
            get = asyncio.ensure_future(requests.get())
            done, _ = await asyncio.wait({get, physics}, return_when=asyncio.FIRST_COMPLETED)
            if physics in done:
                get.cancel()
                physics.result()
                raise RuntimeError("HIL physics stopped")
            request = get.result()
            if request is None or request[0] == "stop":
                break
            task = asyncio.create_task(_answer(conn, site, *request))
            answering.add(task)
            task.add_done_callback(answering.discard)
    finally:
        for task in answering:
            task.cancel()
        await site.stop()
    conn.send(("stopped",))


class _Method:
    """Stands for a device attribute that is a method: the parent calls it remotely."""


def _resolve(site: SimSite, name: str, args: tuple) -> Any:
    """What a request asks of the site: a method's result (maybe awaitable), an attribute."""
    if name in ("device_attr", "device_call"):
        device_id, attr, *args = args
        target = getattr(site.devices[device_id], attr)
        if name == "device_attr":
            return _Method() if callable(target) else target
    else:
        target = getattr(site, name)
    return target(*args) if callable(target) else target


async def _answer(conn: Connection, site: SimSite, rid: int, name: str, args: tuple) -> None:
    try:
        value = _resolve(site, name, args)
        if inspect.isawaitable(value):
            value = await value
        reply = ("ok", rid, value)
    except Exception as e:  # raised again in the parent
        reply = ("error", rid, e, traceback.format_exc())
    try:
        conn.send(reply)
    except (pickle.PicklingError, TypeError, AttributeError) as e:  # did not pickle
        conn.send(("error", rid, RuntimeError(f"HIL reply to {name}: {e}"), ""))


class _Device:
    """One simulated device in the child: its attributes read and its methods called over
    the pipe (e.g. a flexible load's `operations`, a converter's `inject_bus_fault`)."""

    def __init__(self, site: SiteProcess, device_id: str) -> None:
        self._site, self._id = site, device_id

    def __getattr__(self, name: str) -> Any:
        value = self._site._call("device_attr", self._id, name)
        if isinstance(value, _Method):
            return functools.partial(self._site._call, "device_call", self._id, name)
        return value


class SiteProcess:
    """A running `SimSite` for `config` at `speed`, served by a child process.

    `async with SiteProcess(cfg, speed) as site:` starts it (returning once every device
    server accepts connections) and stops it; `site.clock` is the shared simulated clock."""

    def __init__(self, config: Config, speed: float, start_timeout_s: float = 60.0,
                 stop_timeout_s: float = 10.0) -> None:
        self.config = config
        self.speed = speed
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.clock: Clock | None = None
        self._ctx = multiprocessing.get_context("spawn")
        self._conn: Connection | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._ids = itertools.count()
        self._replies: dict[int, tuple] = {}
        self._crash: str | None = None

    async def __aenter__(self) -> SiteProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- life cycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._conn, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=_child, args=(child, self.config, hil_of(self.config).start, self.speed),
            name=f"hil-{self.config.site.id}", daemon=True)
        self._proc.start()
        child.close()  # the child holds its end: EOF here once it exits
        try:
            msg = await self._next(self.start_timeout_s, "start")
            if msg[0] != "ready":
                raise RuntimeError(f"HIL process said {msg[0]!r} before it was ready")
        except BaseException:
            await self._reap()
            raise
        _, start, t0 = msg
        self.clock = Clock(start, self.speed, t0=t0)

    async def stop(self) -> None:
        """Stop the site, within `stop_timeout_s` (a hung child is killed). Raises
        `SiteCrashed` if the child died on its own."""
        if self._proc is None:
            return
        try:
            if self._crash is None and self._proc.is_alive():
                self._conn.send(("stop",))
            await self._next(self.stop_timeout_s, "stop", until="stopped")
        except TimeoutError:
            self._proc.kill()  # hung
        except (SiteCrashed, OSError):
            pass  # raised below
        finally:
            await self._reap()
        if self._crash is not None:
            self._died()

    async def _reap(self) -> None:
        proc, self._proc = self._proc, None
        await asyncio.to_thread(proc.join, self.stop_timeout_s)
        if proc.is_alive():
            proc.kill()
            await asyncio.to_thread(proc.join)
        self._conn.close()

    def check(self) -> None:
        """Raise `SiteCrashed` if the child has died."""
        if self._crash is None and self._conn is not None and self._conn.poll():
            self._receive()
        if self._crash is not None or (self._proc is not None and not self._proc.is_alive()):
            self._died()

    # -- request and reply -------------------------------------------------------------
    def _died(self) -> None:
        if self._crash is None:
            self._proc.join(1.0)
            self._crash = f"exit code {self._proc.exitcode}, no traceback"
        raise SiteCrashed(f"HIL process for site {self.config.site.id} died:\n{self._crash}")

    def _receive(self) -> tuple:
        """One message from the child; replies are kept for their caller."""
        try:
            msg = self._conn.recv()
        except (EOFError, OSError):
            self._died()
        if msg[0] == "crash":
            self._crash = msg[1]
            self._died()
        if msg[0] in ("ok", "error"):
            self._replies[msg[1]] = msg
        return msg

    async def _next(self, timeout_s: float, what: str, until: str | None = None) -> tuple:
        """Wait without blocking the event loop for the next message (or the `until` one)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._conn.poll():
                msg = self._receive()
                if until is None or msg[0] == until:
                    return msg
            elif time.monotonic() > deadline:
                raise TimeoutError(f"HIL process gave no answer to {what} in {timeout_s} s")
            else:
                await asyncio.sleep(0.005)

    def _send(self, name: str, args: tuple) -> int:
        if self._conn is None or self._proc is None:
            raise RuntimeError("HIL process not started")
        rid = next(self._ids)
        try:
            self._conn.send((rid, name, args))
        except OSError:
            self._died()
        return rid

    def _result(self, rid: int) -> Any:
        reply = self._replies.pop(rid)
        if reply[0] == "error":
            raise reply[2] from (ChildTraceback(reply[3]) if reply[3] else None)
        return reply[2]

    def _call(self, name: str, *args: Any) -> Any:
        """A blocking request: for reads and quick changes, answered in milliseconds."""
        rid = self._send(name, args)
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while rid not in self._replies:
            if not self._conn.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"HIL process gave no answer to {name} in {REPLY_TIMEOUT_S} s")
            self._receive()
        return self._result(rid)

    async def _acall(self, name: str, *args: Any) -> Any:
        """A request the event loop keeps running through (servers closing and opening)."""
        rid = self._send(name, args)
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while rid not in self._replies:
            await self._next(max(0.0, deadline - time.monotonic()), name)
        return self._result(rid)

    # -- the SimSite interface ---------------------------------------------------------
    @property
    def samples(self) -> list[Sample]:
        return self._call("samples")

    @property
    def last(self) -> Sample:
        return self._call("last")

    def state(self, device_id: str) -> dict[str, float | int | None]:
        return self._call("state", device_id)

    @property
    def devices(self) -> dict[str, _Device]:
        return {d.id: _Device(self, d.id) for d in self.config.devices}

    def kpis(self) -> dict[str, object]:
        return self._call("kpis")

    def history_kw(self, start: datetime, end: datetime, step_s: int = 900) -> dict[str, np.ndarray]:
        return self._call("history_kw", start, end, step_s)

    def inject(self, device_id: str, fault: Fault) -> None:
        self._call("inject", device_id, fault)

    def clear(self, device_id: str) -> None:
        self._call("clear", device_id)

    async def stop_device(self, device_id: str) -> None:
        await self._acall("stop_device", device_id)

    async def start_device(self, device_id: str) -> None:
        await self._acall("start_device", device_id)

    async def restart_with(self, device_id: str, models: list[int] | tuple[int, ...],
                           keep_settings: bool = False) -> None:
        await self._acall("restart_with", device_id, tuple(models), keep_settings)

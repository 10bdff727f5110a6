"""OcppCharger: the EvCharger driver (drivers.base) of one charge point on a shared Csms.

The charger connects to us; a connection becomes a `Session` (its receive loop, the setup
after boot, its writer). State lives in the Station and the wanted limit in `Wanted`, both
of which outlive connections: a reconnect mid-session finds its transaction and readings,
and the writer of the new connection re-sends the latest limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from drivers.base import DeviceError, Reading
from drivers.ocpp.csms import Csms
from drivers.ocpp.point import CallFailed, Point, wall_clock
from drivers.ocpp.quiet import Throttle
from drivers.ocpp.station import Station
from drivers.ocpp.v16 import V16
from drivers.ocpp.v201 import V201
from drivers.ocpp.writer import Wanted, Writer
from drivers.quietlog import Episode
from drivers.spec import OcppSpec

log = logging.getLogger(__name__)

SILENCE_MARGIN_S = 10.0  # beyond two heartbeats of silence the charger's values are stale
POINTS = {"ocpp1.6": V16, "ocpp2.0.1": V201}
BACKOFF_MAX_S = 300.0
RESTART_S = 10.0  # a CSMS that could not listen (port taken) is tried again this often


class Session:
    """One WebSocket connection of one charger. After BootNotification (or, for a charger
    that was accepted before and reconnects without booting, at once; for one we have never
    seen boot, after `boot_wait_s`) it reads the stack depth and installs the fail-safe
    profiles, then lets the writer go."""

    def __init__(self, charger: OcppCharger, connection: ServerConnection) -> None:
        self.charger, self.connection = charger, connection
        self.station = charger.station
        self.ready = asyncio.Event()
        self.point: Point = POINTS[connection.subprotocol](
            charger.station, connection, response_timeout_s=charger.response_timeout_s,
            throttle=charger.throttle, on_boot=self._booted, now=charger.now)
        self.writer = Writer(self.point, self.station, charger.wanted, self.ready,
                             retry_s=charger.retry_s, throttle=charger.throttle,
                             clock=lambda: charger.now().timestamp())
        self._tasks: set[asyncio.Task] = set()
        self._setup: asyncio.Task | None = None
        self._waiting: asyncio.Task | None = None
        self.finished = asyncio.Event()

    async def run(self) -> None:
        self.station.protocol = self.point.protocol
        self.station.seen()
        self._spawn(self.writer.run())
        self._waiting = self._spawn(self._boot_or_wait())
        try:
            await self.point.start()
        finally:
            await self._cancel(*self._tasks)
            self.finished.set()

    async def stop(self, code: int, reason: str, clear: bool) -> None:
        """End this connection; `clear` first removes our limits so the charger falls back
        to its fail-safe profile at once rather than when they lapse."""
        await self._cancel(*self._tasks)
        if clear and self.writer.tried:
            with contextlib.suppress(CallFailed, TimeoutError):
                async with asyncio.timeout(min(3.0, self.charger.response_timeout_s)):
                    for purpose in sorted(self.writer.tried):
                        await self.point.clear_profile(purpose)
        with contextlib.suppress(ConnectionClosed):
            await self.connection.close(code, reason)
        await self.finished.wait()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _cancel(*tasks: asyncio.Task) -> None:
        """Cancel and wait for `tasks`, cancelling again those that go on: Python 3.11's
        asyncio.wait_for (the ocpp library's calls use it) swallows a cancellation that
        meets the awaited reply, and the task would then live on."""
        pending = {t for t in tasks if not t.done()}
        while pending:
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _boot_or_wait(self) -> None:
        if not self.station.booted:
            await asyncio.sleep(self.charger.boot_wait_s)
            self.charger.throttle.say(
                "no boot", logging.INFO, "charger %s: no BootNotification within %g s of "
                "connecting; taking it as accepted before", self.station.name,
                self.charger.boot_wait_s)
        self._start_setup()

    def _booted(self) -> None:
        """BootNotification answered: (re)do the setup; a rebooted charger may have lost
        our limit, so the writer sends it again."""
        if self._waiting is not None:
            self._waiting.cancel()
        self.ready.clear()
        self.writer.forget()
        self._start_setup()

    def _start_setup(self) -> None:
        if self._setup is not None:
            self._setup.cancel()
        self._setup = self._spawn(self._setup_profiles())

    async def _ask_meter_interval(self, seconds: int) -> None:
        """Meter values often enough to see what a car takes; a charger that keeps its own
        interval still works, only slower to show a car that takes less than offered."""
        try:
            status = await self.point.set_meter_interval(seconds)
        except CallFailed as exc:
            status = str(exc)
        if status != "Accepted":
            self.charger.throttle.say(
                "meter interval", logging.INFO, "charger %s keeps its own meter value "
                "interval (asked for %d s: %s)", self.station.name, seconds, status)

    async def _setup_profiles(self) -> None:
        st, spec, say = self.station, self.station.spec, self.charger.throttle.say
        try:
            level = await self.point.read_stack_level()
        except CallFailed as exc:
            level = None
            say("stack level", logging.INFO, "charger %s: profile stack level not readable "
                "(%s); using 1", st.name, exc)
        st.stack_level = max(1, level or 1)
        if spec.meter_interval_s > 0:
            await self._ask_meter_interval(spec.meter_interval_s)
        todo = {"max": spec.max_current_a, "safe": spec.safe_current_a}
        backoff = self.charger.retry_s
        while todo:
            for purpose, amps in list(todo.items()):
                try:
                    status = await self.point.set_profile(purpose, amps, stack=0)
                except CallFailed as exc:
                    if exc.answered:
                        say(("refused", purpose), logging.WARNING, "charger %s: fail-safe "
                            "%s profile refused: %s", st.name, purpose, exc)
                        del todo[purpose]
                    continue
                del todo[purpose]
                if status != "Accepted":
                    say(("refused", purpose), logging.WARNING, "charger %s answered %s to "
                        "its fail-safe %s profile (%g A)", st.name, status, purpose, amps)
            self.ready.set()
            if todo:
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, BACKOFF_MAX_S)
        say("setup", logging.INFO, "charger %s: fail-safe profiles sent (max %g A, fallback "
            "%g A), limits at stack level %d", st.name, spec.max_current_a,
            spec.safe_current_a, st.stack_level)


class OcppCharger:
    """An EV charger (drivers.base.EvCharger) that connects to `csms` as
    ws://host:port/<spec.charge_point_id>. `response_timeout_s`: how long a CALL waits for
    its answer; `retry_s`: the pause after a failed CALL; `boot_wait_s`: how long a charger
    we never saw boot may stay connected before we talk to it anyway."""

    def __init__(self, device_id: str, spec: OcppSpec, csms: Csms, *,
                 response_timeout_s: float = 10.0, retry_s: float = 5.0,
                 boot_wait_s: float = 10.0, now: Callable[[], datetime] = wall_clock) -> None:
        self.id, self.spec, self.csms, self.now = device_id, spec, csms, now
        self.cp_id = spec.charge_point_id
        self.response_timeout_s, self.retry_s = response_timeout_s, retry_s
        self.boot_wait_s = boot_wait_s
        self.station = Station(device_id, spec, clock=lambda: now().timestamp())
        self.wanted = Wanted()
        self.station.on_tx = self.wanted.poke
        self.throttle = Throttle(log)
        who = device_id.replace("%", "%%")
        self.link = Episode(log, f"charger {who}: connection lost (%(reason)s)",
                            f"charger {who}: connection lost %(count)d times in %(since)s, "
                            "last: %(reason)s", f"charger {who}: connected again after "
                            "%(since)s", level=logging.INFO)
        self._session: Session | None = None
        self._restart_at = 0.0

    async def connect(self) -> None:
        """Start the CSMS (the first charger to connect does; the others find it open)."""
        await self.csms.open(self)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.stop(CloseCode.GOING_AWAY, "CSMS stopping", clear=True)
        await self.csms.release(self)

    async def attach(self, connection: ServerConnection) -> None:
        """Run one connection of this charger (the Csms calls this); a connection that
        was already there is dropped: the charger opened a new one, so the old is dead."""
        session, old = Session(self, connection), self._session
        self._session = session
        if old is not None:
            self.throttle.say("replaced", logging.INFO, "charger %s: a new connection "
                              "replaces the old one", self.id)
            await old.stop(CloseCode.POLICY_VIOLATION, "replaced by a new connection",
                           clear=False)
        self.link.ok()
        self.throttle.say("connected", logging.INFO, "charger %s connected (%s)", self.id,
                          connection.subprotocol)
        try:
            await session.run()
        finally:
            if self._session is session:
                self._session = None
                self.link.failed(_closed(connection))

    @property
    def connected(self) -> bool:
        return self._session is not None

    @property
    def settled(self) -> bool:
        """The writer of the current connection has acted on the latest write_current (sent
        it, or decided not to yet) and has no CALL out."""
        s = self._session
        return s is not None and not s.writer.busy and s.writer.acted == self.wanted.version

    async def poll(self) -> Reading:
        if not self.csms.serving and time.monotonic() >= self._restart_at:
            self._restart_at = time.monotonic() + RESTART_S
            try:
                await self.csms.open(self)  # its start at connect failed (port taken?)
            except OSError as exc:
                raise DeviceError(f"CSMS cannot listen at {self.csms.url}: {exc}") from exc
        if self._session is None:
            raise DeviceError(f"charger {self.cp_id} is not connected to "
                              f"{self.csms.url}{self.cp_id}")
        silent = time.monotonic() - self.station.last_seen
        if silent > 2 * self.spec.heartbeat_s + SILENCE_MARGIN_S:
            raise DeviceError(f"charger {self.cp_id} silent for {silent:.0f} s")
        return Reading(self.id, self.station.values())

    async def write_current(self, amps: float, revert_s: int) -> None:
        """Hand the writer the latest limit (A per phase); returns at once."""
        if not math.isfinite(amps):
            raise ValueError(f"charger {self.id}: current limit {amps} is not a number")
        self.wanted.set(min(max(amps, 0.0), self.spec.max_current_a), int(revert_s))

    def describe(self) -> dict:
        st = self.station
        return {"protocol": st.protocol or "ocpp", "charge_point_id": self.cp_id,
                "endpoint": f"{self.csms.url}{self.cp_id}", **st.info,
                "stack_level": st.stack_level,
                "limit_profile": "TxProfile" if st.tx_profiles else "TxDefaultProfile"}


def _closed(connection: ServerConnection) -> str:
    """Why a connection ended, as its close frames tell."""
    # The protocol object keeps the close frames; not every websockets release exposes
    # them on the connection itself.
    proto = getattr(connection, "protocol", connection)
    rcvd = getattr(connection, "close_rcvd", getattr(proto, "close_rcvd", None))
    sent = getattr(connection, "close_sent", getattr(proto, "close_sent", None))
    if rcvd is not None:
        return f"charger closed it: {rcvd.code} {rcvd.reason}".strip()
    if sent is not None:
        return f"closed: {sent.code} {sent.reason}".strip()
    return "connection dropped"

"""What every SunSpec role driver does on top of its unit (drivers.sunspec.unit): plan which
models serve the role, poll them by class, keep the device's controller heartbeats beating.

A device that comes back is rediscovered, because a restart may have moved its models. The
role drivers (drivers.sunspec.roles) run over any `ModbusEndpoint`: Modbus TCP or RTU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from drivers.base import DeviceError, Reading
from drivers.modbus.endpoint import ILLEGAL_ADDRESS, ModbusEndpoint, ModbusExceptionReply
from drivers.sunspec import models as sunspec
from drivers.sunspec.unit import SunSpecUnit

log = logging.getLogger(__name__)

# Polls between two reads of the slow models (identity, nameplates, settings, the static part
# of a model whose live part is read as a prefix): at 1 s cycles, once a minute.
SLOW_EVERY = 60


@dataclass(slots=True)
class _Beat:
    """A controller heartbeat the device watches (715 ControllerHb, 802 CtrlHb): incremented
    on every poll and every control write, so the device knows its controller is alive.
    Written without a read-back request: the next poll reads its model anyway. A poll does
    not wait for its beat's write either: it goes out once the poll round is over
    (`send_deferred`), and the next poll waits for it before it reads."""

    model: int
    point: str
    modulus: int  # the all-ones value means "not implemented": the counter wraps before it
    value: int = 0  # last written (at connect: as read)
    verified: bool = False  # read back as written at least once since connect

    @property
    def name(self) -> str:
        return f"{self.model}.{self.point}"


class SunSpecDevice:
    """What every SunSpec role driver does: discover, plan which models serve the role
    (`_plan`), poll them by class, and keep the device's controller heartbeats beating.

    Poll classes: `_fast` models (measurements, control state, storage state, heartbeats)
    are read every poll, some only as a prefix up to their last live point; `_slow` models
    (model 1, nameplates 120/702, settings 121, the whole of 802 with its static ratings
    and scale factors) at (re)discovery and then every `slow_every` polls, and carried
    forward in between. Values derived only from slow models (`_slow_keys`) carry their own
    read time in `Reading.stamps`. Energy counters that live in the same model as power
    (103 WH, 701 TotWhInj/TotWhAbs, 203 TotWhImp/TotWhExp) stay in the fast read: one
    request either way."""

    slow_every = SLOW_EVERY

    def __init__(self, device_id: str, endpoint: ModbusEndpoint, unit: int) -> None:
        self.id = device_id
        self.sunspec = SunSpecUnit(endpoint, unit)
        self._fast: dict[int, str | None] = {}  # model id -> read through this point (None: all)
        self._slow: tuple[int, ...] = ()
        self._slow_keys: frozenset[str] = frozenset()
        self._uses: dict[str, int | list[int]] = {}  # for describe(): what serves the role
        self._slow_values: dict[int, dict] = {}
        self._slow_at = 0.0
        self._since_slow = 0
        self._beats: list[_Beat] = []
        self._beating: asyncio.Task[None] | None = None  # the last poll's beat, in flight
        self._beat_go: asyncio.Future[None] | None = None  # resolved: send it
        self._beat_lock = asyncio.Lock()  # one beat at a time: each counts on the last
        self._latest: dict[int, dict] = {}  # model id -> values as of the last poll

    def _plan(self, models: dict[int, int]) -> None:
        """Choose the models that serve the role; DeviceError naming what is missing."""
        raise NotImplementedError

    def _on_slow(self, values: dict[int, dict]) -> None:
        """Slow models were just read (nameplates: ratings the writes scale by)."""

    async def connect(self) -> None:
        models = await self.sunspec.discover()
        try:
            await self._prepare(models)
        except BaseException:
            self.sunspec.models = {}  # half planned: the next poll starts over
            raise
        log.info("%s: SunSpec models %s (%s %s), using %s, heartbeats %s", self.id, sorted(models),
                 self.sunspec.common.get("Mn"), self.sunspec.common.get("Md"), self._uses,
                 [b.name for b in self._beats] or "none")

    async def _prepare(self, models: dict[int, int]) -> None:
        self._latest = {}
        self._plan(models)
        await self._read_slow(skip=(1,))  # discover() has just read model 1
        self._beats = []
        for mid, point in ((715, "ControllerHb"), (802, "CtrlHb")):
            if mid not in models:
                continue
            current = (await self.sunspec.read(mid, through=point)).get(point)
            if current is None:
                continue  # the device does not watch this heartbeat
            size = sunspec.model(mid).point(point).size
            self._beats.append(_Beat(mid, point, (1 << 16 * size) - 1, int(current)))
            self._fast.setdefault(mid, point)  # read every poll: verifies the beat
        self.sunspec.polled = self._fast  # control writes it covers skip their read-back

    async def _read_slow(self, skip: tuple[int, ...] = ()) -> None:
        values = await self.sunspec.read_many({mid: None for mid in self._slow
                                               if mid not in skip})
        serial = self.sunspec.common.get("SN")
        if 1 in values:
            if serial is not None and values[1].get("SN") != serial:
                self.sunspec.models = {}
                raise DeviceError(f"{self.id}: serial number changed from {serial} to "
                                  f"{values[1].get('SN')}: another device answers; rediscovering")
            self.sunspec.common = values[1]
        values[1] = self.sunspec.common
        self._slow_values, self._slow_at, self._since_slow = values, time.monotonic(), 0
        self._on_slow(values)

    async def _beat(self) -> None:
        """Advance every heartbeat. One the device refuses to take (answered with ILLEGAL
        ADDRESS or VALUE while its model was just read where we expect it) is not watched
        by this device: it is dropped, with a warning, rather than failing every poll.
        After a beat still in flight (`_beating`), whose failure is left to the next poll."""
        async with self._beat_lock:
            await self._beat_unlocked()

    async def _beat_unlocked(self) -> None:
        for b in list(self._beats):
            value = (b.value + 1) % b.modulus
            try:
                await self.sunspec.write(b.model, {b.point: value}, verify=False)
            except ModbusExceptionReply as exc:
                if exc.code not in (ILLEGAL_ADDRESS, 3):
                    raise
                log.warning("%s: device refuses heartbeat %s (%s); not sending it", self.id,
                            b.name, exc)
                self._beats.remove(b)
                continue
            b.value = value

    def _check_beats(self, latest: dict[int, dict]) -> None:
        """The read-back of the last heartbeat written, from this poll's read of its model."""
        for b in list(self._beats):
            got = latest[b.model].get(b.point)
            if got in (b.value, (b.value + 1) % b.modulus):  # +1: a write cut off by a deadline
                b.value, b.verified = int(got), True  # may still have landed
            elif b.verified:
                self.sunspec.models = {}
                raise DeviceError(f"{self.id}: heartbeat {b.name} went from {b.value} to {got} "
                                  "by itself: device restarted? rediscovering")
            else:
                log.warning("%s: device does not keep heartbeat %s (wrote %d, read back %s); "
                            "not sending it", self.id, b.name, b.value, got)
                self._beats.remove(b)

    def _start_beat(self) -> None:
        """Queue the heartbeats, sent on `send_deferred` without waiting for their answer."""
        if self._beats:
            loop = asyncio.get_running_loop()
            self._beat_go = go = loop.create_future()
            self._beating = loop.create_task(self._beat_when(go))

    async def _beat_when(self, go: asyncio.Future[None]) -> None:
        await go
        await self._beat()

    def send_deferred(self) -> None:
        """Send what the last poll left for after the poll round (its heartbeat writes): the
        poller calls this once every device has been read, so the writes do not delay the
        replies other devices are waiting for. The next poll sends them if nobody did."""
        go, self._beat_go = self._beat_go, None
        if go is not None and not go.done():
            go.set_result(None)

    async def heartbeats_sent(self) -> None:
        """Send and wait for the heartbeat writes the last poll queued; raise if they failed.
        The next poll does this first, so a failed beat fails that poll (the device goes
        stale as it would have had the beat been awaited inside the poll that sent it)."""
        self.send_deferred()
        task, self._beating = self._beating, None
        if task is not None:
            await task

    async def poll(self) -> Reading:
        """Read (a moved chain shows in the model IDs before anything is written), then
        start the beat: the last poll's beat has landed, or this poll fails with its error."""
        await self.heartbeats_sent()
        if not self.sunspec.models:
            await self.connect()
        elif self._since_slow >= self.slow_every:
            await self._read_slow()
        latest = dict(self._slow_values)
        mark = self.sunspec.checks.mark()
        for mid, values in (await self.sunspec.read_many(self._fast)).items():
            latest[mid] = {**self._slow_values.get(mid, {}), **values}
        await self.sunspec.verify_left(mark)
        self._check_beats(latest)
        self._latest = latest
        self._since_slow += 1
        values = await self._values(latest)
        reading = Reading(self.id, values,
                          stamps={k: self._slow_at for k in self._slow_keys if k in values})
        self._start_beat()
        return reading

    async def _values(self, m: dict[int, dict]) -> dict[str, float]:
        raise NotImplementedError

    def refused_write(self) -> str | None:
        """Control writes the polls since the last call found not taken (see
        drivers.modbus.pending); None: all taken."""
        return self.sunspec.refused_write()

    def poll_requests(self) -> list[tuple[int, int]]:
        """(address, registers) of each read a poll between two slow rounds sends (once
        connected): what a benchmark's raw baseline reads to compare a poll against."""
        return self.sunspec.requests(self._fast)

    async def close(self) -> None:
        self._beat_go = None
        task, self._beating = self._beating, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.sunspec.endpoint.close()

    def describe(self) -> dict:
        common = self.sunspec.common
        return {
            "protocol": f"sunspec-{self.sunspec.endpoint.transport}",
            "endpoint": f"{self.sunspec.endpoint.name}/{self.sunspec.unit}",
            "manufacturer": common.get("Mn"),
            "model": common.get("Md"),
            "serial": common.get("SN"),
            "models": sorted(self.sunspec.models),
            "uses": dict(self._uses),
            "heartbeats": [b.name for b in self._beats],
            "poll": {"fast": sorted(self._fast), "slow": sorted(self._slow),
                     "slow_every": self.slow_every},
        }

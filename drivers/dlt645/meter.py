"""The DL/T 645 meter role driver (drivers.base.Meter).

Poll classes: at 2400 bit/s one read takes ~0.25 s on the wire, so reading all nine
values of a meter would take ~2 s. Total active power (what control needs) is read every
poll; the slow values (phase voltages, currents, power factors, energy counters) are read
one request per poll, in rotation, by one meter of the bus at a time, using the block
identifiers (DI1 = FF: all phases in one reply) where the meter has them and single
identifiers where it answers "no such data". Each slow value carries its own read time
in `Reading.stamps`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from drivers.base import DeviceError, Reading
from drivers.dlt645.bus import BACKOFF_MAX_S, BACKOFF_MIN_S, Dlt645Bus, Opener
from drivers.dlt645.frame import (
    BLOCKS,
    ERR_NO_DATA,
    FAST,
    KEY_OF,
    POINTS,
    SLOW,
    ErrorReply,
    FrameError,
    decode_values,
    encode_address,
    transformer_factor,
)

log = logging.getLogger(__name__)


class Dlt645Meter:
    """A meter role driver (drivers.base.Meter) on a shared `Dlt645Bus` (or its own, when
    given an opener). `connect` reads every value once; `poll` reads power and, on its turn,
    the next slow request. A meter that does not answer on a shared bus backs off (0.5 s
    doubling to 10 s: its polls fail at once) so it cannot hold the bus for a timeout on
    every poll while its neighbours wait; a meter alone on its bus is asked every poll.

    A transformer-connected meter reports secondary values (XX.XXXX kW tops out at
    ±79.9999 kW): `ct_ratio` and `pt_ratio` turn them into primary ones, so everything past
    this driver sees the site's real power, energy, current and voltage."""

    def __init__(self, device_id: str, address: str, link: Dlt645Bus | Opener,
                 timeout_s: float = 0.5, ct_ratio: float = 1.0, pt_ratio: float = 1.0) -> None:
        if ct_ratio <= 0 or pt_ratio <= 0:
            raise ValueError(f"{device_id}: ct_ratio and pt_ratio must be > 0")
        self.id = device_id
        self.address = encode_address(address)
        self.ct_ratio, self.pt_ratio = ct_ratio, pt_ratio
        self.bus = link if isinstance(link, Dlt645Bus) else Dlt645Bus(link, timeout_s)
        self.bus.attach(self)
        self._slow_dis: list[int] = list(SLOW)  # blocks the meter lacks become single DIs
        self._next = 0
        self._slow: dict[str, tuple[float, float]] = {}  # key -> (value, monotonic read time)
        self._refused: set[int] = set()  # slow DIs answered with an error reply (logged once)
        self._backoff_s = 0.0
        self._retry_at = 0.0

    @property
    def timeout_s(self) -> float:
        return self.bus.timeout_s

    def describe(self) -> dict:
        out = {"protocol": "dlt645", "endpoint": self.bus.name,
               "address": self.address[::-1].hex()}
        if (self.ct_ratio, self.pt_ratio) != (1.0, 1.0):
            out |= {"ct_ratio": self.ct_ratio, "pt_ratio": self.pt_ratio}
        return out

    async def close(self) -> None:
        await self.bus.close()

    async def read(self, di: int) -> bytes:
        """Value bytes of one data identifier, under this meter's backoff."""
        left = self._retry_at - time.monotonic()
        if left > 0:
            raise DeviceError(f"{self.id}: backing off for {left:.1f} s after it did not answer")
        try:
            raw = await self.bus.read(self.address, di, self.id)
        except (DeviceError, asyncio.CancelledError):
            # Silent, or abandoned by the caller's deadline with the request on the wire
            # (not merely cancelled while queued behind a neighbour).
            if self.address in self.bus.unanswered and self.bus.shared:
                self._backoff_s = min(max(self._backoff_s * 2, BACKOFF_MIN_S), BACKOFF_MAX_S)
                self._retry_at = time.monotonic() + self._backoff_s
            else:
                self._backoff_s = 0.0
            raise
        self._backoff_s = 0.0
        return raw

    async def _read_values(self, di: int) -> dict[str, float]:
        raw = await self.read(di)
        try:
            values = decode_values(di, raw)
        except FrameError as exc:
            raise DeviceError(f"{self.id}: DI {di:08X}: {exc}") from exc
        return {k: v * transformer_factor(k, self.ct_ratio, self.pt_ratio)
                for k, v in values.items()}

    async def _read_slow(self, di: int) -> None:
        """One slow request. A slow value never fails the poll of a meter that answers: a
        block it refuses is replaced by its single identifiers, a value it does not have is
        dropped (both logged once, not retried every turn), any other error reply is logged
        and the value keeps its last read time. Silence still raises."""
        try:
            values = await self._read_values(di)
        except ErrorReply as exc:
            i = self._slow_dis.index(di)
            if di in BLOCKS:  # some meters answer "other error" to a block they lack
                self._slow_dis[i:i + 1] = [POINTS[k][0] for k in BLOCKS[di]]
                log.info("%s: no block read %08X (%s); reading %s one by one", self.id, di,
                         exc, ", ".join(BLOCKS[di]))
            elif exc.code & ERR_NO_DATA:
                del self._slow_dis[i]
                log.warning("%s: meter has no %s (DI %08X); not reported", self.id,
                            KEY_OF[di], di)
            else:
                if di not in self._refused:
                    log.warning("%s: %s; %s keeps its last value", self.id, exc, KEY_OF[di])
                self._refused.add(di)
                self._next = i + 1
            return
        self._refused.discard(di)
        now = time.monotonic()
        for key, value in values.items():
            self._slow[key] = (value, now)

    async def _read_next_slow(self) -> None:
        if not self._slow_dis:
            return
        self._next %= len(self._slow_dis)
        di = self._slow_dis[self._next]
        await self._read_slow(di)
        if di in self._slow_dis:  # read (or refused for now): on to the next one
            self._next = self._slow_dis.index(di) + 1
        # replaced by its singles or dropped: `_next` already points at what follows

    async def connect(self) -> None:
        """Read every value once, so the first poll reports all of them."""
        for key in FAST:
            await self.read(POINTS[key][0])
        done: set[int] = set()
        while todo := [di for di in self._slow_dis if di not in done]:
            done.add(todo[0])
            await self._read_slow(todo[0])  # a refused block puts its singles in the list

    async def poll(self) -> Reading:
        turn = self.bus.slow_turn(self)
        try:
            if turn:
                await self._read_next_slow()
            values: dict[str, float] = {}  # power last: the freshest value of the poll
            for key in FAST:
                values.update(await self._read_values(POINTS[key][0]))
            at = time.monotonic()
        finally:
            if turn:
                self.bus.pass_turn(self)
        slow = {k: v for k, (v, _) in self._slow.items()}
        return Reading(self.id, {**slow, **values}, monotonic=at,
                       stamps={k: t for k, (_, t) in self._slow.items()})

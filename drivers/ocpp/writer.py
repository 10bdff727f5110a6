"""The per-charger writer: sends only the latest wanted current, as a charging profile that
lapses by itself, so a daemon that goes quiet leaves the charger on its fail-safe profile.

Each limit is a TxDefaultProfile (connector/EVSE 0) at the highest stack level the charger
has, Absolute, in A, starting LEAD_S in the past, lasting until revert_s after it is sent;
it is re-sent after half of that. A charger that refuses TxDefaultProfile gets a TxProfile
per running transaction instead, from then on. What is sent, and when:

- the first limit of a connection goes at once (a reconnect re-sends the latest);
- a limit within `deadband_a` of the one in force is not sent (0 <-> non-zero always is);
- a cut goes at once, a raise at most every `min_interval_s` after the last change;
- a CALL that fails holds that target for `retry_s` (a new wanted value ends the hold).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.ocpp.point import LEAD_S, CallFailed, Point
from drivers.ocpp.quiet import Throttle
from drivers.ocpp.station import Station, Tx

log = logging.getLogger(__name__)


@dataclass
class Wanted:
    """The latest limit the role asked for; it outlives connections."""

    amps: float | None = None
    revert_s: int = 300
    version: int = 0  # bumps with each write
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def set(self, amps: float, revert_s: int) -> None:
        self.amps, self.revert_s = amps, revert_s
        self.version += 1
        self.wake.set()

    def poke(self) -> None:
        self.wake.set()


@dataclass
class Sent:
    amps: float
    at: float  # monotonic, when the charger accepted it
    changed_at: float  # when the limit in force last changed value
    revert_s: int


MAX_NAP_S = 0.5  # wall seconds the writer sleeps at most before it reads the clock again


class Pace:
    """How fast the site's clock runs against the wall (1 in the field, the speed-up under an
    accelerated HIL), measured since the writer started: a wait due in `s` site seconds is
    slept as `s / rate` wall seconds, so a refresh is not late by the speed-up."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.t0, self.c0 = time.monotonic(), clock()

    def wall_s(self, site_s: float) -> float:
        wall = time.monotonic() - self.t0
        rate = (self.clock() - self.c0) / wall if wall > 0.1 else 1.0
        return site_s / max(rate, 1.0)


class Writer:
    """One per connection; `sent` (what is in force per target) starts empty, so the
    latest wanted limit goes out as soon as the connection is ready."""

    def __init__(self, point: Point, station: Station, wanted: Wanted, ready: asyncio.Event,
                 *, retry_s: float, throttle: Throttle,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.point, self.station, self.wanted, self.ready = point, station, wanted, ready
        self.retry_s, self.throttle, self.clock = retry_s, throttle, clock
        self.sent: dict[str, Sent] = {}  # target key -> in force
        self.hold: dict[str, tuple[float, int]] = {}  # target -> (until, wanted version)
        self.acted = -1  # the wanted version the last pass fully handled
        self.busy = False  # in a pass (a CALL may be out)
        self.tried: set[str] = set()  # profile purposes sent on this connection

    def forget(self) -> None:
        """The charger rebooted: what it had may be gone; send again."""
        self.sent.clear()
        self.hold.clear()
        self.wanted.poke()

    async def run(self) -> None:
        pace = Pace(self.clock)
        while True:
            await self.ready.wait()
            self.wanted.wake.clear()
            self.busy = True
            try:
                delay = await self.step()
            finally:
                self.busy = False
            if delay == 0:
                continue
            if delay is not None:
                # The site's clock may run faster than the wall (the HIL): look again soon.
                delay = min(pace.wall_s(delay), MAX_NAP_S)
            try:
                await asyncio.wait_for(self.wanted.wake.wait(), delay)
            except TimeoutError:
                pass

    async def step(self) -> float | None:
        """Send what is due now; seconds until something next falls due (None: nothing)."""
        w, version = self.wanted, self.wanted.version
        if w.amps is None:
            self.acted = version
            return None
        tx_mode = self.station.tx_profiles
        targets: dict[str, Tx | None] = (
            {f"tx:{t.id}": t for t in self.station.txs.values()} if tx_mode else {"default": None})
        for key in [k for k in self.sent if k not in targets]:
            del self.sent[key]
        due = math.inf
        for key, tx in targets.items():
            until, held_for = self.hold.get(key, (0.0, -1))
            if held_for == version and self.clock() < until:
                due = min(due, until)
                continue
            amps, when = self._plan(w, self.sent.get(key), self.clock())
            if when > self.clock():
                due = min(due, when)
                continue
            if await self._send(key, tx, amps, w.revert_s):
                sent = self.sent[key]
                due = min(due, sent.at + sent.revert_s / 2)
            elif self.station.tx_profiles != tx_mode:
                return 0  # switched to TxProfile: go again with the transactions as targets
            else:
                self.hold[key] = (self.clock() + self.retry_s, version)
                due = min(due, self.hold[key][0])
        self.acted = version
        return None if math.isinf(due) else max(0.0, due - self.clock())

    def _plan(self, w: Wanted, sent: Sent | None, now: float) -> tuple[float, float]:
        """(amps to send, when): the wanted limit, or the one in force to refresh it."""
        spec = self.station.spec
        assert w.amps is not None
        if sent is None:
            return w.amps, now
        refresh_at = sent.at + sent.revert_s / 2
        gap = w.amps - sent.amps
        flip = (w.amps == 0) != (sent.amps == 0)
        if gap == 0 or (abs(gap) < spec.deadband_a and not flip):
            return sent.amps, refresh_at
        if gap < 0:
            return w.amps, now
        raise_at = sent.changed_at + spec.min_interval_s
        if raise_at <= now:
            return w.amps, now
        if refresh_at <= now:
            return sent.amps, now
        return w.amps, min(raise_at, refresh_at)

    async def _send(self, key: str, tx: Tx | None, amps: float, revert_s: int) -> bool:
        st = self.station
        purpose = "tx" if tx is not None else "default"
        self.tried.add(purpose)
        try:
            status = await self.point.set_profile(purpose, amps, st.stack_level,
                                                  duration=revert_s + LEAD_S, tx=tx)
        except CallFailed as exc:
            self.throttle.say((st.name, "limit failed"), logging.WARNING,
                              "charger %s: limit %g A not set: %s", st.name, amps, exc)
            return False
        if status == "Accepted":
            now, before = self.clock(), self.sent.get(key)
            changed = now if before is None or before.amps != amps else before.changed_at
            self.sent[key] = Sent(amps, now, changed, revert_s)
            st.offer(amps)
            log.debug("charger %s: limit %g A in force (%s)", st.name, amps, key)
            return True
        if tx is None and status in ("Rejected", "NotSupported"):
            st.tx_profiles = True
            log.warning("charger %s answered %s to TxDefaultProfile; its limits go as a "
                        "TxProfile per transaction from now on", st.name, status)
            return False
        self.throttle.say((st.name, "limit refused"), logging.WARNING,
                          "charger %s answered %s to a %s limit of %g A", st.name, status,
                          purpose, amps)
        return False

"""The control cycle, and only the loop: poll every device at once -> one process image ->
decide (edge/control/decide.py, a function) -> write the setpoints that are due -> publish
the image and decision to whoever listens. It never stops: a crash of the decision puts
every device in its safe state and the next cycle starts fresh."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.base import Device, urgent
from edge.app.clock import Clock
from edge.config import Config, poll_deadline_s
from edge.control.decide import Controller, Decision
from edge.control.instructions import InstructionBook
from edge.image.image import ProcessImage
from edge.image.poll import DeviceHealth, Poller
from edge.setpoints.writer import Writer, limit_violated

log = logging.getLogger(__name__)

MIN_PERIOD_WALL_S = 0.02  # 50 Hz at most, however fast the clock runs

_WAKE_GAP_S = 0.05  # shortest wall time between the end of a cycle and a woken one
FINAL_WRITE_S, FINAL_ATTEMPTS = 2.0, 3  # the safe state on the way down: wall budget, tries

__all__ = ["ControlCycle", "CycleStats", "Decision", "DeviceHealth"]


@dataclass(slots=True)
class CycleStats:
    cycles: int = 0
    crashes: int = 0
    durations_ms: deque = field(default_factory=lambda: deque(maxlen=10_000))


class ControlCycle:
    def __init__(self, config: Config, devices: dict[str, Device], kernel, clock: Clock,
                 book: InstructionBook | None = None) -> None:
        self.config = config
        self.devices = devices
        self.clock = clock
        self.book = book if book is not None else InstructionBook()
        self.controller = Controller(config, kernel)
        self.memory = self.controller.initial_memory()
        self.poller = Poller(config, devices, clock)
        self.health = self.poller.health
        self.writer = Writer(config, devices, on_error=self._write_failed)
        self.image: ProcessImage | None = None
        self.decision: Decision | None = None
        self.stats = CycleStats()
        self._listeners: list[Callable[[ProcessImage, Decision], None]] = []
        self._wake = asyncio.Event()
        # Clear while a step runs: work outside control (the operator API's answers) waits
        # for it, so it takes the event loop between cycles rather than inside one.
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def period_wall_s(self) -> float:
        """Wall seconds between cycles: the configured (simulated) period, sped up, but never
        faster than 50 Hz so an accelerated HIL run cannot starve the devices."""
        return max(self.config.control.cycle_s / self.clock.speed, MIN_PERIOD_WALL_S)

    def subscribe(self, listener: Callable[[ProcessImage, Decision], None]) -> None:
        """Called after every cycle with its image and decision (the one fan-out)."""
        self._listeners.append(listener)

    def check_revert_timers(self) -> list[str]:
        """Devices whose revert timer would expire before the cycle can re-write them."""
        sim_period = self.period_wall_s * self.clock.speed
        margin = self.config.control.rewrite_margin
        return [d.id for d in self.writer.writers if d.revert_s * margin < sim_period]

    def build_image(self) -> ProcessImage:
        return self.poller.build_image(self.period_wall_s)

    def _write_failed(self, dev_id: str) -> None:
        self.health[dev_id].errors += 1

    def _recorder(self, now_s: float) -> Callable[[str, float | None], None]:
        def record(dev_id: str, value: float | None) -> None:
            # Each write is remembered as it completes: a cycle cancelled half-way (the
            # daemon stopping) must not forget a shed that already went out.
            self.controller.after_writes(self.memory, {dev_id: value}, now_s)
        return record

    async def write(self, decision: Decision, force: bool = False,
                    timeout: float | None = None) -> None:
        """`timeout`: wall seconds per device write (default: the poll deadline)."""
        now_s = self.clock.elapsed_s()
        await self.writer.write(
            decision, self.memory, now_s, timeout or poll_deadline_s(self.period_wall_s),
            limit_violated(self.image, decision, self.config.grid_meter.id),
            self._recorder(now_s), force)

    async def step(self) -> Decision:
        self.idle.clear()
        try:
            return await self._step()
        finally:
            self.idle.set()

    async def _step(self) -> Decision:
        t0 = time.perf_counter()
        await self.poller.poll(self.period_wall_s)
        self.image = image = self.build_image()
        now_s = self.clock.elapsed_s()
        self.writer.collect_refused(self.memory, self._recorder(now_s))
        try:
            decision, self.memory = self.controller.decide(image, self.book, self.memory, now_s)
        except Exception:  # decide() catches its own handlers' faults; this is the rest
            log.exception("control cycle crashed; applying safe state")
            self.memory = self.memory.clone()
            decision = self.controller.safe(image, self.memory, now_s)
            self.memory.last = decision
            self.stats.crashes += 1
        self.stats.crashes += decision.crashed
        self.decision = decision
        await self.write(decision)
        self.stats.cycles += 1
        took_ms = (time.perf_counter() - t0) * 1000.0
        self.stats.durations_ms.append(took_ms)
        log.debug("cycle %d took %.3f ms", self.stats.cycles, took_ms)  # benches read these
        for listener in self._listeners:
            try:
                listener(image, decision)
            except Exception:  # noqa: BLE001 - a reporting fault must not stop control
                log.exception("cycle listener %r failed", listener)
        return decision

    async def run(self, stop: asyncio.Event) -> None:
        """Run cycles on a fixed wall period until `stop` is set; never raises."""
        next_at = time.monotonic()
        while not stop.is_set():
            period = self.period_wall_s  # the clock's speed may change (simulate's windows)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.crashes += 1
                log.exception("control cycle failed outside decide; applying safe state")
                await self.apply_safe_state()
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()  # overrun: skip, don't burst
                delay = 0
            look = self._look_delay()
            early = look is not None and look < delay
            try:
                await asyncio.wait_for(self._sleep(stop), look if early else delay)
            except TimeoutError:
                pass
            if self._wake.is_set() or early:
                self._wake.clear()
                next_at = time.monotonic()  # a woken cycle starts a new period

    def _look_delay(self) -> float | None:
        """Wall seconds until the look the last decision asked for (edge/island: the instant
        detect_s runs out, the changeover's polls), or None. Not held to the 50 Hz floor:
        a role asks only for the few looks that decide a transfer."""
        d = self.decision
        if d is None or d.next_look_s is None:
            return None
        return max(self.clock.wall_s(d.next_look_s - self.clock.elapsed_s()), 0.0)

    def wake(self) -> None:
        """Run the next cycle now rather than at the end of the period, so a new instruction
        (a platform command) reaches the devices within one cycle time. Woken cycles are
        at least _WAKE_GAP_S apart: a flood of commands cannot spin the cycle."""
        self._wake.set()

    async def _sleep(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            ended = time.monotonic()
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not stop.is_set():
                await asyncio.sleep(ended + _WAKE_GAP_S - time.monotonic())
        finally:
            for w in waits:
                w.cancel()

    async def apply_safe_state(self, final: bool = False) -> None:
        """Write every device's safe state now; never raises (it runs on the way down).
        `final`: the daemon stops, nothing will ramp the DC bus reference any more."""
        try:
            image = self.image or self.build_image()
            self.memory = self.memory.clone()
            decision = self.controller.safe(image, self.memory, self.clock.elapsed_s(),
                                            final=final)
            self.memory.last = decision
            if final:
                await self._write_final(decision)
            else:
                await self.write(decision, force=True)
        except Exception:  # noqa: BLE001
            log.exception("applying the safe state failed; device revert timers remain")

    async def _write_final(self, decision: Decision) -> None:
        """The last write: past any unit's silence backoff (the stop may just have cancelled
        a request on the wire), and again for what failed, FINAL_ATTEMPTS times within
        FINAL_WRITE_S wall seconds; each try may take what is left of that."""
        end = time.monotonic() + FINAL_WRITE_S
        missing: list[str] = []
        with urgent():
            for attempt in range(FINAL_ATTEMPTS):
                left = end - time.monotonic()
                if left <= 0:
                    break
                await self.write(decision, force=attempt == 0, timeout=left)
                missing = [d.id for d in self.writer.writers
                           if decision.setpoints.get(d.role, {}).get(d.id) is not None
                           and self.memory.written[d.id].failed]
                if not missing:
                    return
        log.warning("safe state not confirmed by %s within %g s; their revert timers take them "
                    "to their own defaults - check them", ", ".join(missing), FINAL_WRITE_S)


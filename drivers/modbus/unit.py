"""One Modbus unit id behind a shared endpoint, and its silence backoff: the one place a
driver's requests go through, for SunSpec and register-map devices alike.

A unit that does not answer (timeout, a request abandoned by the caller's deadline while on
the wire, or a gateway's "no response" exception) backs off: its requests fail at once for
0.5 s, doubling up to 10 s, until one succeeds. The endpoint lock is shared, so a silent
unit probed on every poll would hold it for `timeout_s` each time and starve the healthy
units behind the same gateway or on the same bus. Requests made under `drivers.base.urgent`
(the safe state on the way down) go out regardless.

Control writes the next poll covers are verified by it (`checks`, drivers.modbus.pending):
every write here first forgets what an older write left at its registers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from drivers.base import DeviceError, is_urgent
from drivers.modbus.endpoint import GATEWAY_NO_REPLY, ModbusEndpoint, ModbusExceptionReply
from drivers.modbus.pending import PendingChecks

T = TypeVar("T")

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 10.0


class ModbusUnit:
    """Requests to one unit id through its (shared) endpoint, under the unit's backoff."""

    def __init__(self, endpoint: ModbusEndpoint, unit: int) -> None:
        self.endpoint, self.unit = endpoint, unit
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self.checks = PendingChecks()

    @property
    def _who(self) -> str:
        """Prefix of the backoff error (a device driver names its device id)."""
        return ""

    @property
    def backing_off(self) -> bool:
        return time.monotonic() < self._retry_at

    def _check_backoff(self) -> None:
        left = self._retry_at - time.monotonic()
        if left > 0 and not is_urgent():
            raise DeviceError(f"{self._who}{self.endpoint.name} unit {self.unit} backing off for "
                              f"{left:.1f} s after it did not answer")

    def _silent(self) -> None:
        self._backoff_s = min(max(self._backoff_s * 2, BACKOFF_MIN_S), BACKOFF_MAX_S)
        self._retry_at = time.monotonic() + self._backoff_s

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run one endpoint request under this unit's backoff."""
        self._check_backoff()
        try:
            result = await request()
        except ModbusExceptionReply as exc:
            if exc.code in GATEWAY_NO_REPLY:
                self._silent()
            else:
                self._backoff_s = 0.0  # the unit answered, if only with an exception
            raise
        except (DeviceError, asyncio.CancelledError):
            if self.endpoint.unanswered(self.unit):
                self._silent()
            raise
        self._backoff_s = 0.0
        return result

    async def _read_regs(self, address: int, count: int, input_registers: bool = False) -> list[int]:
        return await self._call(
            lambda: self.endpoint.read(self.unit, address, count, input_registers=input_registers))

    async def _write_regs(self, address: int, regs: list[int]) -> None:
        self.checks.forget("holding", address, len(regs))
        await self._call(lambda: self.endpoint.write(self.unit, address, regs))

    async def _read_bits(self, address: int, count: int, discrete: bool = False) -> list[bool]:
        return await self._call(
            lambda: self.endpoint.read_bits(self.unit, address, count, discrete=discrete))

    async def _write_coils(self, address: int, values: list[bool]) -> None:
        self.checks.forget("coil", address, len(values))
        await self._call(lambda: self.endpoint.write_coils(self.unit, address, values))

    def _poll_verifies(self, covered: bool) -> bool:
        """A write whose registers every poll reads (`covered`) is left to the next poll,
        except on the way down (`urgent`): the final safe state has no next poll, and must be
        confirmed before the daemon stops."""
        return covered and not is_urgent()

    async def verify_left(self, mark: int) -> None:
        """Read back the writes a poll sent at `mark` should have verified but did not cover
        (its plan changed since they were written)."""
        for e in self.checks.left(mark):
            if e.table == "coil":
                back = [int(b) for b in await self._read_bits(e.address, len(e.regs))]
            else:
                back = await self._read_regs(e.address, len(e.regs))
            self.checks.check(e.table, e.address, back, mark)

    def refused_write(self) -> str | None:
        """Why writes sent without a read-back were not taken, as their polls found since
        the last call (None: all taken); the write phase counts them as failed writes."""
        return self.checks.take_refused()

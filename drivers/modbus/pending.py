"""Writes verified by the next poll instead of a read-back request of their own.

A control write whose registers the device's poll reads anyway (SunSpec control models in
the fast set, a register map's fast control points) goes out alone; the first read of those
registers sent after it compares what it finds with what was written, the same register
for register comparison a read-back makes (a device that clamps or rounds has not taken
the command). A mismatch is not the poll's failure (the device answered: it is not stale);
it is kept for the write phase, which counts it as the failed write it is
(edge/setpoints/writer.py `collect_refused`).

Only a read sent after the write has completed checks it, and a write to the same
registers forgets what an older one left there: a newer write in between leaves nothing to
compare against until it has completed itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Expected:
    """What one write left at its registers, to be found there by the next read."""

    table: str  # "holding" or "coil"
    address: int
    regs: tuple[int, ...]
    what: str  # names the device and points, for the failure
    seq: int

    @property
    def end(self) -> int:
        return self.address + len(self.regs)


class PendingChecks:
    """The writes of one unit still to be verified, and the refusals found, not yet taken."""

    def __init__(self) -> None:
        self._expected: list[Expected] = []
        self._seq = 0
        self._refused: list[str] = []

    def mark(self) -> int:
        """Taken just before a read is sent: the writes it can verify are those up to here."""
        return self._seq

    def forget(self, table: str, address: int, count: int) -> None:
        """A write to these registers is about to go out."""
        if self._expected:
            end = address + count
            self._expected = [e for e in self._expected
                              if e.table != table or e.end <= address or e.address >= end]

    def expect(self, table: str, address: int, regs: list[int], what: str) -> None:
        """A write has completed; the next read of its registers verifies it."""
        self._seq += 1
        self._expected.append(Expected(table, address, tuple(regs), what, self._seq))

    def check(self, table: str, address: int, regs: list[int], mark: int) -> None:
        """A read of `regs` at `address`, sent at `mark`: verify the writes it covers."""
        if not self._expected:
            return
        end = address + len(regs)
        keep: list[Expected] = []
        for e in self._expected:
            if e.table != table or e.seq > mark or e.address < address or e.end > end:
                keep.append(e)
                continue
            got = [int(r) for r in regs[e.address - address:e.end - address]]
            if got != list(e.regs):
                self._refused.append(f"{e.what}: the device did not take the command: wrote "
                                     f"{list(e.regs)}, the next poll read {got}")
        self._expected = keep

    def left(self, mark: int) -> list[Expected]:
        """The writes a read sent at `mark` could have verified but did not cover."""
        return [e for e in self._expected if e.seq <= mark]

    def take_refused(self) -> str | None:
        """The refusals found since the last call, or None."""
        found, self._refused = self._refused, []
        return "; ".join(found) or None

    def clear(self) -> None:
        """The device restarted or was rediscovered: what was written may be gone."""
        self._expected.clear()

"""A SunSpec unit over Modbus: its model chain (discovery), decoded reads in as few requests
as the chain allows, and writes verified by read-back, or by the next poll where it reads
the written registers anyway (drivers.modbus.pending). The role drivers' common part
(drivers.sunspec.device) polls through it; it runs over any `ModbusEndpoint`, TCP or RTU.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import DeviceError
from drivers.modbus.endpoint import (
    ILLEGAL_ADDRESS,
    MAX_READ,
    ModbusEndpoint,
    ModbusExceptionReply,
)
from drivers.modbus.unit import ModbusUnit
from drivers.sunspec import models as sunspec


@dataclass(frozen=True, slots=True)
class _Block:
    """One read request of `read_many`: the models in it as (offset in the block, registers,
    model id)."""

    address: int
    count: int
    models: tuple[tuple[int, int, int], ...]


class SunSpecUnit(ModbusUnit):
    """A SunSpec device at one unit id: discovers its chain, reads and writes models, each
    request under the unit's silence backoff (drivers.modbus.unit)."""

    def __init__(self, endpoint: ModbusEndpoint, unit: int) -> None:
        super().__init__(endpoint, unit)
        self.models: dict[int, int] = {}  # model id -> address of its ID register
        self.common: dict[str, object] = {}
        self._sf: dict[int, dict[str, int | None]] = {}  # model id -> scale factors read
        self._planned: dict[tuple, tuple[dict[int, int], int, list[_Block]]] = {}
        # What every poll reads (the device's fast models): writes inside it skip the read-back.
        self.polled: dict[int, str | None] = {}

    async def discover(self) -> dict[int, int]:
        base = None
        for candidate in sunspec.BASES:
            try:
                marker = await self._read_regs(candidate, 2)
            except DeviceError:
                if not self.endpoint.connected or self.backing_off:
                    raise  # nothing answered: not a "no marker here"
                continue
            if tuple(marker) == sunspec.SUNS:
                base = candidate
                break
        if base is None:
            raise DeviceError(f"{self.endpoint.name} unit {self.unit}: no SunSpec marker at 40000/0/50000")
        models: dict[int, int] = {}
        addr = base + 2
        for _ in range(64):
            mid, length = await self._read_regs(addr, 2)
            if mid == sunspec.END_ID:
                break
            models[mid] = addr
            addr += 2 + length
        else:
            raise DeviceError(f"{self.endpoint.name} unit {self.unit}: model chain does not end")
        self.models = models
        self._sf.clear()
        self.checks.clear()
        if 1 in models:
            self.common = await self.read(1)
        return models

    async def read(self, model_id: int, through: str | None = None) -> dict:
        """Decoded values of one model. With `through`, only the registers from ID up to that
        point are read (one short request instead of one or two long ones, which counts on
        RS-485) once the scale factors those points need are known; the ID register is always
        read, so a chain that moved under us is still noticed."""
        return (await self.read_many({model_id: through}))[model_id]

    def _span(self, model_id: int, through: str | None) -> tuple[int, int]:
        """(address, registers) a read of the model needs (see `read`)."""
        mdef = sunspec.model(model_id)
        if model_id not in self.models:
            raise DeviceError(f"unit {self.unit}: model {model_id} not present")
        count = mdef.length + 2
        sfs = self._sf.get(model_id, {})
        if through is not None:
            end = mdef.through(through)
            needed = {p.sf for p in mdef.points.values()
                      if isinstance(p.sf, str) and p.offset + p.size <= end}
            if all(s in sfs or mdef.through(s) <= end for s in needed):
                count = end
        return self.models[model_id], count

    def _blocks(self, wanted: dict[int, str | None]) -> list[_Block]:
        """The requests that read `wanted`. Worked out once per chain and per set of scale
        factors known (what `_span` depends on): a poll asks for the same models every time."""
        key = tuple(wanted.items())
        known = sum(len(sfs) for sfs in self._sf.values())
        hit = self._planned.get(key)
        if hit is not None and hit[0] is self.models and hit[1] == known:
            return hit[2]
        spans = sorted((*self._span(mid, through), mid) for mid, through in wanted.items())
        groups: list[list[tuple[int, int, int]]] = []
        for span in spans:
            if groups and span[0] + span[1] - groups[-1][0][0] <= MAX_READ:
                groups[-1].append(span)
            else:
                groups.append([span])
        blocks = [_Block(g[0][0], max(a + n for a, n, _ in g) - g[0][0],
                         tuple((a - g[0][0], n, mid) for a, n, mid in g)) for g in groups]
        self._planned[key] = (self.models, known, blocks)  # self.models: replaced, never edited
        return blocks

    def requests(self, wanted: dict[int, str | None]) -> list[tuple[int, int]]:
        """(address, registers) of each read request `read_many(wanted)` sends."""
        return [(b.address, b.count) for b in self._blocks(wanted)]

    async def read_many(self, wanted: dict[int, str | None]) -> dict[int, dict]:
        """Several models (`read`'s `through` each) in as few requests as the chain allows:
        spans in address order are merged while the block stays within one request
        (MAX_READ registers, the endpoint's request size), models in between included - a SunSpec chain is contiguous
        and every register in it answers, so one request replaces two or three."""
        out: dict[int, dict] = {}
        for block in self._blocks(wanted):
            mark = self.checks.mark()
            try:
                regs = await self._read_regs(block.address, block.count)
            except ModbusExceptionReply as exc:
                if exc.code == ILLEGAL_ADDRESS:
                    # A known model's address no longer exists: the device restarted with a
                    # shorter chain. Rediscover rather than stay stale forever.
                    self.models = {}
                raise
            for at, count, mid in block.models:
                out[mid] = self._decode(mid, regs[at:at + count])
            self.checks.check("holding", block.address, regs, mark)
        return out

    def _covered(self, address: int, count: int) -> bool:
        """Every poll reads these registers in one request (`polled`)."""
        try:
            blocks = self._blocks(self.polled) if self.polled else []
        except DeviceError:  # a polled model is gone: the chain is rediscovered anyway
            return False
        return any(b.address <= address and address + count <= b.address + b.count
                   for b in blocks)

    def _decode(self, model_id: int, regs: list[int]) -> dict:
        if regs[0] != model_id:
            self.models = {}  # the chain moved under us (device restarted): rediscover
            raise DeviceError(f"unit {self.unit}: expected model {model_id}, found {regs[0]}")
        mdef = sunspec.model(model_id)
        values = sunspec.decode(mdef, regs, self._sf.get(model_id, {}))
        for name in sunspec.sunssf_points(mdef, len(regs)):  # None: "not implemented"
            value = values[name]
            self._sf.setdefault(model_id, {})[name] = None if value is None else int(value)
        return values

    async def write(self, model_id: int, values: dict[str, float | int],
                    verify: bool = True) -> None:
        """Write the given points of one model, each contiguous run of them in one request
        (in register order), each verified by read-back unless `verify` is False: then the
        caller checks the value in a read it makes anyway (a heartbeat). A run every poll
        reads (`polled`) is verified by the next poll instead (drivers.modbus.pending)."""
        if model_id not in self.models:
            raise DeviceError(f"unit {self.unit}: model {model_id} unknown; not (re)discovered yet")
        mdef = sunspec.model(model_id)
        points = sorted((mdef.point(n) for n in values), key=lambda p: p.offset)
        sfs = self._sf.get(model_id, {})
        if any(isinstance(p.sf, str) and sfs.get(p.sf) is None for p in points):
            await self.read(model_id)  # never scale a setpoint by a factor we have not read
            sfs = self._sf.get(model_id, {})
        runs: list[list[sunspec.Point]] = []
        for p in points:
            if runs and p.offset == runs[-1][-1].offset + runs[-1][-1].size:
                runs[-1].append(p)
            else:
                runs.append([p])
        for run in runs:
            regs: list[int] = []
            for p in run:
                if isinstance(p.sf, str) and sfs.get(p.sf) is None:
                    raise DeviceError(f"unit {self.unit}: model {model_id} reports no {p.sf}; "
                                      f"cannot scale {p.name}")
                sf = int(sfs[p.sf] or 0) if isinstance(p.sf, str) else p.sf or 0
                regs += sunspec.encode_point(p, values[p.name], sf)
            address = self.models[model_id] + run[0].offset
            await self._write_regs(address, regs)
            if not verify:
                continue
            names = [p.name for p in run]
            if self._poll_verifies(self._covered(address, len(regs))):
                self.checks.expect("holding", address, regs,
                                   f"{self.endpoint.name} unit {self.unit}: model {model_id} "
                                   f"write of {names} at {address}")
                continue
            # Verify by read-back: a device may accept a write and store something
            # else (clamp, round, ignore a point it does not implement).
            back = await self._read_regs(address, len(regs))
            if back != regs:
                raise DeviceError(
                    f"{self.endpoint.name} unit {self.unit}: model {model_id} write of "
                    f"{names} at {address} not taken: wrote {regs}, "
                    f"read back {back}")

"""The raw baseline a poll round is compared against: plain pymodbus, one read request per
device of the register block that device's poll reads, every device at once, nothing else
(no drivers, no decoding, no deadline, no heartbeats). What is left of the poll above this
is the controller's own overhead.

One client per host:port, as the drivers share one connection per endpoint: on a gateway
port the units' reads queue on that client (pymodbus runs one transaction at a time per
client), as the drivers' do on the endpoint lock.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient


@dataclass(frozen=True, slots=True)
class Target:
    """One device: where it answers and the block its poll reads."""

    host: str
    port: int
    unit: int
    address: int
    count: int


def targets_of(cycle) -> list[Target]:
    """The blocks the connected devices of a ControlCycle read on a poll (SunSpec devices
    only; each must need one request, which the comparison assumes)."""
    out = []
    for dev_id, dev in cycle.devices.items():
        requests = dev.poll_requests()
        if len(requests) != 1:
            raise ValueError(f"{dev_id}: a poll reads {requests}; the raw baseline needs one block")
        ep = dev.sunspec.endpoint
        (address, count), = requests
        out.append(Target(ep.host, ep.port, dev.sunspec.unit, address, count))
    return out


class RawPoll:
    def __init__(self, targets: list[Target], timeout_s: float = 1.0) -> None:
        self.targets = targets
        self._clients = {(t.host, t.port): AsyncModbusTcpClient(
            t.host, port=t.port, timeout=timeout_s, retries=0, reconnect_delay=0)
            for t in targets}

    async def connect(self) -> None:
        for (host, port), client in self._clients.items():
            if not await client.connect():
                raise ConnectionError(f"raw baseline: cannot connect to {host}:{port}")

    async def _read(self, t: Target) -> None:
        client = self._clients[(t.host, t.port)]
        rr = await client.read_holding_registers(t.address, count=t.count, device_id=t.unit)
        if rr.isError() or len(rr.registers) != t.count:
            raise RuntimeError(f"raw baseline: unit {t.unit} at {t.host}:{t.port}: {rr}")

    async def round(self) -> float:
        """One read per device, all at once; milliseconds until the last has answered."""
        t0 = time.perf_counter()
        await asyncio.gather(*(self._read(t) for t in self.targets))
        return (time.perf_counter() - t0) * 1e3

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

"""Coalesced SunSpec reads: a poll round crosses the wire as one read request per device
(plus the heartbeat writes the device watches), of the block the device reports
(`poll_requests`, what the benchmark's raw baseline reads), and a block read decodes what
reading each model on its own decodes."""

from __future__ import annotations

import asyncio
from collections import Counter

from test_sunspec_driver import drivers_on, poll_round, proxy, site  # noqa: F401 (fixtures)

from drivers.sunspec import models as sunspec

READ, WRITE = 0x03, 0x10


async def beats_landed(devices: dict) -> None:
    """A poll does not wait for its heartbeat writes: wait here, so each round counts its own."""
    await asyncio.gather(*(d.heartbeats_sent() for d in devices.values()))


async def test_a_poll_round_sends_one_read_per_device(site, proxy):  # noqa: F811
    ep, devices = drivers_on(proxy.port, timeout_s=2.0)
    first = await poll_round(devices)  # discovery and the slow models
    assert not [r for r in first.values() if isinstance(r, Exception)], first
    await beats_landed(devices)
    units = {d.sunspec.unit: name for name, d in devices.items()}
    for _ in range(3):
        proxy.requests.clear()
        proxy.reads.clear()
        results = await poll_round(devices)
        assert not [r for r in results.values() if isinstance(r, Exception)], results
        await beats_landed(devices)
        sent = Counter(proxy.requests)
        for unit, name in units.items():
            dev = devices[name]
            assert len(dev._fast) >= 1
            assert sent[(unit, READ)] == 1, (name, sorted(dev._fast), sent)
            assert sent[(unit, WRITE)] == len(dev._beats), (name, sent)
            # what a benchmark's raw baseline reads to compare a poll against
            assert [(a, n) for u, a, n in proxy.reads if u == unit] == dev.poll_requests()
    assert any(len(d._fast) > 1 for d in devices.values())  # something was coalesced


async def test_a_block_read_decodes_what_separate_reads_decode(site, proxy):  # noqa: F811
    ep, devices = drivers_on(proxy.port, timeout_s=2.0)
    await poll_round(devices)
    fewer = 0
    for dev in devices.values():
        unit = dev.sunspec
        chain = sorted(unit.models)
        proxy.requests.clear()
        together = await unit.read_many({mid: None for mid in chain})
        block_reads = len(proxy.requests)
        alone = {mid: await unit.read(mid) for mid in chain}
        assert block_reads <= len(chain)
        fewer += block_reads < len(chain)
        assert together.keys() == alone.keys()
        for mid in chain:
            a, b = together[mid], alone[mid]
            assert a.keys() == b.keys(), mid
            mdef = sunspec.model(mid)
            for point, value in a.items():
                if mid in (1, 120, 121, 702) or mdef.points[point].type == "sunssf":
                    assert value == b[point], (mid, point, value, b[point])
                else:  # live: the HIL moves between the reads; implemented in both or neither
                    assert (value is None) == (b[point] is None), (mid, point)
    assert fewer  # a chain short enough for one request was read in one

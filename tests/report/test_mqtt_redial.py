"""Re-dialling after a connection that did not last: paho resets its backoff on every
CONNACK, so a broker that accepts and then drops each connection (an overloaded NATS node
timing out the status message's store, a duplicate client id kicked) would be re-dialled
at the minimum delay by every site at once. The link counts such connections as failed
attempts: the delay doubles up to its maximum, drawn from its upper half so sites dropped
together spread out, and a connection that lasted starts over."""

from __future__ import annotations

import asyncio
import random

from conftest import wait_for

from edge.config import MqttConfig
from edge.report.connect import Redial
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox


def test_connections_that_end_soon_after_their_connack_double_the_delay_up_to_the_max():
    redial = Redial(1.0, 8.0, stable_s=30.0, rng=random.Random(1))
    delays = [redial.after(lived_s=4.0) for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    for d, c in zip(delays, ceilings, strict=True):
        assert c / 2 <= d <= c
    assert redial.short == 6


def test_a_connection_that_lasted_starts_the_delay_over_at_the_minimum():
    redial = Redial(1.0, 8.0, stable_s=30.0, rng=random.Random(2))
    for _ in range(5):
        redial.after(lived_s=1.0)
    assert 0.5 <= redial.after(lived_s=3600.0) <= 1.0
    assert redial.short == 0
    assert 0.5 <= redial.after(lived_s=1.0) <= 1.0  # the first short one waits the minimum


def test_sites_dropped_together_do_not_redial_together():
    delays = [Redial(1.0, 30.0, rng=random.Random(seed)).after(2.0) for seed in range(200)]
    assert min(delays) >= 0.5 and max(delays) <= 1.0
    assert len({round(d, 3) for d in delays}) > 150  # spread over the interval, not one instant


async def test_a_broker_that_drops_each_connection_after_its_connack_is_redialled_with_backoff(
        tmp_path):
    accepted = 0

    async def accept_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        nonlocal accepted
        await reader.read(1024)  # CONNECT
        writer.write(b"\x20\x02\x00\x00")  # CONNACK, accepted
        await writer.drain()
        accepted += 1
        await asyncio.sleep(0.05)
        writer.close()

    server = await asyncio.start_server(accept_then_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    box = Outbox(tmp_path / "outbox.sqlite")
    link = MqttLink(MqttConfig(host="127.0.0.1", port=port, keepalive_s=5), "site-1", box,
                    reconnect_min_s=0.05, reconnect_max_s=0.4)
    await link.start()
    try:
        await wait_for(lambda: accepted >= 5, 30.0, "five connections")
        # every connection ended at once: each counted as a failed attempt, so paho's next
        # wait starts from the doubled delay instead of its minimum
        assert link._redial.short >= 4
        assert link._client._reconnect_min_delay > 0.05
    finally:
        await link.stop(timeout=0.2)
        server.close()
        box.close()

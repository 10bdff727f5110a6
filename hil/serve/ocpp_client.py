"""The simulated charge point's side of the wire: a WebSocket client that reaches the CSMS at
ws://<ocpp.host>:<ocpp.port>/<charge_point_id> with the OCPP subprotocol of its version,
retries with backoff while the CSMS is down, boots once (a dropped connection is not a
reboot: it comes back with StatusNotifications), then delivers the device's queued events
in order and answers the CSMS's requests (hil/serve/ocpp16.py, ocpp201.py).

Events leave the queue only once the CSMS has answered them, so a transaction survives a
dropped connection."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ocpp.exceptions import OCPPError
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from drivers.quietlog import Episode
from edge.config import Config
from hil.serve.ocpp16 import Wire16
from hil.serve.ocpp201 import Wire201

log = logging.getLogger(__name__)
# The ocpp library logs every frame at INFO; ten chargers at a speed-up would drown the HIL's
# own lines. Lower this logger's level to see the frames.
WIRE_LOG = logging.getLogger("hil.ocpp.wire")
WIRE_LOG.setLevel(logging.WARNING)
WIRES = {"1.6": Wire16, "2.0.1": Wire201}
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.2, 5.0  # wall seconds between connection attempts
OPEN_TIMEOUT_S = 10.0


def csms_url(config: Config, charge_point_id: str) -> str:
    """Where a charger on this site reaches the daemon's CSMS (a wildcard listen address
    is reached on loopback)."""
    host = config.ocpp.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{config.ocpp.port}/{charge_point_id}"


async def _until(dev: Any, ready) -> None:
    """Wait until `ready()`; the device's steps wake us (a 1 s poll as a backstop)."""
    while not ready():
        dev.wake.clear()
        try:
            await asyncio.wait_for(dev.wake.wait(), 1.0)
        except TimeoutError:
            pass


async def run_charge_point(dev: Any, url: str) -> None:
    """Keep `dev` (hil.devices.evcharger.EvChargerSim) connected to the CSMS at `url` until
    cancelled."""
    version = dev.sim.ocpp_version
    cp = dev.cfg.charge_point_id
    down = Episode(log, f"charge point {cp}: no CSMS at {url} (%(reason)s); retrying",
                   f"charge point {cp}: still no CSMS at {url} after %(since)s "
                   "(%(count)s attempts; %(reason)s)",
                   f"charge point {cp}: reached the CSMS at {url} after %(since)s")
    # A message the library refuses to send, or an answer it cannot read: a bug on one
    # side; the event is dropped so the rest still flows.
    bad = Episode(log, f"charge point {cp}: a message failed and was dropped: %(reason)s",
                  f"charge point {cp}: %(more)s more messages failed in %(gap)s; last: "
                  "%(reason)s", level=logging.ERROR)
    delay = MIN_BACKOFF_S
    while True:
        await _until(dev, dev.may_connect)
        try:
            async with connect(url, subprotocols=[f"ocpp{version}"],
                               open_timeout=OPEN_TIMEOUT_S) as ws:
                down.ok()
                delay = MIN_BACKOFF_S
                if ws.subprotocol != f"ocpp{version}":
                    raise ConnectionError(f"the CSMS did not agree to ocpp{version}")
                await _session(dev, WIRES[version](dev, ws, WIRE_LOG), bad)
        except (OSError, TimeoutError, WebSocketException) as exc:
            down.failed(f"{type(exc).__name__}: {exc}")
        finally:
            dev.link_down()
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_BACKOFF_S)


async def _session(dev: Any, wire: Any, bad: Episode) -> None:
    """One connection: boot (first time only), statuses, then the queue until it closes or
    the device drops it."""
    reader = asyncio.create_task(wire.cp.start(), name=f"ocpp-read-{dev.id}")
    wire.reader = reader
    try:
        while not dev.booted:
            if not await wire.boot():
                await asyncio.sleep(MAX_BACKOFF_S)  # Pending or Rejected: ask again
        dev.link_up()
        log.info("charge point %s: connected to the CSMS (connection %d)",
                 dev.cfg.charge_point_id, dev.connections)
        await wire.send_statuses()
        while True:
            if dev.drop_requested or not dev.online:
                if dev.drop_requested:
                    dev.drop_requested = False
                    dev.drops += 1
                await wire.ws.close()
                return
            if dev.outbox:
                ev = dev.outbox[0]
                try:
                    await wire.send(ev)
                except OCPPError as exc:
                    bad.failed(f"{ev.kind}: {type(exc).__name__}: {exc}")
                dev.outbox.popleft()
                continue
            dev.wake.clear()
            waiter = asyncio.create_task(dev.wake.wait())
            await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if reader.done():
                reader.result()  # ConnectionClosed: the CSMS went away
                return
    finally:
        reader.cancel()

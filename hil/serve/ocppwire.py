"""What the OCPP 1.6 and 2.0.1 wires of a simulated charge point share: calls that give up
when the connection closes, and the device's events dispatched by kind."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from hil.devices.evsession import Event

RESPONSE_TIMEOUT_S = 15.0  # wall seconds the CSMS has to answer a call


def stamp(t: datetime) -> str:
    """An OCPP timestamp: UTC, ISO 8601 with Z."""
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Wire:
    """One connection's protocol side. Subclasses build the ocpp ChargePoint (`make_cp`)
    and implement one `_<kind>(event)` per event kind (hil/devices/evsession.py)."""

    def __init__(self, dev: Any, ws: Any, logger: logging.Logger) -> None:
        self.dev, self.ws = dev, ws
        self.cp = self.make_cp(dev, ws, logger)
        self.reader: asyncio.Task | None = None  # the task reading frames (the client's)

    def make_cp(self, dev: Any, ws: Any, logger: logging.Logger) -> Any:
        raise NotImplementedError

    async def boot(self) -> bool:
        """BootNotification; True once accepted (the device keeps the interval)."""
        raise NotImplementedError

    async def send_statuses(self) -> None:
        raise NotImplementedError

    async def call(self, payload: Any, unique_id: str | None = None) -> Any:
        """The CSMS's answer (None for a CallError); ConnectionError if the connection
        closes first."""
        task = asyncio.create_task(self.cp.call(payload, unique_id=unique_id))
        waits = {task} if self.reader is None else {task, self.reader}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        raise ConnectionError("the CSMS connection closed before it answered")

    async def send(self, ev: Event) -> None:
        await getattr(self, f"_{ev.kind}")(ev)

    def tag_refused(self, status: str | None, ev: Event) -> None:
        """An id tag the CSMS did not accept stops the transaction."""
        if status is not None and status != "Accepted" and ev.session is not None:
            self.dev.refuse(ev.session)

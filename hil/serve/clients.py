"""The simulated units that connect out instead of being served (OCPP charge points reach
the daemon's CSMS): one task each, started beside the site's servers and cancelled when the
site stops, which closes their connections."""

from __future__ import annotations

import asyncio
import logging

from edge.config import Config
from hil.devices.base import SimulatedDevice

log = logging.getLogger(__name__)


class Clients:
    def __init__(self) -> None:
        self.devices: list[SimulatedDevice] = []
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, dev: SimulatedDevice) -> None:
        self.devices.append(dev)

    def start(self, config: Config) -> None:
        for dev in self.devices:
            task = asyncio.create_task(dev.run(config), name=f"hil-client-{dev.id}")
            task.add_done_callback(_report)
            self._tasks.append(task)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _report(task: asyncio.Task[None]) -> None:
    """A client that ends on its own has a bug: say so (the rest of the site runs on)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("HIL %s stopped", task.get_name(), exc_info=task.exception())

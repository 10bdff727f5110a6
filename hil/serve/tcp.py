"""Simulated units on loopback Modbus TCP: one listening socket per (host, port) of the config,
answering for every unit id configured on it, as a gateway would."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pymodbus.server import ModbusTcpServer

from hil.devices.base import SimulatedDevice

log = logging.getLogger(__name__)


@dataclass
class Endpoint:
    """One listening socket (host, port) serving one or more unit ids."""

    host: str
    port: int
    devices: list[SimulatedDevice]
    server: ModbusTcpServer | None = None

    async def listen(self) -> None:
        server = ModbusTcpServer([d.sim_device() for d in self.devices],
                                 address=(self.host, self.port))
        ids = ", ".join(d.id for d in self.devices)
        try:
            await server.serve_forever(background=True)  # returns once create_server is done
        except RuntimeError:
            raise OSError(
                f"HIL cannot listen on {self.host}:{self.port} for device(s) {ids}; "
                "is the port taken (another HIL, a real device server)? change `port` in the config"
            ) from None
        if not (server.transport and server.transport.is_serving()):
            raise OSError(f"HIL listener on {self.host}:{self.port} ({ids}) is not serving")
        self.server = server
        log.info("HIL serving %s on %s:%d", ids, self.host, self.port)

    async def shutdown(self) -> None:
        """Stop listening; client connections drop."""
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    def drop_connections(self) -> None:
        """Close every client connection of the server; it keeps listening."""
        if self.server is None:
            return
        for handler in list(self.server.active_connections.values()):
            handler.close()

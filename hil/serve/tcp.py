"""Simulated units on loopback Modbus TCP: one listening socket per (host, port) of the config,
answering for every unit id configured on it, as a gateway would - including a gateway that
takes several requests on one connection before answering the first (a controller with
`max_in_flight` > 1).

pymodbus's own connection handler assumes one request at a time: it decodes one frame per
received segment, answers from a single "last request" slot, and clears its input buffer
whenever it sends. Requests that arrive together (pipelined) would be lost or answered with
the wrong transaction id, so the server here uses a handler that answers every frame in the
buffer, each under its own transaction id.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException, NoSuchIdException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from hil.devices.base import SimulatedDevice

log = logging.getLogger(__name__)

PIPELINE_BUFFER = 16 * 260  # 16 requests of the largest Modbus TCP frame


class _PipelinedHandler(ServerRequestHandler):
    """One client connection: every request frame received is answered, in the order the
    datastore finishes them, under the transaction id it came with."""

    def __init__(self, owner: ModbusTcpServer) -> None:
        super().__init__(owner, owner.trace_packet, owner.trace_pdu, owner.trace_connect)
        self.max_buffer_size = PIPELINE_BUFFER
        self._answering: set[asyncio.Task[None]] = set()

    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        used = 0
        while used < len(data):
            try:
                n, pdu = self.framer.handleFrame(data[used:], 0, 0)
            except ModbusIOException as exc:
                self.server_send(ExceptionResponse(
                    exc.fcode or 0, exception_code=ExcCodes.ILLEGAL_FUNCTION,
                    device_id=exc.dev_id, transaction=exc.transaction_id), addr)
                return len(data)
            used += n
            if pdu is None:
                break
            task = self.loop.create_task(self._answer(pdu, addr))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        return used

    async def _answer(self, request: ModbusPDU, addr: tuple | None) -> None:
        try:
            response = await request.datastore_update(self.server.context, request.dev_id)
        except NoSuchIdException:
            response = ExceptionResponse(request.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        except Exception:  # the datastore's failure is the device's, not the server's
            log.exception("HIL: unit %d could not answer %s", request.dev_id, request)
            response = ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)
        if response is not None:
            response.transaction_id, response.dev_id = request.transaction_id, request.dev_id
            self.server_send(response, addr)

    def send(self, data: bytes, addr: tuple | None = None) -> None:
        """Send without clearing the input buffer: it may hold the next requests already."""
        if self.transport:
            self.transport.write(data)  # type: ignore[attr-defined]


class PipelinedTcpServer(ModbusTcpServer):
    """A pymodbus TCP server whose connections answer pipelined requests."""

    def callback_new_connection(self) -> _PipelinedHandler:
        return _PipelinedHandler(self)


@dataclass
class Endpoint:
    """One listening socket (host, port) serving one or more unit ids."""

    host: str
    port: int
    devices: list[SimulatedDevice]
    server: ModbusTcpServer | None = None

    async def listen(self) -> None:
        server = PipelinedTcpServer([d.sim_device() for d in self.devices],
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

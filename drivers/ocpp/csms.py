"""The CSMS inside the daemon: one WebSocket server per listen host:port that every
OcppCharger on it shares. A charger opens ws://host:port/<charge_point_id> offering
"ocpp2.0.1" and/or "ocpp1.6" as subprotocol; the id picks its driver, the subprotocol the
handler. Unknown ids get HTTP 404 and a subprotocol we do not speak HTTP 400, before any
WebSocket exists; each is logged once per id (throttled)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Protocol
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import NegotiationError
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from drivers.ocpp.quiet import Throttle, WireLog

log = logging.getLogger(__name__)

SUBPROTOCOLS = (Subprotocol("ocpp2.0.1"), Subprotocol("ocpp1.6"))


class Attachable(Protocol):
    """What the Csms needs of a charger driver (OcppCharger)."""

    cp_id: str

    async def attach(self, connection: ServerConnection) -> None: ...


def charge_point_id(path: str) -> str:
    """The last segment of the request path (a charger configured with a longer URL such
    as /ocpp/<id> still finds us), percent-decoded."""
    return unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])


class Csms:
    """Listens while at least one charger driver is open on it. `open(charger)` registers
    the charger's id and starts the server (idempotent); `release(charger)` unregisters it
    and closes the server after the last one."""

    def __init__(self, host: str, port: int, *, ping_interval_s: float | None = 20.0) -> None:
        self.host, self.port, self.ping_interval_s = host, port, ping_interval_s
        self.chargers: dict[str, Attachable] = {}
        self._server: Server | None = None
        self._starting = asyncio.Lock()
        self._throttle = Throttle(log)
        self._ws_log = WireLog(logging.getLogger(f"{__name__}.ws"), self._throttle, "CSMS")

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def open(self, charger: Attachable) -> None:
        known = self.chargers.get(charger.cp_id)
        if known is not None and known is not charger:
            raise ValueError(f"charge point id {charger.cp_id!r} is taken on {self.url}")
        self.chargers[charger.cp_id] = charger
        await self.start()

    async def release(self, charger: Attachable) -> None:
        if self.chargers.get(charger.cp_id) is charger:
            del self.chargers[charger.cp_id]
        if not self.chargers:
            await self.close()

    async def start(self) -> None:
        async with self._starting:
            if self._server is not None:
                return
            self._server = await serve(
                self._handle, self.host, self.port, subprotocols=list(SUBPROTOCOLS),
                process_request=self._check_id, select_subprotocol=self._subprotocol,
                ping_interval=self.ping_interval_s, close_timeout=2.0, logger=self._ws_log)
            log.info("CSMS listening at %s<charge point id> (OCPP 2.0.1, 1.6J)", self.url)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
            log.info("CSMS at %s closed", self.url)

    def _check_id(self, connection: ServerConnection, request: Request) -> Response | None:
        cp_id = charge_point_id(request.path)
        if cp_id in self.chargers:
            return None
        self._throttle.say(("unknown", cp_id), logging.WARNING,
                           "CSMS: refused charge point %r from %s: no charger with that id "
                           "is configured", cp_id, _peer(connection))
        return connection.respond(HTTPStatus.NOT_FOUND, "unknown charge point id\n")

    def _subprotocol(self, connection: ServerConnection,
                     offered: Sequence[Subprotocol]) -> Subprotocol:
        """The first subprotocol in the charger's list (its preference) that we speak."""
        for proto in offered:
            if proto in SUBPROTOCOLS:
                return proto
        cp_id = charge_point_id(connection.request.path) if connection.request else "?"
        self._throttle.say(("subprotocol", cp_id), logging.WARNING,
                           "CSMS: refused charge point %r: it offers subprotocols %s; we "
                           "speak %s", cp_id, list(offered) or "none", ", ".join(SUBPROTOCOLS))
        raise NegotiationError("no OCPP version in common")

    async def _handle(self, connection: ServerConnection) -> None:
        charger = self.chargers.get(charge_point_id(connection.request.path))
        if charger is None or connection.subprotocol not in SUBPROTOCOLS:
            await connection.close(CloseCode.POLICY_VIOLATION, "unknown charge point")
            return
        await charger.attach(connection)


def _peer(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError, OSError):
        return "?"


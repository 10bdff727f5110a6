"""The operator API's server: Starlette served by uvicorn as one task of the daemon's event
loop. It only reads what the cycle and the services publish; the cycle's one call into it is
a listener that observes the cycle's duration and flags a new state (nothing awaited).

The listening socket is bound here, before uvicorn sees it: a port in use is logged and the
daemon controls on without the API (uvicorn itself would exit the process). uvicorn's own
signal handling is switched off: the daemon's handlers stop it, and this stops the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from drivers.fileerrors import FileError, read_text
from edge.api import reads, routes, views
from edge.api.metrics import Metrics
from edge.api.openapi import PREFIX
from edge.api.stream import Stream
from edge.report.history import History

if TYPE_CHECKING:
    from edge.app.daemon import Daemon

log = logging.getLogger(__name__)

TOKEN_MIN = 16  # characters of a bearer token at least
_STOP_S = 5.0  # wall seconds the server gets to close its connections on the way down


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (they would replace the daemon's)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn before capture_signals
        pass


def read_token(path: Path | None) -> str | None:
    """The bearer token in `path` (surrounding whitespace dropped); None without a file.
    An unreadable file or a short token is a configuration error naming the key."""
    if path is None:
        return None
    token = read_text(path, FileError, "api.token_file").strip()
    if len(token) < TOKEN_MIN:
        raise FileError("api.token_file", [
            f"{path}: the token has {len(token)} characters; write at least {TOKEN_MIN} "
            "(e.g. the output of `openssl rand -hex 32`)"])
    return token


def listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Api:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.cfg = daemon.config.api
        self.token = read_token(self.cfg.token_file)
        self.stream = Stream(lambda: views.state(daemon), max(1, self.cfg.max_connections // 2))
        self.metrics = Metrics(daemon, self.stream)
        self.app = routes.build(self)
        self.server: _Server | None = None
        self.port: int | None = None  # where it listens, once started
        self._task: asyncio.Task | None = None
        self._history: History | None = None
        self._history_lock = threading.Lock()
        daemon.cycle.subscribe(self._cycle_done)

    def _cycle_done(self, *_: Any) -> None:
        self.metrics.cycle_done()
        self.stream.cycle_done()

    async def start(self) -> bool:
        """Listen and serve; False (logged) when the address cannot be had."""
        host, port = self.cfg.host, self.cfg.port
        try:
            sock = listen(host, port)
        except OSError as exc:
            log.error("operator API: cannot listen on %s:%d (%s); the daemon runs without "
                      "it: free the port or set api.port", host, port, exc.strerror or exc)
            return False
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, host=host, port=self.port, log_config=None, log_level="warning",
            access_log=False, lifespan="off", http="h11", ws="none", server_header=False,
            proxy_headers=False, limit_concurrency=self.cfg.max_connections,
            timeout_graceful_shutdown=2, h11_max_incomplete_event_size=16_384)
        self.server = _Server(config)
        self.stream.start()
        self._task = asyncio.create_task(self._serve(sock), name="operator-api")
        if self.token is None:
            log.warning("operator API: no api.token_file, so every command over HTTP is "
                        "refused (401)")
        log.info("operator API at http://%s:%d%s (metrics at /metrics)", host, self.port,
                 PREFIX)
        return True

    async def _serve(self, sock: socket.socket) -> None:
        assert self.server is not None
        try:
            await self.server.serve(sockets=[sock])
        except SystemExit:  # uvicorn's answer to a failed startup: not the daemon's
            log.error("operator API: the server did not start; the daemon runs without it")
        finally:
            sock.close()

    async def stop(self) -> None:
        await self.stream.stop()  # streams end, so their connections close
        if self.server is not None:
            self.server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), _STOP_S)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        with self._history_lock:
            if self._history is not None:
                self._history.close()
                self._history = None

    async def history(self, start: datetime, end: datetime) -> dict[str, Any]:
        return await asyncio.to_thread(self._read, reads.history, start, end)

    async def today(self) -> dict[str, Any]:
        """The local day so far: the stored intervals (read in a worker) and the open one,
        taken from the meter here on the loop, where the cycle updates it."""
        d = self.daemon
        return await asyncio.to_thread(self._read, reads.today, d.config, d.clock.now(),
                                       d.meter.current())

    def _read(self, query: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        with self._history_lock:  # one connection, one query at a time
            if self._history is None:
                self._history = History.reader(self.daemon.history.path)
            return query(self._history, *args)

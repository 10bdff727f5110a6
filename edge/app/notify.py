"""systemd's notify protocol (sd_notify) over $NOTIFY_SOCKET: READY, WATCHDOG, STOPPING.

A dozen lines of socket code; not worth a dependency. Does nothing outside systemd."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        # Ping at a quarter of the watchdog period: often enough, never a flood.
        self._ping_every = usec / 4e6 if usec else 1.0
        self._last_ping = 0.0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def send(self, state: str) -> None:
        if not self._addr:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(state.encode(), self._addr)
        except OSError as exc:
            log.warning("sd_notify %r failed: %s", state, exc)

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        """Called once per completed control cycle, so a frozen cycle stops the pings."""
        now = time.monotonic()
        if now - self._last_ping >= self._ping_every:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

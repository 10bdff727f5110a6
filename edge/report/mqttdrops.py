"""Why the MQTT link went down, as the log says it: a lost network or broker, or a broker
that hands this link's session to another client with the same client id.

MQTT 5 names a take-over (DISCONNECT reason 0x8E, "Session taken over"); MQTT 3.1.1 has
no reason on the wire: the broker just closes the socket of the older connection. Two
clients with one id then take the session from each other at every reconnect, so each
connection ends within seconds of its CONNACK, again and again. A lost network looks
different: connections that lasted, then connects that fail."""

from __future__ import annotations

import logging
import time
from typing import Any

SESSION_TAKEN_OVER = 0x8E
SHORT_S = 10.0  # a connection closed this soon after its CONNACK counts towards a streak
STREAK = 2  # short-lived connections in a row before the log says "another client"


class DropWatch:
    """Fed every CONNACK and every unexpected disconnect; says at which level to log a
    drop and what, so a take-over is named once per streak instead of a warning a second."""

    def __init__(self, client_id: str, where: str, short_s: float = SHORT_S) -> None:
        self.client_id = client_id
        self.where = where
        self.short_s = short_s
        self.streak = 0  # connections in a row the broker closed within short_s
        self._since: float | None = None

    @property
    def taken_over(self) -> bool:
        """In a streak already named: reconnects are not news (logged at DEBUG)."""
        return self.streak >= STREAK

    def connected(self, now: float | None = None) -> None:
        self._since = time.monotonic() if now is None else now

    def dropped(self, reason: Any, now: float | None = None) -> tuple[int, str]:
        """(log level, message) for a disconnect that was not asked for."""
        now = time.monotonic() if now is None else now
        lasted = None if self._since is None else now - self._since
        self._since = None
        if getattr(reason, "value", None) == SESSION_TAKEN_OVER:
            self.streak = max(self.streak + 1, STREAK)
        elif lasted is not None and lasted < self.short_s:
            self.streak += 1
        else:
            self.streak = 0
        if self.streak < STREAK:
            return logging.WARNING, (
                f"connection to {self.where} lost ({reason}); reconnecting with backoff "
                "(network or broker down? reports wait in the outbox)")
        if self.streak == STREAK or self.streak % 100 == 0:
            return logging.WARNING, (
                f"the broker at {self.where} closed this link's session {self.streak} times "
                f"in a row within {self.short_s:g} s of accepting it: another client may be "
                f"using client id {self.client_id} (a second pedf-edge on this site's config, "
                "here or on another machine); stop the other one or give each its own "
                "mqtt.client_id")
        return logging.DEBUG, f"connection to {self.where} taken over again ({reason})"

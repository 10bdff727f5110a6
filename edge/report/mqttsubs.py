"""The MQTT link's subscriptions: renewed on every CONNACK (sessions are clean), and a
filter that a SUBACK refuses (0x80: a NATS server whose JetStream timed out creating the
consumer behind it, a broker's ACL) handed back to be tried again, so a site never stays
deaf to its commands without a word in the log. Also the small types the link shares."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho


def default_client_id(site_id: str) -> str:
    """Site and host: a copy of the site's config on a second machine gets an id of its
    own instead of taking this one's broker session at every reconnect."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"pedf-edge-{site_id}-{host or 'unknown'}"


class SiteLog(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[site {self.extra['site']}] {msg}", kwargs


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message from a subscription, as received (payload unparsed: the consumer judges it)."""

    topic: str
    payload: bytes


class Subscriptions:
    def __init__(self, log: logging.LoggerAdapter, qos: int = 1) -> None:
        self.filters: list[str] = []
        self.qos = qos
        self.refused = 0  # SUBACKs that refused a filter
        self._log = log
        self._mids: dict[int, str] = {}  # SUBSCRIBE mid -> filter
        self._lock = threading.Lock()  # paho's thread and the event loop's both subscribe

    def send(self, client: paho.Client, topic_filter: str) -> None:
        with self._lock:
            _, mid = client.subscribe(topic_filter, qos=self.qos)
            if mid is not None:
                self._mids[mid] = topic_filter

    def renew(self, client: paho.Client) -> None:
        for topic_filter in list(self.filters):
            self.send(client, topic_filter)

    def answered(self, mid: int, reasons: Any, where: str, retry_s: float) -> str | None:
        """The filter a SUBACK refused (to try again), else None."""
        with self._lock:
            topic_filter = self._mids.pop(mid, None)
        if topic_filter is None or not any(r.is_failure for r in reasons):
            return None
        self.refused += 1
        if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
            self._log.warning("broker %s refused the subscription to %s (%d so far); trying "
                              "again in %.0f s", where, topic_filter, self.refused, retry_s)
        return topic_filter

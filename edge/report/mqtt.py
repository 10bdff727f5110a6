"""MQTT link to the park platform: drains the outbox over QoS 1, strictly in msg_id order.

Topics are `<topic_prefix>/<site_id>/<suffix>`. `<...>/status` is retained: "online" after
every (re)connect, "offline" on a clean stop and, as the last will, when the connection
dies without a DISCONNECT.

Retransmission has one owner: the outbox (this link), never paho.
    paho 2.x keeps every unacknowledged QoS 1 message in `Client._out_messages` across a
    reconnect of the same Client object (`_messages_reconnect_reset_out` marks them DUP and
    `_handle_connack` sends them again), whatever `clean_session` says. If the link also
    re-sent from the outbox, each message in flight at a disconnect would reach the
    platform twice; if the link relied on paho alone, a process restart would still need
    the outbox path. So on every CONNACK, inside `on_connect` and before paho's own
    resend loop runs, the link calls `drop_out_messages()` and then re-sends every row
    still in the outbox, oldest first. The same path serves a broker outage and a
    process restart, paho's queue never holds more than `window` messages, and order is
    kept because nothing older can be sent after something newer.
    Cost: re-sent messages do not carry the DUP flag; the platform de-duplicates by the
    payload's msg_id, which is the real idempotency key. A message whose PUBACK was lost
    in the instant the connection broke is sent twice (QoS 1 is at-least-once); with at
    most `window` messages in flight that is rare and bounded.

Threads: paho runs its network loop in its own thread (`loop_start`). Its callbacks only
hand events to the event loop (`call_soon_threadsafe`), except `on_connect`, which also
drops paho's queue under `self._lock`. The drain loop publishes under the same lock and
only while the connection generation it has seen is paho's current one, so no publish
can slip onto a new connection before the link has reset its bookkeeping for it. All
outbox (SQLite) access stays on the event-loop thread. The drain's batching, inbound
commands and failover between brokers: docs/architecture.md ("The MQTT link").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.config import MqttConfig
from edge.report.connect import Redial, connect_failure, set_credentials
from edge.report.mqttdrops import DropWatch
from edge.report.mqttsubs import Inbound, SiteLog, Subscriptions, default_client_id
from edge.report.outbox import Outbox

log = logging.getLogger(__name__)


class MqttLink:
    def __init__(
        self,
        cfg: MqttConfig,
        site_id: str,
        outbox: Outbox,
        *,
        window: int = 100,
        delete_batch: int = 500,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        inbound_max: int = 10_000,
    ) -> None:
        if not 1 <= window <= 1000:
            raise ValueError("window must be between 1 and 1000 messages in flight")
        if delete_batch < 1:
            raise ValueError("delete_batch must be at least 1")
        self.cfg = cfg
        self.site_id = site_id
        self.outbox = outbox
        self.window = window
        self.delete_batch = delete_batch
        self.sent = 0  # PUBLISH packets handed to paho, re-sends included
        self.acked = 0  # PUBACKs that removed an outbox row

        self._log = SiteLog(log, {"site": site_id})
        self._lock = threading.Lock()
        self._paho_gen = 0  # bumped by on_connect (paho thread), read under _lock
        self._gen: int | None = None  # generation the drain loop works in; None = offline
        self._inflight: dict[int, int] = {}  # paho mid -> msg_id, current generation only
        self._acked_ids: list[int] = []  # acknowledged, awaiting removal from the outbox
        self._acks: collections.deque[tuple[int, int]] = collections.deque()  # paho -> loop
        self._acks_posted = False  # a _take_acks is on its way to the loop
        self._cursor = 0  # highest msg_id handed to paho in the current generation
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

        self.client_id = cfg.client_id or default_client_id(site_id)
        self._brokers = cfg.brokers
        self._at = 0  # index in _brokers of the broker tried or connected now (paho thread)
        self._refused = False  # the last CONNACK refused: fail over when it closes
        self.failovers = 0  # moves to the next broker
        self._drops = DropWatch(self.client_id, ", ".join(f"{h}:{p}" for h, p in self._brokers))
        self._down_reported = False  # paho thread: log the first failed connect only
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        # paho would queue (not send) beyond its in-flight limit: room for the window and
        # the status message
        self._client.max_inflight_messages_set(window + 1)
        self._client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        self._redial = Redial(reconnect_min_s, reconnect_max_s)  # set after each connection
        self._connected_at: float | None = None  # paho thread: monotonic time of the CONNACK
        self._client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        set_credentials(self._client, cfg)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._sub_retry_s = reconnect_min_s * 2
        self.subscriptions = Subscriptions(self._log, cfg.subscribe_qos)
        self.inbound: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=inbound_max)
        self.inbound_dropped = 0  # messages lost because the queue was full (a flood)

    def topic(self, suffix: str) -> str:
        return f"{self.cfg.topic_prefix}/{self.site_id}/{suffix}"

    def subscribe(self, topic_filter: str) -> None:
        """Receive `topic_filter` (at `mqtt.subscribe_qos`) into `inbound`, now and after
        every reconnect (the session is clean: the broker forgets them with the connection)."""
        self.subscriptions.filters.append(topic_filter)
        if self.connected:
            self.subscriptions.send(self._client, topic_filter)

    def _resubscribe(self, gen: int, topic_filter: str) -> None:
        if self._gen == gen:  # still the connection that refused it
            self.subscriptions.send(self._client, topic_filter)

    @property
    def connected(self) -> bool:
        return self._gen is not None

    @property
    def broker(self) -> tuple[str, int]:
        """(host, port) of the broker connected or being tried now."""
        return self._brokers[self._at]

    def _where(self) -> str:
        return "%s:%d" % self.broker

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background and start draining; returns at once, never raises
        for an unreachable broker (paho keeps retrying with backoff)."""
        if self._task is not None:
            raise RuntimeError("MqttLink already started")
        self._loop = asyncio.get_running_loop()
        self.outbox.add_listener(self._on_enqueue)
        others = f" (then {len(self._brokers) - 1} more)" if len(self._brokers) > 1 else ""
        self._log.info(
            "connecting to mqtt://%s%s as %s (%d messages waiting in the outbox)",
            self._where(), others, self.client_id, len(self.outbox),
        )
        self._client.connect_async(*self.broker, keepalive=self.cfg.keepalive_s)
        self._client.loop_start()
        self._task = asyncio.create_task(self._drain(), name=f"mqtt-drain-{self.site_id}")

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop draining, let messages in flight be acknowledged, publish retained
        "offline", disconnect cleanly and stop paho's thread. Unacknowledged messages stay
        in the outbox for the next start."""
        if self._task is None:
            return
        self.outbox.remove_listener(self._on_enqueue)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        deadline = time.monotonic() + timeout
        info = None
        if self.connected:
            info = self._client.publish(self.topic("status"), "offline", qos=1, retain=True)
        while time.monotonic() < deadline and self.connected and (
            self._inflight or (info is not None and not info.is_published())
        ):
            await self._changes(0.05)
        if info is not None and not info.is_published():
            self._log.warning("no PUBACK for the offline status within %.1f s", timeout)
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._client.drop_out_messages()
        self._take_acks()
        self._gen = None
        self._inflight.clear()
        self._remove_acked()
        self._log.info("stopped; %d messages left in the outbox", len(self.outbox))

    async def flush(self, timeout: float) -> None:
        """Wait until the outbox is empty; raise TimeoutError saying how many remain."""
        deadline = time.monotonic() + timeout
        while (left := len(self.outbox)) > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state = "connected" if self.connected else "not connected"
                raise TimeoutError(
                    f"outbox still holds {left} messages after {timeout} s ({state} to "
                    f"{self._where()})"
                )
            await self._changes(min(remaining, 0.5))

    async def _changes(self, timeout: float) -> None:
        """Wait up to `timeout` for the next change (an ack, a connect, a disconnect)."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # -- drain loop (event-loop thread) --------------------------------------------------

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._fill_window()
            if len(self._acked_ids) >= self.delete_batch or not self._inflight:
                self._remove_acked()

    def _remove_acked(self) -> None:
        """Acknowledged rows leave the outbox in one transaction."""
        if self._acked_ids:
            ids, self._acked_ids = self._acked_ids, []
            self.outbox.remove_many(ids)
            self.acked += len(ids)
            self._changed.set()

    def _fill_window(self) -> None:
        while self._gen is not None and len(self._inflight) < self.window:
            rows = self.outbox.pending(self.window - len(self._inflight), after=self._cursor)
            if not rows:
                return
            for row in rows:
                with self._lock:
                    if self._gen != self._paho_gen:
                        return  # a reconnect is being reported; _on_connected resets us
                    info = self._client.publish(row.topic, row.payload, qos=1)
                if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                    # the socket just went away: paho keeps this copy until the next
                    # CONNACK drops it, and the row is re-sent from the outbox then
                    return
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._log.error(
                        "paho refused msg_id %d (%s); will retry after the next reconnect",
                        row.msg_id, paho.error_string(info.rc),
                    )
                    return
                self._inflight[info.mid] = row.msg_id
                self._cursor = row.msg_id
                self.sent += 1

    def _on_connected(self, gen: int) -> None:
        self._take_acks()
        self._remove_acked()  # before the re-send below, which would repeat them
        self._gen = gen
        self._inflight.clear()
        self._cursor = 0  # re-send everything still in the outbox, oldest first
        self._wake.set()
        self._changed.set()

    def _on_disconnected(self) -> None:
        self._gen = None
        self._changed.set()

    def _take_acks(self) -> None:
        """Every PUBACK paho has handed over so far (flag first: see _on_publish)."""
        self._acks_posted = False
        took = False
        while self._acks:
            gen, mid = self._acks.popleft()
            if gen != self._gen:
                continue
            msg_id = self._inflight.pop(mid, None)
            if msg_id is not None:  # None: the status message
                self._acked_ids.append(msg_id)
                took = True
        if took:
            self._wake.set()
            self._changed.set()

    def _on_enqueue(self, msg_id: int) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    # -- paho callbacks (paho's thread) --------------------------------------------------

    def _post(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed since the check
                loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._log.warning("broker %s refused the connection: %s", self._where(), reason)
            self._refused = True
            return
        self._connected_at = time.monotonic()
        with self._lock:
            self._paho_gen += 1
            gen = self._paho_gen
            dropped = client.drop_out_messages()
        if dropped:
            self._log.info("dropped %d unacknowledged messages from paho's queue; "
                           "the outbox re-sends them", len(dropped))
        sock = client.socket()
        if sock is not None:  # no Nagle: a message sent right after another one would wait
            # for the broker's delayed ACK of the first (~40 ms)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.publish(self.topic("status"), "online", qos=1, retain=True)
        self.subscriptions.renew(client)
        self._down_reported = False
        self._drops.connected()
        self._log.log(logging.DEBUG if self._drops.taken_over else logging.INFO,
                      "connected to %s", self._where())
        self._post(self._on_connected, gen)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        # may run while paho holds its message mutex: no locks here
        if self._connected_at is not None:
            lived, self._connected_at = time.monotonic() - self._connected_at, None
            client.reconnect_delay_set(self._redial.after(lived), self._redial.max_s)
        if self._refused:
            self._refused = False
            self._next_broker()
        if reason.is_failure:
            self._log.log(*self._drops.dropped(reason))
            self._down_reported = True
        else:
            self._log.info("disconnected from %s", self._where())
        self._post(self._on_disconnected)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        if not self._down_reported:
            # paho calls this inside its `except OSError` around the attempt: that is the cause
            level, why = connect_failure(sys.exc_info()[1], self.cfg, self.broker)
            then = "the next broker" if len(self._brokers) > 1 else "with backoff"
            self._log.log(level, "%s; retrying %s (reports wait in the outbox)", why, then)
            self._down_reported = True
        self._next_broker()

    def _next_broker(self) -> None:
        """Point paho's next attempt at the next broker of the list (paho's thread, between
        attempts: `connect_async` only sets where to connect; paho's loop does the rest)."""
        if len(self._brokers) < 2:
            return
        self._at = (self._at + 1) % len(self._brokers)
        self.failovers += 1
        self._client.connect_async(*self.broker, keepalive=self.cfg.keepalive_s)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        # called under paho's message mutex: no locks here. One post per batch: the loop
        # clears the flag before it empties the deque, so an ack appended after that
        # emptying finds the flag clear and posts again.
        self._acks.append((self._paho_gen, mid))
        if not self._acks_posted:
            self._acks_posted = True
            self._post(self._take_acks)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        refused = self.subscriptions.answered(mid, reasons, self._where(), self._sub_retry_s)
        if refused is not None:
            self._post(self._retry_later, refused)

    def _retry_later(self, topic_filter: str) -> None:
        if self._loop is not None and self._gen is not None:
            self._loop.call_later(self._sub_retry_s, self._resubscribe, self._gen, topic_filter)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # an exception here would stop paho's network thread: nothing may escape
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = bytes(msg._topic).decode("utf-8", "replace")
        self._post(self._deliver, Inbound(topic, bytes(msg.payload)))

    def _deliver(self, item: Inbound) -> None:
        try:
            self.inbound.put_nowait(item)
        except asyncio.QueueFull:
            self.inbound_dropped += 1
            if self.inbound_dropped in (1, 10, 100) or self.inbound_dropped % 1000 == 0:
                self._log.warning("inbound queue full (%d): dropped %d messages so far (%s)",
                                  self.inbound.maxsize, self.inbound_dropped, item.topic)

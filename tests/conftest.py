"""Shared test fixtures and helpers.

Helpers (import with `from conftest import ...`):
- `free_port()`: a loopback TCP port nothing listens on right now.
- `wait_for(predicate, timeout, what)`: poll until true; fail naming `what` otherwise.
- `accepts(host, port)`: something accepts TCP connections there now.
- `Subscriber(host, port, topic, persistent=...)`: a platform stand-in recording messages.

Fixtures:
- `mosquitto`: a private MQTT broker on a free loopback port, with `.host`, `.port`,
  `.stop()` (SIGTERM and wait), `.start()` (same port again). It keeps sessions and retained
  messages across a stop/start (`persistent` is True), like a real broker restart. Falls back
  to an amqtt subprocess (`persistent` False) if the mosquitto binary is missing.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
)


_HANDED_OUT: set[int] = set()  # ports given to this test process, not yet bound by anyone


def _below_ephemeral() -> range:
    """Ports under the kernel's ephemeral range: no outgoing connection (a test's MQTT or
    Modbus client, anyone's) is ever given one, so a port picked here stays free until the
    test binds it. The whole range is left when the ephemeral range starts too low."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    return range(10000, low) if low - 10000 >= 4000 else range(0)


_PICKABLE = _below_ephemeral()
_RANDOM = random.Random(os.getpid() ^ time.time_ns())


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nobody listens on, never the same one twice in a test run. It is
    drawn at random below the ephemeral range: a port the OS hands out for `bind(0)` can be
    taken again by any outgoing connection (or another process's bind(0)) before the test
    binds it, which made HIL devices fail to listen on a busy machine."""
    for _ in range(200 if _PICKABLE else 0):
        port = _RANDOM.choice(_PICKABLE)
        if port not in _HANDED_OUT and _bindable(port):
            _HANDED_OUT.add(port)
            return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


async def wait_for(predicate: Callable[[], object], timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class _BrokerProcess:
    """A broker subprocess bound to one loopback port for the whole test."""

    host = "127.0.0.1"
    persistent = False

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.log = workdir / "broker.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            raise RuntimeError("broker already running")
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(self._command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not accepts(self.host, self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"broker did not listen on {self.host}:{self.port}; see {self.log}:\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


class MosquittoBroker(_BrokerProcess):
    persistent = True  # sessions, queued QoS 1 messages and retained ones survive stop/start

    def __init__(self, workdir: Path, port: int) -> None:
        super().__init__(workdir, port)
        (workdir / "data").mkdir(exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"user {getpass.getuser()}\n"  # only matters when run as root
            "persistence true\n"
            f"persistence_location {workdir / 'data'}/\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def _command(self) -> list[str]:
        return [MOSQUITTO, "-c", str(self.conf)]


class AmqttBroker(_BrokerProcess):
    """Fallback without mosquitto: amqtt in a subprocess; keeps nothing across a restart."""

    _SCRIPT = """
import asyncio, logging, sys
from amqtt.broker import Broker
logging.basicConfig(level=logging.WARNING)
async def main():
    cfg = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{sys.argv[1]}"}},
           "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
    broker = Broker(cfg)
    await broker.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""

    def _command(self) -> list[str]:
        return [sys.executable, "-c", self._SCRIPT, str(self.port)]


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_BrokerProcess]:
    workdir = tmp_path_factory.mktemp("broker")
    cls = MosquittoBroker if MOSQUITTO else AmqttBroker
    broker = cls(workdir, free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Subscriber:
    """A platform stand-in: records every message on a topic filter, across reconnects.

    With `persistent=True` it keeps a broker session (clean_session False, QoS 1), so
    messages the broker accepts while this subscriber is away are queued for it, including
    across a restart of a persistent broker.
    """

    def __init__(self, host: str, port: int, topic: str, *, persistent: bool = False) -> None:
        self.topic = topic
        self.messages: list[paho.MQTTMessage] = []
        self.redelivered = 0  # broker->subscriber retries (DUP set) of a message already seen
        self._seen: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason, properties):
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        key = (msg.topic, msg.payload)
        with self._lock:
            if msg.dup and key in self._seen:
                self.redelivered += 1
                return
            self._seen.add(key)
            self.messages.append(msg)

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [m.payload for m in self.messages]

    def msg_ids(self) -> list[int]:
        """msg_ids of the outboxed messages received, in arrival order (status has none)."""
        return [d["msg_id"] for _, d in self.documents()]

    def documents(self) -> list[tuple[str, dict]]:
        """(topic, JSON document) of every message that carries a msg_id."""
        out = []
        with self._lock:
            for m in self.messages:
                try:
                    doc = json.loads(m.payload)
                except ValueError:
                    continue
                if isinstance(doc, dict) and "msg_id" in doc:
                    out.append((m.topic, doc))
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

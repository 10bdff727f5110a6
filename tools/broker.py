"""Find an MQTT broker, or bring one: for demos and bench setups without a platform broker.

`ensure_broker(host, port)` returns a handle to the broker at host:port if one accepts a TCP
connection within half a second; otherwise it starts an embedded amqtt broker in this event
loop on 127.0.0.1 and a free port. Production sites point at the park platform's broker
and never need the embedded one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 0.5


@dataclass
class BrokerHandle:
    host: str
    port: int
    embedded: bool
    _broker: Any = field(default=None, repr=False)

    async def close(self) -> None:
        """Shut the embedded broker down; a no-op for an external broker."""
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()
            log.info("embedded MQTT broker on %s:%d stopped", self.host, self.port)


async def _answers(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def ensure_broker(host: str, port: int) -> BrokerHandle:
    if await _answers(host, port):
        log.info("using the MQTT broker at %s:%d", host, port)
        return BrokerHandle(host, port, embedded=False)

    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from amqtt.broker import Broker  # imported late: only demos without a broker need it

    for attempt in range(3):  # the free port may be taken between probe and bind
        bind_port = free_port()
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{bind_port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                },
            },
            loop=asyncio.get_running_loop(),
        )
        try:
            await broker.start()
            break
        except Exception as exc:  # amqtt wraps the bind OSError in BrokerError
            if attempt == 2:
                raise RuntimeError(
                    f"no MQTT broker at {host}:{port} and the embedded one failed to start: {exc}"
                ) from exc
    log.warning(
        "no MQTT broker answered at %s:%d; started an embedded one on 127.0.0.1:%d "
        "(for demos only: reports reach no platform)",
        host, port, bind_port,
    )
    return BrokerHandle("127.0.0.1", bind_port, embedded=True, _broker=broker)

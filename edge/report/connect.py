"""Reaching the MQTT broker: the credentials and TLS a client takes from `mqtt:` (the
daemon's link and the platform emulator alike), what a failed connection attempt
means, so that an untrusted certificate is not reported as an unreachable host, and how
long to wait before dialling again after a connection that did not last."""

from __future__ import annotations

import logging
import random
import socket
import ssl

import paho.mqtt.client as paho

from drivers.fileerrors import FileError, read_text
from edge.config import MqttConfig


class LinkSetupError(FileError, ValueError):
    """A credential or TLS setting of `mqtt:` that cannot be used: `source` names the
    setting, each problem the file and what is wrong with it."""


def set_credentials(client: paho.Client, cfg: MqttConfig) -> None:
    """Username/password (or a password file) and TLS; an unreadable or non-UTF-8 file is
    a configuration error naming its key and the file, not a traceback from ssl."""
    password = cfg.password
    if cfg.password_file is not None:
        password = read_text(cfg.password_file, LinkSetupError, "mqtt.password_file").strip()
    if cfg.username:
        client.username_pw_set(cfg.username, password)
    if not cfg.tls:
        return
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(cfg, key)
        if path is not None and not path.is_file():
            raise LinkSetupError(f"mqtt.{key}", [f"{path} is not a readable file"])
    try:
        client.tls_set(
            ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
            certfile=str(cfg.cert_file) if cfg.cert_file else None,
            keyfile=str(cfg.key_file) if cfg.key_file else None,
        )
    except (OSError, ValueError) as exc:
        raise LinkSetupError("mqtt", [f"TLS setup failed ({exc}); check ca_file, cert_file "
                                      "and key_file (PEM)"]) from None
    client.tls_insecure_set(cfg.tls_insecure)


def connect_failure(exc: BaseException | None, cfg: MqttConfig,
                    where: tuple[str, int] | None = None) -> tuple[int, str]:
    """The log level and the message for a failed connection attempt: what failed and what
    to check. A TLS problem will not fix itself: an error. Under TLS the handshake follows
    the TCP connect within the attempt, so a peer that hangs up then (a plain MQTT port
    reading a ClientHello does) failed the handshake."""
    host, port = where or (cfg.host, cfg.port)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return logging.ERROR, (
            f"the broker's certificate at {host}:{port} is not trusted ({exc.verify_message}): "
            "check mqtt.ca_file (with mqtt.tls: the CA that signed the broker's certificate; "
            "the system's CAs when empty) and that mqtt.host is a name the certificate holds")
    if isinstance(exc, ssl.SSLError) or (
            cfg.tls and isinstance(exc, ConnectionResetError | ConnectionAbortedError)):
        why = getattr(exc, "reason", None) or f"the broker hung up: {exc.strerror}"
        return logging.ERROR, (
            f"TLS handshake with the broker at {host}:{port} failed ({why}): "
            f"check that port {port} is the broker's TLS listener, and mqtt.cert_file and "
            "mqtt.key_file if it asks for a client certificate")
    if isinstance(exc, ConnectionRefusedError):
        return logging.WARNING, (
            f"the broker at {host}:{port} refused the connection (nothing listens there): "
            "check that the broker runs and mqtt.host and mqtt.port")
    if isinstance(exc, socket.gaierror):
        return logging.WARNING, (
            f"cannot resolve the broker's name {host!r} ({exc.strerror}): check mqtt.host "
            "and the DNS")
    why = f" ({getattr(exc, 'strerror', None) or exc})" if exc is not None else ""
    return logging.WARNING, (f"cannot reach the broker at {host}:{port}{why}: check the "
                             "network path to it and mqtt.host")


class Redial:
    """The delay before the next connection attempt after a connection ended.

    paho backs off between failed attempts, but a CONNACK resets its delay: a broker that
    accepts a connection and drops it seconds later (an overloaded NATS node whose
    JetStream store of the `status` message times out closes the connection; so does a
    broker kicking a duplicate client id) is re-dialled every `min_s`, by every site at
    once, which is what keeps it overloaded. Here a connection that ended within
    `stable_s` of its CONNACK counts as a failed attempt: the delay doubles with each one
    in a row, up to `max_s`, and one that lasted resets it. Every delay is drawn from its
    upper half (`rng`), so sites dropped together do not come back together."""

    def __init__(self, min_s: float, max_s: float, stable_s: float = 30.0,
                 rng: random.Random | None = None) -> None:
        self.min_s, self.max_s, self.stable_s = min_s, max_s, stable_s
        self.short = 0  # connections in a row that ended within stable_s
        self._rng = rng or random.Random()

    def after(self, lived_s: float) -> float:
        """Seconds to wait before re-dialling, after a connection that lived `lived_s`."""
        self.short = self.short + 1 if lived_s < self.stable_s else 0
        ceiling = min(self.max_s, self.min_s * 2 ** max(self.short - 1, 0))
        return ceiling * self._rng.uniform(0.5, 1.0)

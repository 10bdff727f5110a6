"""TLS and credentials of the MQTT link against a real Mosquitto that demands both: a client
certificate signed by the site CA (mutual TLS) and a username with its password."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import MOSQUITTO, MosquittoBroker, free_port, wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge import config as config_mod
from edge.config import MqttConfig
from edge.report.connect import LinkSetupError
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox

ROOT = Path(__file__).resolve().parents[2]
PASSWD = shutil.which("mosquitto_passwd")
pytestmark = pytest.mark.skipif(not (MOSQUITTO and PASSWD), reason="needs mosquitto and "
                                "mosquitto_passwd (apt-get install mosquitto)")


def _pem(path: Path, obj) -> Path:
    if isinstance(obj, ec.EllipticCurvePrivateKey):
        data = obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    else:
        data = obj.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(data)
    return path


def _cert(name: str, key, issuer_name, issuer_key, *, ca: bool = False, ip: str | None = None):
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path) -> dict[str, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site CA")])
    ca = _cert("site CA", ca_key, ca_name, ca_key, ca=True)
    out = {"ca": _pem(tmp_path / "ca.pem", ca)}
    for who, ip in (("server", "127.0.0.1"), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        out[f"{who}_key"] = _pem(tmp_path / f"{who}.key", key)
        out[f"{who}_cert"] = _pem(tmp_path / f"{who}.pem", _cert(who, key, ca_name, ca_key, ip=ip))
    return out


@pytest.fixture
def tls_broker(tmp_path_factory, pki):
    workdir = tmp_path_factory.mktemp("tls-broker")
    passwords = workdir / "passwd"
    subprocess.run([PASSWD, "-c", "-b", str(passwords), "site-1", "s3cret"], check=True,
                   capture_output=True)
    broker = MosquittoBroker(workdir, free_port())
    broker.conf.write_text(broker.conf.read_text().replace(
        "allow_anonymous true\n",
        f"allow_anonymous false\npassword_file {passwords}\ncafile {pki['ca']}\n"
        f"certfile {pki['server_cert']}\nkeyfile {pki['server_key']}\n"
        "require_certificate true\n"))
    broker.start()
    yield broker
    broker.stop()


def _cfg(broker, pki, tmp_path, **over) -> MqttConfig:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    base = dict(host=broker.host, port=broker.port, keepalive_s=5, username="site-1",
                password_file=secret, tls=True, ca_file=pki["ca"], cert_file=pki["client_cert"],
                key_file=pki["client_key"])
    return MqttConfig(**{**base, **over})


async def test_link_delivers_over_mutual_tls_with_a_password_file(tls_broker, pki, tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite")
    link = MqttLink(_cfg(tls_broker, pki, tmp_path), "site-1", box)
    await link.start()
    try:
        box.enqueue(link.topic("telemetry"), {"n": 1})
        await wait_for(lambda: link.connected, 10, "the TLS connection")
        await link.flush(10)
        assert link.acked == 1
    finally:
        await link.stop()
        box.close()


@pytest.mark.parametrize("over", [
    {"cert_file": None, "key_file": None},  # no client certificate
    {"password_file": None, "password": "wrong"},
])
async def test_link_without_certificate_or_right_password_never_connects(
        tls_broker, pki, tmp_path, over):
    box = Outbox(tmp_path / "outbox.sqlite")
    link = MqttLink(_cfg(tls_broker, pki, tmp_path, **over), "site-1", box,
                    reconnect_min_s=0.2, reconnect_max_s=0.5)
    await link.start()
    try:
        box.enqueue(link.topic("telemetry"), {"n": 1})
        with pytest.raises(AssertionError):
            await wait_for(lambda: link.connected, 1.0, "a connection the broker must refuse")
        assert len(box) == 1  # waits on disk for a link that is allowed in
    finally:
        await link.stop()
        box.close()


async def _first_failure(cfg: MqttConfig, tmp_path: Path, caplog) -> logging.LogRecord:
    """The link's log line for its first failed connection attempt."""
    caplog.set_level(logging.WARNING, logger="edge.report.mqtt")
    box = Outbox(tmp_path / "outbox.sqlite")
    link = MqttLink(cfg, "site-1", box, reconnect_min_s=0.2, reconnect_max_s=0.5)
    await link.start()
    try:
        await wait_for(lambda: caplog.records, 10, "a failed connection attempt logged")
        assert not link.connected
        return caplog.records[0]
    finally:
        await link.stop()
        box.close()


async def test_an_untrusted_broker_certificate_is_not_called_unreachable(
        tls_broker, pki, tmp_path, caplog):
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CA")])
    other_ca = _pem(tmp_path / "other-ca.pem",
                    _cert("another CA", other_key, other_name, other_key, ca=True))
    record = await _first_failure(_cfg(tls_broker, pki, tmp_path, ca_file=other_ca), tmp_path,
                                  caplog)
    msg = record.getMessage()
    assert record.levelno == logging.ERROR
    assert f"the broker's certificate at 127.0.0.1:{tls_broker.port} is not trusted" in msg
    assert "check mqtt.ca_file" in msg and "cannot reach" not in msg


async def test_a_plain_broker_port_under_tls_is_a_failed_handshake(mosquitto, pki, tmp_path,
                                                                   caplog):
    cfg = MqttConfig(host=mosquitto.host, port=mosquitto.port, tls=True, ca_file=pki["ca"])
    msg = (await _first_failure(cfg, tmp_path, caplog)).getMessage()
    assert f"TLS handshake with the broker at 127.0.0.1:{mosquitto.port} failed" in msg
    assert f"check that port {mosquitto.port} is the broker's TLS listener" in msg


async def test_a_refused_connection_says_nothing_listens(pki, tmp_path, caplog):
    port = free_port()
    record = await _first_failure(MqttConfig(host="127.0.0.1", port=port), tmp_path, caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        f"[site site-1] the broker at 127.0.0.1:{port} refused the connection (nothing "
        "listens there): check that the broker runs and mqtt.host and mqtt.port; retrying")


def test_a_password_file_that_is_not_utf8_is_refused_naming_it(tmp_path):
    secret = tmp_path / "mqtt-password"
    secret.write_bytes("s3cr\xe9t\n".encode("latin-1"))
    with pytest.raises(LinkSetupError) as err:
        MqttLink(MqttConfig(username="u", password_file=secret), "s", Outbox(tmp_path / "o.sqlite"))
    assert str(err.value) == (f"mqtt.password_file: {secret}: not UTF-8 text (byte 0xe9 at "
                              "offset 4); save the file as UTF-8")


def test_run_with_a_password_file_that_is_not_utf8_exits_2(tmp_path):
    secret = tmp_path / "mqtt-password"
    secret.write_bytes(b"\xff\xfe")
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    data["storage"] = {"dir": str(tmp_path / "var")}
    data["mqtt"].update(username="site-1", password_file=str(secret))
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "-m", "edge.cli", "run", "-c", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "mqtt.password_file: invalid setting (1 problem(s)):" in result.stderr
    assert f"{secret}: not UTF-8 text" in result.stderr and "Traceback" not in result.stderr


def test_tls_settings_are_checked_where_they_are_written(tmp_path, pki):
    def problems(mqtt: dict) -> list[str]:
        data = {"site": {"id": "s"}, "tariff": {"periods": [{"name": "a", "start": "00:00",
                                                             "end": "00:00", "price": 1}]},
                "devices": [{"id": "m", "host": "127.0.0.1", "port": 502, "role": "meter"}], "mqtt": mqtt}
        with pytest.raises(config_mod.ConfigError) as err:
            config_mod.parse(data)
        return err.value.problems

    assert "mutual TLS needs both cert_file and key_file" in problems(
        {"tls": True, "cert_file": "c.pem"})[0]
    assert "only apply with tls: true" in problems({"ca_file": "ca.pem"})[0]
    assert "not both" in problems({"password": "x", "password_file": "p"})[0]
    assert "wildcards" in problems({"topic_prefix": "pedf/#"})[0]
    assert MqttConfig().tls_insecure is False
    with pytest.raises(ValueError, match="mqtt.ca_file: .*missing.pem is not a readable file"):
        MqttLink(MqttConfig(tls=True, ca_file=tmp_path / "missing.pem"), "s",
                 Outbox(tmp_path / "o.sqlite"))
    with pytest.raises(ValueError, match="mqtt.password_file: cannot read"):
        MqttLink(MqttConfig(username="u", password_file=tmp_path / "nope"), "s",
                 Outbox(tmp_path / "o2.sqlite"))

"""The MQTT link's identity: a client id that names the host, and a log that tells a
broker handing the session to another client with the same id apart from a lost network
(real Mosquitto, real clients)."""

from __future__ import annotations

import logging
import socket

import paho.mqtt.client as paho
import pytest
from conftest import wait_for
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig
from edge.report.mqtt import MqttLink
from edge.report.mqttdrops import DropWatch
from edge.report.outbox import Outbox

KICK = "another client may be using client id"


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


def test_default_client_id_names_site_and_host_and_a_configured_one_wins(outbox):
    link = MqttLink(MqttConfig(), "site-1", outbox)
    assert link.client_id.startswith("pedf-edge-site-1-")
    assert socket.gethostname().split(".")[0] in link.client_id
    assert MqttLink(MqttConfig(client_id="mine"), "site-1", outbox).client_id == "mine"


def kick_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if KICK in r.getMessage()]


async def test_a_second_client_with_the_same_id_is_named_in_the_log(mosquitto, outbox, caplog):
    caplog.set_level(logging.INFO, logger="edge.report.mqtt")
    link = MqttLink(MqttConfig(host=mosquitto.host, port=mosquitto.port, client_id="dup-1"),
                    "site-1", outbox, reconnect_min_s=0.1, reconnect_max_s=0.5)
    await link.start()
    other = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="dup-1")
    other.reconnect_delay_set(0.1, 0.5)
    try:
        await wait_for(lambda: link.connected, 10, "the link connected")
        other.connect_async(mosquitto.host, mosquitto.port)
        other.loop_start()  # each reconnect takes the session from the other one
        await wait_for(lambda: kick_logs(caplog), 30, "the take-over named in the log")
    finally:
        other.loop_stop()
        other.disconnect()
        await link.stop()
    msg = kick_logs(caplog)[0]
    assert "dup-1" in msg and f"{mosquitto.host}:{mosquitto.port}" in msg
    assert "mqtt.client_id" in msg and "stop the other one" in msg


async def test_a_broker_restart_is_a_lost_connection_not_a_take_over(mosquitto, outbox, caplog):
    caplog.set_level(logging.INFO, logger="edge.report.mqtt")
    link = MqttLink(MqttConfig(host=mosquitto.host, port=mosquitto.port), "site-1", outbox,
                    reconnect_min_s=0.1, reconnect_max_s=0.5)
    await link.start()
    try:
        await wait_for(lambda: link.connected, 10, "the link connected")
        mosquitto.stop()
        await wait_for(lambda: not link.connected, 10, "the link down")
        mosquitto.start()
        await wait_for(lambda: link.connected, 30, "the link back")
    finally:
        await link.stop()
    assert any("lost" in r.getMessage() and "network or broker down" in r.getMessage()
               for r in caplog.records)
    assert not kick_logs(caplog)


def test_drop_watch_counts_short_connections_and_names_mqtt5_take_over():
    watch = DropWatch("id-1", "broker:1883", short_s=10)
    lost = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
    watch.connected(now=0.0)
    level, msg = watch.dropped(lost, now=100.0)  # a connection that lasted: the network
    assert level == logging.WARNING and "network or broker down" in msg
    watch.connected(now=101.0)
    assert "network" in watch.dropped(lost, now=102.0)[1]  # one short one proves nothing
    watch.connected(now=103.0)
    level, msg = watch.dropped(lost, now=104.0)
    assert level == logging.WARNING and KICK + " id-1" in msg
    watch.connected(now=105.0)
    assert watch.dropped(lost, now=106.0)[0] == logging.DEBUG  # said once per streak
    watch.connected(now=107.0)
    assert "network" in watch.dropped(lost, now=200.0)[1]  # a lasting one ends the streak
    watch.connected(now=201.0)
    taken = ReasonCode(PacketTypes.DISCONNECT, "Session taken over")
    assert KICK in watch.dropped(taken, now=500.0)[1]  # MQTT 5 says so: at once

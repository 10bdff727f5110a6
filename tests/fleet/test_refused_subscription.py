"""The link's subscription bookkeeping (unit, fake paho client): a SUBACK that refuses a
filter (0x80: a NATS server whose JetStream timed out creating the consumer, an ACL) hands
the filter back to be tried again and is counted; a granted one is forgotten."""

from __future__ import annotations

import logging

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from edge.config import MqttConfig
from edge.report.mqttsubs import Subscriptions


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def subscribe(self, topic_filter: str, qos: int) -> tuple[int, int]:
        self.sent.append(topic_filter)
        self.qos = qos
        return 0, len(self.sent)


def test_a_refused_filter_comes_back_for_a_retry_and_a_granted_one_does_not():
    subs = Subscriptions(logging.LoggerAdapter(logging.getLogger("t"), {}))
    subs.filters += ["a/cmd/+", "g/cmd/+"]
    client = FakeClient()
    subs.renew(client)
    assert client.sent == ["a/cmd/+", "g/cmd/+"]
    granted = [ReasonCode(PacketTypes.SUBACK, identifier=1)]
    refused = [ReasonCode(PacketTypes.SUBACK, identifier=0x80)]
    assert subs.answered(1, granted, "b:1", 2.0) is None
    assert subs.answered(2, refused, "b:1", 2.0) == "g/cmd/+"
    assert subs.answered(2, refused, "b:1", 2.0) is None  # answered once per SUBSCRIBE
    assert subs.refused == 1


def test_subscriptions_go_out_at_the_configured_qos():
    """QoS 0 on a NATS fleet: no JetStream consumer per site and connect; QoS 1 otherwise."""
    log = logging.LoggerAdapter(logging.getLogger("t"), {})
    for qos in (0, 1):
        subs, client = Subscriptions(log, qos), FakeClient()
        subs.filters.append("a/cmd/+")
        subs.renew(client)
        assert client.qos == qos
    assert MqttConfig().subscribe_qos == 1
    with pytest.raises(ValidationError, match="subscribe_qos"):
        MqttConfig(subscribe_qos=2)

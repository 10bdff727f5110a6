"""`mqtt.hosts`, `mqtt.broker: nats` and `vpp.groups` in the config, and what `check` says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from edge.app.daemon import topic_level
from edge.config import MqttConfig
from hil.fleet.brokers import node_config

ROOT = Path(__file__).resolve().parents[2]


def test_hosts_give_the_brokers_in_order():
    cfg = MqttConfig(hosts=["a:1883", "10.0.0.2:1884"])
    assert cfg.brokers == [("a", 1883), ("10.0.0.2", 1884)]
    assert MqttConfig(host="b", port=1).brokers == [("b", 1)]


@pytest.mark.parametrize(("kw", "msg"), [
    ({"hosts": ["a"]}, "is not host:port"),
    ({"hosts": ["a:99999"]}, "is not host:port"),
    ({"hosts": ["a:1", "a:1"]}, "listed once"),
    ({"hosts": ["a:1"], "host": "b"}, "not both"),
    ({"broker": "nats", "topic_prefix": "pedf.v1"}, "may not hold '.'"),
    ({"broker": "nats", "topic_prefix": "pedf/v 1"}, "may not hold '.'"),
])
def test_bad_broker_settings_are_refused_naming_the_fix(kw, msg):
    with pytest.raises(ValidationError, match=msg):
        MqttConfig(**kw)


def test_event_ids_become_nats_safe_topic_levels():
    assert topic_level("oadr.ev*1>", nats=True) == "oadr_ev_1_"
    assert topic_level("oadr.ev", nats=False) == "oadr.ev"


def test_check_names_the_failover_list_and_the_nats_rules(tmp_path):
    data = yaml.safe_load(open("configs/park.yaml"))
    data["mqtt"] = {"hosts": ["127.0.0.1:4001", "127.0.0.1:4002"], "broker": "nats"}
    data.setdefault("vpp", {})["groups"] = ["east-1"]
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    out = subprocess.run([sys.executable, "-m", "edge.cli", "check", "-c", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "mqtt: 127.0.0.1:4001, 127.0.0.1:4002" in out.stdout
    assert "MQTT 3.1.1, QoS 1" in out.stdout
    assert "failover: 2 brokers" in out.stdout
    assert "broker nats: topics without '.'" in out.stdout
    assert "pedf/v1/group/east-1/cmd/+" in out.stdout
    data["mqtt"]["topic_prefix"] = "pedf.v1"
    path.write_text(yaml.safe_dump(data))
    bad = subprocess.run([sys.executable, "-m", "edge.cli", "check", "-c", str(path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert "topic_prefix 'pedf.v1': with broker: nats" in bad.stderr


def _doc_block(fence: str, after: str) -> str:
    text = (ROOT / "docs/vpp-fleet.md").read_text()
    start = text.index(fence + "\n", text.index(after)) + len(fence) + 1
    return text[start:text.index("```", start)]


def test_the_documented_node_config_is_the_one_the_fleet_tests_run():
    routes = [f"broker-{i}.vpp:6222" for i in (1, 2, 3)]
    ports = {"client": 4222, "http": 8222, "route": 6222, "mqtt": 1883}
    assert _doc_block("```", "## The broker cluster") == node_config(
        "n1", "0.0.0.0", ports, routes, "vpp", "/var/lib/nats/jetstream")


def test_the_documented_site_settings_validate_for_a_nats_fleet():
    cfg = MqttConfig(**yaml.safe_load(_doc_block("```yaml", "**Failover.**"))["mqtt"])
    assert cfg.broker == "nats" and cfg.subscribe_qos == 0 and len(cfg.brokers) == 3

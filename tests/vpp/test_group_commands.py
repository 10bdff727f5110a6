"""Group commands: one message to a fleet group, each site taking its share (given by the
aggregator, or pro rata to the flex it declared), judged and acknowledged as its own."""

from __future__ import annotations

import json

import paho.mqtt.client as paho
import pytest
from site_harness import running_site
from test_mqtt_commands import LOAD_KW, SPEED, night_site, platform_for, settle_at

from edge.vpp.commands.group import group_of, site_command
from edge.vpp.commands.parse import Rejected

DECLARED = {"up_kw": 50.0, "down_kw": 20.0}


def share(doc: dict, site: str = "s1", declared: dict | None = DECLARED):
    return site_command("g1", "dispatch", json.dumps(doc).encode(), site, declared, 4096)


def test_pro_rata_share_is_the_fleet_target_times_the_sites_part_of_the_declared_flex():
    cmd = share({"cmd_id": "f-1", "duration_s": 600, "direction": "reduce",
                 "rule": "pro_rata_flex", "fleet_kw": 300, "fleet_flex_kw": 1000})
    assert cmd.extra == {"group": "g1", "share_kw": 15.0}
    assert json.loads(cmd.payload) == {"cmd_id": "f-1", "grid_delta_kw": -15.0,
                                       "duration_s": 600}
    up = share({"cmd_id": "f-2", "duration_s": 600, "direction": "increase",
                "rule": "pro_rata_flex", "fleet_kw": 100, "fleet_flex_kw": 100})
    assert json.loads(up.payload)["grid_delta_kw"] == 20.0  # capped at its own down_kw


def test_given_shares_address_only_the_sites_named():
    doc = {"cmd_id": "f-3", "duration_s": 600, "direction": "reduce",
           "shares_kw": {"s1": 12.5, "s2": 3}}
    assert json.loads(share(doc).payload)["grid_delta_kw"] == -12.5
    assert share(doc, site="s9") is None


@pytest.mark.parametrize(("doc", "reason"), [
    ({"cmd_id": "x", "duration_s": 60, "direction": "reduce"}, "shares_kw or rule"),
    ({"cmd_id": "x", "duration_s": 60, "direction": "reduce", "rule": "pro_rata_flex"},
     "fleet_kw and fleet_flex_kw"),
    ({"cmd_id": "x", "duration_s": 60, "direction": "down", "shares_kw": {}}, "direction"),
])
def test_a_malformed_group_command_is_rejected_with_the_reason(doc, reason):
    with pytest.raises(Rejected, match=reason):
        share(doc)


def test_the_rule_needs_a_declared_flex():
    with pytest.raises(Rejected, match="no flex message yet"):
        share({"cmd_id": "x", "duration_s": 60, "direction": "reduce",
               "rule": "pro_rata_flex", "fleet_kw": 1, "fleet_flex_kw": 2}, declared=None)


def test_group_topics_are_recognised_only_in_their_exact_form():
    assert group_of("pedf/v1/group/east/cmd/dispatch", "pedf/v1") == ("east", "dispatch")
    assert group_of("pedf/v1/east/cmd/dispatch", "pedf/v1") is None
    assert group_of("pedf/v1/group/east/x/dispatch", "pedf/v1") is None


async def test_a_site_takes_its_pro_rata_share_of_a_group_dispatch(tmp_path, mosquitto):
    data = night_site(tmp_path, mosquitto.port, groups=["east"], flex_s=5)
    async with running_site(data, mosquitto, SPEED) as run:
        p = await platform_for(run)
        try:
            await settle_at(run, LOAD_KW, 0.0)
            assert await p.wait(lambda: p.flex, 20)
            assert await p.wait(lambda: run.daemon.commands.declared is not None, 20)
            offered = run.daemon.commands.declared["up_kw"]
            assert offered > 20
            cmd = {"cmd_id": "g-1", "duration_s": 3600, "direction": "reduce",
                   "rule": "pro_rata_flex", "fleet_kw": 250, "fleet_flex_kw": 1000}
            pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
            pub.connect(mosquitto.host, mosquitto.port)
            pub.loop_start()
            pub.publish("pedf/v1/group/east/cmd/dispatch", json.dumps(cmd), qos=1).wait_for_publish(5)
            pub.publish("pedf/v1/group/west/cmd/dispatch", json.dumps(cmd), qos=1).wait_for_publish(5)
            pub.disconnect()
            pub.loop_stop()
            ack = await p.ack("g-1", "accepted", 10)
            assert ack is not None, p.acks
            assert ack["group"] == "east"
            assert ack["share_kw"] == pytest.approx(offered / 4, abs=0.01)
            assert ack["grid_target_kw"] == pytest.approx(LOAD_KW - offered / 4, abs=1.0)
            await settle_at(run, LOAD_KW - offered / 4, offered / 4)
            assert len(p.acks_for("g-1")) == 1  # the other group's copy was not for it
        finally:
            p.close()

"""Commands over the operator API take the MQTT commands' path: the same judge, store and
acks (on MQTT as usual, and in the HTTP answer), behind the bearer token."""

from __future__ import annotations

import asyncio

from api_helpers import AUTH, check, client, with_api
from conftest import wait_for
from site_harness import running_site, site_dict

SPEED = 60.0
DISPATCH = "/api/v1/commands/dispatch"


async def state_until(c, ok, what: str, timeout: float = 30.0) -> dict:
    async def poll() -> dict:
        while True:
            doc = (await c.get("/api/v1/state")).json()
            if ok(doc):
                return doc
            await asyncio.sleep(0.05)
    try:
        return await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def mqtt_acks(run, cmd_id: str) -> list[dict]:
    return [d for topic, d in run.sub.documents()
            if topic.endswith("/ack") and d.get("cmd_id") == cmd_id]


async def test_a_dispatch_with_the_token_is_acked_over_http_and_mqtt_and_the_bounds_follow(
        tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port)
    port = with_api(data, tmp_path)
    async with running_site(data, mosquitto, SPEED) as run, client(port) as c:
        openapi = (await c.get("/api/v1/openapi.json")).json()
        before = (await c.get("/api/v1/state")).json()
        assert before["bounds"]["import_limit_kw"] == 80.0 and before["instructions"] == []

        r = await c.post(DISPATCH, headers=AUTH, json={
            "cmd_id": "op-cap", "duration_s": 3600, "grid_max_kw": 30})
        assert r.status_code == 200, r.text
        check(openapi, DISPATCH, 200, r.json(), "post")
        ack = r.json()["ack"]
        assert (ack["cmd_id"], ack["status"], ack["grid_max_kw"]) == ("op-cap", "accepted", 30)
        await wait_for(lambda: mqtt_acks(run, "op-cap"), 30, "the ack on MQTT")
        assert mqtt_acks(run, "op-cap") == [ack], "the HTTP answer is the MQTT ack"

        during = await state_until(c, lambda s: s["bounds"]["import_limit_kw"] == 30.0,
                                   "the decision to take the dispatch's bound")
        assert [(i["id"], i["source"], i["grid_max_kw"]) for i in during["instructions"]] == [
            ("park:op-cap", "park", 30.0)]

        r = await c.post("/api/v1/commands/cancel", headers=AUTH, json={
            "cmd_id": "op-cap-end", "target_cmd_id": "op-cap"})
        assert r.status_code == 200, r.text
        check(openapi, "/api/v1/commands/cancel", 200, r.json(), "post")
        assert [(a["cmd_id"], a["status"]) for a in r.json()["acks"]] == [
            ("op-cap", "done"), ("op-cap-end", "accepted"), ("op-cap-end", "done")]
        await state_until(c, lambda s: s["bounds"]["import_limit_kw"] == 80.0,
                          "the site's own limit back after the cancel")

        r = await c.post("/api/v1/commands/mode", headers=AUTH, json={
            "cmd_id": "op-mode", "mode": "local"})
        assert r.status_code == 200 and r.json()["ack"]["mode"] == "local"
        r = await c.post(DISPATCH, headers=AUTH, json={
            "cmd_id": "op-cap-2", "duration_s": 600, "grid_max_kw": 30})
        assert r.status_code == 409, "the site refuses a dispatch in mode local"
        check(openapi, DISPATCH, 409, r.json(), "post")
        assert "mode local" in r.json()["ack"]["reason"]
        await wait_for(lambda: mqtt_acks(run, "op-cap-2"), 30, "the rejection on MQTT")


async def test_commands_without_the_token_off_the_schema_or_too_long_are_refused(
        tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port)
    port = with_api(data, tmp_path, max_body_bytes=1024)
    async with running_site(data, mosquitto, SPEED) as run, client(port) as c:
        openapi = (await c.get("/api/v1/openapi.json")).json()
        good = {"cmd_id": "op-noauth", "duration_s": 600, "grid_max_kw": 30}
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"},
                        {"Authorization": AUTH["Authorization"].replace("Bearer", "Basic")}):
            r = await c.post(DISPATCH, headers=headers, json=good)
            assert r.status_code == 401 and r.content == b"", headers
            assert r.headers["www-authenticate"] == "Bearer"

        r = await c.post(DISPATCH, headers={**AUTH, "Content-Type": "application/json"},
                         content=b'{"cmd_id": "op-broken", ')
        assert r.status_code == 422
        check(openapi, DISPATCH, 422, r.json(), "post")
        assert r.json()["detail"].startswith("not valid JSON")

        r = await c.post(DISPATCH, headers=AUTH, json={
            "cmd_id": "op-bad", "duration_s": 600, "grid_max_kw": "lots"})
        assert r.status_code == 422
        check(openapi, DISPATCH, 422, r.json(), "post")
        assert "grid_max_kw" in r.json()["detail"]
        assert r.json()["ack"]["status"] == "rejected"

        r = await c.post(DISPATCH, headers=AUTH, json={**good, "cmd_id": "op-long",
                                                       "pad": "x" * 2000})
        assert r.status_code == 413
        check(openapi, DISPATCH, 413, r.json(), "post")

        r = await c.post("/api/v1/commands/reboot", headers=AUTH, json=good)
        assert r.status_code == 404

        await wait_for(lambda: mqtt_acks(run, "op-bad"), 30, "the rejection on MQTT")
        # One queue, in order: anything acked for the earlier requests would be there by now.
        assert mqtt_acks(run, "op-noauth") == [] and mqtt_acks(run, "op-long") == []
        assert (await c.get("/api/v1/state")).json()["instructions"] == []

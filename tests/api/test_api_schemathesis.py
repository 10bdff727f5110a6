"""Schemathesis against the served OpenAPI document: generated requests to every GET
endpoint (the history's query included) get answers its checks accept - no server error,
documented status and content type, bodies that fit the schemas, valid queries accepted."""

from __future__ import annotations

import asyncio

import schemathesis
from api_helpers import client, with_api
from hypothesis import HealthCheck, given, settings
from site_harness import running_site, site_dict

SPEED = 60.0
SKIP = ("/api/v1/stream",)  # endless by design


def fuzz(doc: dict, base_url: str) -> list[str]:
    """Runs in a worker thread: schemathesis' client blocks, the daemon shares the loop."""
    schema = schemathesis.openapi.from_dict(doc)
    tried = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.method.upper() != "GET" or op.path in SKIP:
            continue

        @settings(max_examples=15, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def call(case) -> None:
            case.call_and_validate(base_url=base_url)

        call()
        tried.append(op.path)
    return tried


async def test_generated_reads_get_answers_that_fit_the_document(tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port)
    port = with_api(data, tmp_path)
    async with running_site(data, mosquitto, SPEED), client(port) as c:
        doc = (await c.get("/api/v1/openapi.json")).json()
        tried = await asyncio.to_thread(fuzz, doc, f"http://127.0.0.1:{port}")
    assert "/api/v1/history" in tried and "/metrics" in tried and len(tried) == 8

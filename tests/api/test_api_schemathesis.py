"""Schemathesis against the served OpenAPI document: generated requests to every endpoint
get answers its checks accept - no server error, documented status and content type,
bodies that fit the schemas; reads accept every schema-valid query. Commands (with the
token) are spared only that last check: their cross-field rules (exactly one of end or
duration_s ...) live in the models' validators, which JSON Schema cannot say, and a body
that breaks one is rightly answered 422."""

from __future__ import annotations

import asyncio

import schemathesis
from api_helpers import AUTH, client, with_api
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from site_harness import running_site, site_dict

SPEED = 60.0
SKIP = ("/api/v1/stream",)  # endless by design


def run(op, base_url: str, extra: dict, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy())
    def call(case) -> None:
        case.call_and_validate(base_url=base_url, **extra)

    call()


def fuzz(doc: dict, base_url: str) -> list[str]:
    """Runs in a worker thread: schemathesis' client blocks, the daemon shares the loop."""
    schema = schemathesis.openapi.from_dict(doc)
    tried = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path in SKIP:
            continue
        command = op.method.upper() == "POST"
        extra = {"headers": AUTH, "excluded_checks": [positive_data_acceptance]} \
            if command else {}
        run(op, base_url, extra, 25 if command else 15)
        tried.append(op.path)
    return tried


async def test_generated_requests_get_answers_that_fit_the_document(tmp_path, mosquitto):
    data = site_dict(tmp_path, mosquitto.port)
    port = with_api(data, tmp_path)
    async with running_site(data, mosquitto, SPEED), client(port) as c:
        doc = (await c.get("/api/v1/openapi.json")).json()
        tried = await asyncio.to_thread(fuzz, doc, f"http://127.0.0.1:{port}")
    assert "/api/v1/history" in tried and "/metrics" in tried
    assert len(tried) == 15, tried  # 10 reads, the page, 4 commands

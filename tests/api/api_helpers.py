"""Shared by the operator API tests: a HIL site with the API on a free port, an HTTP client
on the test's event loop (the daemon shares it, so never a blocking client), and the check
of an answer against the OpenAPI document the daemon serves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from conftest import free_port
from jsonschema import Draft202012Validator

from edge.report.history import History, Interval

TOKEN = "operator-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def with_api(data: dict, tmp_path: Path, **api) -> int:
    """Switch the API on in a site dict (token in a file); returns its port."""
    token = tmp_path / "api.token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    data["api"] = {"enabled": True, "port": port, "token_file": str(token), **api}
    return port


def client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30.0)


def check(openapi: dict, path: str, status: int, doc: object, method: str = "get") -> None:
    """`doc` fits the schema the OpenAPI document gives for that answer (all errors shown)."""
    content = openapi["paths"][path][method]["responses"][str(status)]["content"]
    schema = content["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": openapi["components"]})
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(doc)]
    assert not errors, f"{method.upper()} {path} -> {status} off its schema:\n" + "\n".join(errors)


def prefill_history(path: Path, start: datetime, days: int) -> None:
    """Quarter hours of a flat 30 kW import over `days` days before `start`."""
    h = History(path)
    try:
        t = start - timedelta(days=days)
        while t < start:
            h.put(Interval(t.astimezone(UTC), import_kwh=7.5, load_kwh=7.5, covered_s=900))
            t += timedelta(minutes=15)
    finally:
        h.close()

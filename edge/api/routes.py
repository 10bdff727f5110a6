"""The operator API's routes (Starlette). Reads answer from what the cycle and the services
published, once the cycle in progress has ended: building and sending an answer then takes
the event loop between cycles, not inside one (a dashboard's poll that overlapped a cycle
made it about twice as long). Commands go to the same handler as the MQTT ones
(CommandHandler.submit) at once, behind the bearer token, and answer with the acks it
stored for MQTT. `/` is the operator's dashboard, a static page (static/) that reads the
same endpoints."""

from __future__ import annotations

import asyncio
import hmac
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge.api import reads, views
from edge.api.metrics import CONTENT_TYPE
from edge.api.openapi import COMMAND_MODELS, PREFIX, document
from edge.vpp.commands.parse import parse_json, validation_reason
from edge.vpp.schemas.fields import Stamp

if TYPE_CHECKING:
    from edge.api.server import Api

log = logging.getLogger(__name__)

SUBMIT_TIMEOUT_S = 10.0  # wall seconds a command may wait for its ack before 503
STATIC = Path(__file__).with_name("static")  # the dashboard: index.html, its script, styles
# The page runs only its own script (no inline code, nothing from elsewhere); uPlot styles
# its elements inline. The answer is read fresh each time: it changes with an upgrade.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'",
    "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer"}
_STAMP: TypeAdapter = TypeAdapter(Stamp)


class _TooLarge(Exception):
    pass


class _Static(StaticFiles):
    """The page's scripts and styles, revalidated on each load (a 304 while unchanged): an
    upgrade must not leave a browser on the old script with the new API."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def build(api: Api) -> Starlette:
    d = api.daemon

    async def state(request: Request) -> Response:
        doc = views.state(d)
        if doc is None:
            return _problem(503, "no control cycle has run yet")
        return JSONResponse(doc)

    async def devices(request: Request) -> Response:
        return JSONResponse(views.devices(d, d.clock.now()))

    async def plan(request: Request) -> Response:
        return JSONResponse(reads.plan(d, d.clock.now()))

    async def dr(request: Request) -> Response:
        return JSONResponse(reads.dr(d, d.clock.now()))

    async def flex(request: Request) -> Response:
        doc = reads.flex(d, d.clock.now())
        if doc is None:
            return _problem(503, "no control cycle has run yet")
        return JSONResponse(doc)

    async def today(request: Request) -> Response:
        return JSONResponse(await api.today())

    async def tariff(request: Request) -> Response:
        return JSONResponse(reads.tariff(d.config, d.clock.now()))

    async def history(request: Request) -> Response:
        bounds = []
        for key in ("from", "to"):
            text = request.query_params.get(key)
            if text is None:
                return _problem(422, f"{key}: required, an ISO 8601 time with its offset")
            try:
                bounds.append(_STAMP.validate_python(text))
            except ValidationError as exc:
                why = exc.errors()[0]["msg"].removeprefix("Value error, ")
                return _problem(422, f"{key}: {why}")
        return JSONResponse(await api.history(*reads.history_range(*bounds)))

    async def stream(request: Request) -> Response:
        if api.stream.full():
            return _problem(503, f"{api.stream.max_clients} streams are open already")
        return StreamingResponse(api.stream.events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(document())

    async def metrics(request: Request) -> Response:
        return Response(await api.metrics.render(), media_type=CONTENT_TYPE)

    async def dashboard(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def command(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in COMMAND_MODELS:
            return _problem(404, f"no command {name[:40]!r}; known: {', '.join(COMMAND_MODELS)}")
        if not _authorised(request, api.token):
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        handler = d.commands
        if handler is None:
            return _problem(503, "commands are off on this site (vpp.commands: false)")
        try:
            body = await _body(request, api.cfg.max_body_bytes)
        except _TooLarge:
            return _problem(413, f"body longer than api.max_body_bytes "
                                 f"({api.cfg.max_body_bytes})")
        try:
            acks = await asyncio.wait_for(handler.submit(name, body), SUBMIT_TIMEOUT_S)
        except asyncio.QueueFull:
            return _problem(503, "the command queue is full; try again")
        except TimeoutError:
            return _problem(503, "the command was not answered in time; its ack, if any, "
                                 "goes out on MQTT")
        return _answer(acks, _precheck(name, body, d.config.vpp.max_payload_bytes))

    def between_cycles(read):
        async def wait_then_read(request: Request) -> Response:
            await d.cycle.idle.wait()
            return await read(request)
        return wait_then_read

    gets = {"state": state, "devices": devices, "plan": plan, "history": history, "dr": dr,
            "flex": flex, "today": today, "tariff": tariff, "stream": stream,
            "openapi.json": openapi}
    routes = [Route(f"{PREFIX}/{path}", between_cycles(read), methods=["GET"])
              for path, read in gets.items()]
    routes += [Route(f"{PREFIX}/commands/{{name}}", command, methods=["POST"]),
               Route("/metrics", between_cycles(metrics), methods=["GET"]),
               Route("/", dashboard, methods=["GET"]),
               Mount("/static", _Static(directory=STATIC), name="static")]
    return Starlette(routes=routes)


def _authorised(request: Request, token: str | None) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _precheck(name: str, body: bytes, max_payload: int) -> tuple[int, str] | None:
    """The HTTP status for a body the handler refuses before judging the site (413, 422),
    found with the handler's own parsing and schema; None for a well-formed command."""
    if len(body) > max_payload:
        return 413, f"payload of {len(body)} bytes exceeds vpp.max_payload_bytes ({max_payload})"
    try:
        parse_json(body)
    except ValueError as exc:
        return 422, f"not valid JSON: {str(exc)[:120]}"
    try:
        COMMAND_MODELS[name].model_validate_json(body, strict=True)
    except ValidationError as exc:
        return 422, validation_reason(exc)
    return None


def _answer(acks: list[dict[str, Any]], refused: tuple[int, str] | None) -> JSONResponse:
    own = acks[-1]
    doc: dict[str, Any] = {"ack": own, "acks": acks}
    if refused is not None:
        status, doc["detail"] = refused
    else:
        status = 409 if own.get("status") == "rejected" else 200
    return JSONResponse(doc, status_code=status)

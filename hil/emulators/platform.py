"""Park-platform emulator: the other end of the MQTT contract, for integrators and tests.

It connects to the site's broker, waits for the site (retained `status` online and a first
`telemetry`), sends a script of commands, checks that each is answered as expected
(accepted / rejected / done, a reason when asked) and, with `follow_kw`, that the
telemetry's grid power followed the accepted target. Every message the site publishes
meanwhile is validated against its schema (edge/vpp/schemas/). Prints one line per check
and a pass/fail summary; `pedf-edge hil --platform [FILE]` runs it beside the simulator.
The script and its file format: hil/emulators/script.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from datetime import datetime
from typing import Any

import paho.mqtt.client as paho
from pydantic import ValidationError

from edge.config import MqttConfig
from edge.report.connect import set_credentials
from edge.vpp.schemas.catalogue import MESSAGES, undeclared
from hil.emulators.script import Result, Script, Step, builtin_script

log = logging.getLogger(__name__)


class Platform:
    """An MQTT client standing in for the park platform of one site."""

    def __init__(self, cfg: MqttConfig, site_id: str) -> None:
        self.cfg = cfg
        self.prefix = f"{cfg.topic_prefix}/{site_id}/"
        self.acks: list[dict[str, Any]] = []
        self.telemetry: list[dict[str, Any]] = []
        self.flex: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.status: str | None = None
        self.validated = 0
        self.invalid: list[str] = []
        self.undocumented: set[str] = set()  # fields the site sends beyond the schema
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                   client_id=f"pedf-platform-{uuid.uuid4().hex[:8]}")
        set_credentials(self._client, cfg)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._subscribed = asyncio.Event()
        self._client.on_subscribe = lambda *a: self._post(self._subscribed.set)

    async def connect(self, timeout: float = 10.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.reconnect_delay_set(0.2, 2.0)
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=30)
        self._client.loop_start()
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        except TimeoutError:
            raise ConnectionError(f"no broker answered at {self.cfg.host}:{self.cfg.port} "
                                  f"within {timeout:g} s") from None

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def send(self, command: str, payload: dict[str, Any] | str | bytes) -> float:
        """Publish one command (QoS 1); returns time.monotonic() at publish."""
        body = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        t = time.monotonic()
        self._client.publish(self.prefix + "cmd/" + command, body, qos=1)
        return t

    def send_many(self, items: list[tuple[str, dict[str, Any] | str | bytes]]) -> None:
        for command, payload in items:
            self.send(command, payload)

    async def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
        return True

    def acks_for(self, cmd_id: str | None, after: int = 0) -> list[dict[str, Any]]:
        return [a for a in self.acks[after:] if a.get("cmd_id") == cmd_id]

    async def ack(self, cmd_id: str, status: str, timeout: float,
                  after: int = 0) -> dict[str, Any] | None:
        """The first ack for `cmd_id` with `status` among those from index `after` on; None
        on timeout, or as soon as the command is rejected when that is not what we wait for."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [a for a in self.acks_for(cmd_id, after)
                        if a["status"] in (status, "rejected")]
            return bool(found)

        await self.wait(seen, timeout)
        return found[0] if found and found[0]["status"] == status else None

    # -- paho thread -----------------------------------------------------------------------

    def _post(self, fn, *args) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        # the site's topics, not cmd/# (our own commands would come back to us)
        client.subscribe([(self.prefix + t, 1) for t in
                          ("status", "telemetry", "devices", "flex", "ack", "dr/+", "carbon")])

    def _on_message(self, client, userdata, msg) -> None:
        self._post(self._record, msg.topic, bytes(msg.payload))

    # -- event loop ------------------------------------------------------------------------

    def _record(self, topic: str, payload: bytes) -> None:
        suffix = topic.removeprefix(self.prefix)
        self._changed.set()
        if suffix == "status":
            self.status = payload.decode(errors="replace")
            return
        name = "dr_report" if suffix.startswith("dr/") else suffix
        msg = MESSAGES.get(name)
        try:
            doc = json.loads(payload)
            if msg is not None and msg.direction == "out":
                msg.model.model_validate(doc)
                self.undocumented.update(f"{name}.{k}" for k in undeclared(msg.model, doc))
                self.validated += 1
        except (ValueError, ValidationError) as exc:
            self.invalid.append(f"{suffix}: {str(exc).splitlines()[0][:200]}")
            return
        if name == "ack":
            self.acks.append(doc)
        elif name == "telemetry":
            self.telemetry.append(doc)
        elif name == "flex":
            self.flex.append(doc)
        elif name == "dr_report":
            self.reports.append(doc)


def _fill(value: Any, run: str) -> Any:
    if isinstance(value, str):
        return value.replace("{run}", run)
    if isinstance(value, dict):
        return {k: _fill(v, run) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, run) for v in value]
    return value


def _window_s(payload: dict[str, Any] | str) -> float:
    if isinstance(payload, dict) and isinstance(payload.get("duration_s"), int | float):
        return float(payload["duration_s"])
    return 0.0


def _followed(p: Platform, ack: dict[str, Any], tol: float, settle_s: float) -> tuple[bool, str]:
    """Every telemetry sample inside the accepted window (after `settle_s`) kept the grid
    at the target, or inside the bounds, within `tol`."""
    start = datetime.fromisoformat(ack["start"]).timestamp() + settle_s
    end = datetime.fromisoformat(ack["end"]).timestamp()
    target, hi, lo = ack.get("grid_target_kw"), ack.get("grid_max_kw"), ack.get("grid_min_kw")
    samples = [(t["ts"], t["grid_kw"]) for t in p.telemetry
               if start <= datetime.fromisoformat(t["ts"]).timestamp() < end
               and t["grid_kw"] is not None]
    if not samples:
        return False, "no telemetry inside the window"
    worst = 0.0
    for _, g in samples:
        if target is not None:
            worst = max(worst, abs(g - target))
        else:
            worst = max(worst, (g - hi) if hi is not None else 0.0, (lo - g) if lo is not None else 0.0)
    if target is not None:
        goal = f"target {target:g} kW"
    else:
        goal = " and ".join(f"{n} {v:g} kW" for n, v in (("floor", lo), ("ceiling", hi))
                            if v is not None)
    return worst <= tol, f"{len(samples)} samples, {goal}, worst deviation {worst:.2f} kW (±{tol:g})"


async def run_step(p: Platform, step: Step, run: str, result: Result) -> None:
    payload = _fill(step.payload, run)
    cmd_id = payload.get("cmd_id") if isinstance(payload, dict) else None
    label = f"{step.send} {cmd_id or '(raw)'}"
    before = len(p.acks)
    p.send(step.send, payload)
    if cmd_id is None or not isinstance(cmd_id, str):
        # no usable cmd_id: the answer is the next ack that carries none
        ok = await p.wait(lambda: any(a["cmd_id"] is None for a in p.acks[before:]),
                          step.timeout_s)
        ack = next((a for a in p.acks[before:] if a["cmd_id"] is None), None)
        status = ack["status"] if ack else None
        result.add(f"{label} -> {'/'.join(step.expect)}", ok and [status] == step.expect,
                   f"got {status}" + (f" ({ack['reason']})" if ack and ack.get("reason") else ""))
        _reason(step, ack, label, result)
        return
    accepted = None
    for status in step.expect:
        timeout = step.timeout_s + (_window_s(payload) if status == "done" else 0)
        ack = await p.ack(cmd_id, status, timeout, after=before)
        got = [a["status"] + (f" ({a['reason']})" if a.get("reason") else "")
               for a in p.acks_for(cmd_id, before)]
        result.add(f"{label} -> {status}", ack is not None, ", ".join(got) or "no ack")
        if ack is None:
            return
        if status == "accepted":
            accepted = ack
        if status == "rejected":
            _reason(step, ack, label, result)
    if step.follow_kw is not None and accepted is not None:
        if "done" not in step.expect:
            await p.wait(lambda: False, _window_s(payload))
        ok, detail = _followed(p, accepted, step.follow_kw, step.settle_s)
        result.add(f"{label} followed", ok, detail)
    if step.expect_report and isinstance(payload, dict):
        event_id = payload.get("event_id")
        ok = await p.wait(lambda: any(r["event_id"] == event_id for r in p.reports),
                          step.timeout_s)
        result.add(f"{label} report dr/{event_id}", ok,
                   f"{sum(r['event_id'] == event_id for r in p.reports)} reports")
    if step.wait_s:
        await asyncio.sleep(step.wait_s)


def _reason(step: Step, ack: dict[str, Any] | None, label: str, result: Result) -> None:
    if step.reason_contains is None:
        return
    reason = (ack or {}).get("reason") or ""
    result.add(f"{label} reason mentions {step.reason_contains!r}",
               step.reason_contains.lower() in reason.lower(), reason or "no reason")


async def run_platform(cfg: MqttConfig, site_id: str, script: Script | None = None,
                       site_timeout_s: float = 60.0) -> Result:
    """Run a script against a live site; returns the checks (also printed)."""
    p = Platform(cfg, site_id)
    result = Result()
    run = uuid.uuid4().hex[:6]
    print(f"platform emulator: {cfg.host}:{cfg.port} {p.prefix}... (run {run})", flush=True)
    try:
        await p.connect()
        up = await p.wait(lambda: p.status == "online" and p.telemetry and p.flex, site_timeout_s)
        result.add("site online (status, telemetry, flex)", up,
                   f"status {p.status}, {len(p.telemetry)} telemetry, {len(p.flex)} flex")
        if not up:
            return result
        if script is None:
            script = builtin_script(p.flex[-1], p.telemetry[-1])
        for step in script.steps:
            await run_step(p, step, run, result)
    except ConnectionError as exc:
        result.add("connect to the broker", False, str(exc))
    finally:
        p.close()
        result.messages, result.invalid = p.validated, list(p.invalid)
        result.undocumented = sorted(p.undocumented)
    for bad in result.invalid[:10]:
        print(f"  INVALID  {bad}", flush=True)
    print(result.summary(), flush=True)
    return result

"""Commands from the park platform (`<prefix>/<site>/cmd/<name>`) into the instruction book.

Every message gets an answer on `<prefix>/<site>/ack`, through the outbox so no ack is lost:
`accepted` or `rejected` (with the reason) at once, `done` when the window ends or the
command is cancelled or superseded. Each message passes, in order: the topic names a
command the site knows and allows (`vpp.allow`); the payload fits `vpp.max_payload_bytes`;
it is one JSON object (no NaN/Infinity, no repeated keys); it validates strictly against
its schema (edge/vpp/schemas.py); its cmd_id is new, or an exact re-send (acknowledged again
with its current status: idempotent); its window is not over, not too far ahead, not too
long; and it keeps to the site (configured import/export limits, and for a dispatch
target starting within 15 min what the batteries can reach and sustain now). Anything
else is rejected with the reason and logged; nothing a platform sends can stop the handler.

A dispatch replaces every accepted dispatch whose window overlaps its own (they are ended
with `done`, "superseded by <cmd_id>"): the platform's latest word holds. A dr_event goes
to the DR manager (edge/vpp/dr.py: baseline, ramp-in / hold / staggered restore, M&V
reports on `dr/<event_id>`, persisted); one with the event_id of an accepted event
updates it, and the earlier command is done, "superseded".

Modes: `auto` (normal), `hold` (hold the PCC at its power at receipt; park dispatches are
ended and refused until `auto`), `local` (the platform lets go: park dispatches are ended
and refused until `auto`; the site runs on its own functions and plan). Grid-operator DR is
honoured in every mode: it ranks above the park (DOMAIN.md §3, duty 3). Accepted
commands, the mode and the answered cmd_ids are saved (edge/vpp/cmdstore.py) before their
acks go out and restored on start: a restart keeps what the site acknowledged, and a
window that ended meanwhile gets its `done` ack then. DR events persist in the DR manager.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from edge.app.clock import Clock
from edge.config import Config
from edge.cycle import ControlCycle
from edge.control.instructions import Instruction
from edge.report.mqtt import MqttLink
from edge.report.outbox import Outbox
from edge.vpp.capability import Capability, site_capability
from edge.vpp.cmdstore import CommandStore, SavedCommand, Snapshot
from edge.vpp.schemas import COMMANDS, ID_PATTERN, Cancel, Dispatch, DrEvent, ModeCommand
from edge.vpp.shaping import DrEvent as DrRequest
from edge.vpp.shaping import DrRejected

log = logging.getLogger(__name__)

_HOLD_ID = "park:hold"
_FOREVER = timedelta(days=3650)
_REACH_SLACK_KW = 0.5  # reach and energy checks tolerate this much (measurement noise)
SEEN_MAX = 10_000  # cmd_ids remembered for duplicate detection
_REACH_AHEAD = timedelta(minutes=15)  # later windows: limits only, the state then is unknown
_ID_RE = re.compile(ID_PATTERN)
_BATCH = 64  # commands judged per pass of the loop


class Rejected(Exception):
    """A command the site will not honour; the message is the reason sent in the ack."""


class DrSink(Protocol):
    """What commands need of the DR manager (edge/vpp/dr.py `DrManager`): it computes the
    baseline, shapes the event (ramp-in, hold, staggered restore), owns its instructions in
    the book and reports `dr/<event_id>`."""

    def add(self, event: DrRequest, now: datetime) -> list[Instruction]: ...

    def cancel(self, event_id: str, now: datetime) -> bool: ...


@dataclass(slots=True)
class _Accepted:
    cmd_id: str
    command: str
    start: datetime
    end: datetime
    instructions: tuple[Instruction, ...]  # the ones this handler put in the book
    ack: dict[str, Any]  # the accepted ack (without ts/msg_id), reused for done
    event_id: str | None = None


@dataclass(slots=True)
class _Seen:
    fingerprint: str
    ack: dict[str, Any]  # latest ack for this cmd_id


@dataclass(slots=True)
class Stats:
    accepted: int = 0
    rejected: int = 0
    done: int = 0
    repeated: int = 0  # exact re-sends acknowledged again


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number in JSON")


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"{text[:20]} is out of range")
    return x


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k[:40]!r} appears twice")
        out[k] = v
    return out


def parse_json(payload: bytes) -> dict[str, Any]:
    """One JSON object; ValueError with the reason otherwise."""
    try:
        doc = json.loads(payload, parse_constant=_no_constant, parse_float=_finite,
                         object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    more = len(exc.errors()) - 3
    return "invalid: " + "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def reach(cap: Capability, grid_kw: float, target: float, hours: float) -> None:
    """The batteries can move the PCC from `grid_kw` to `target` now and hold it for `hours`,
    with load − PV as it is now (the kernel reports it later if the load moves away).
    Batteries only: the cycle sheds loads and curtails PV for a grid bound, not a target."""
    bats = cap.of("battery")
    native = grid_kw + sum(b.push_kw for b in bats)  # the batteries at 0: load − PV
    lo, hi = native - sum(b.max_kw for b in bats), native - sum(b.min_kw for b in bats)
    if not lo - _REACH_SLACK_KW <= target <= hi + _REACH_SLACK_KW:
        raise Rejected(f"grid target {target:g} kW is beyond what the batteries can reach "
                       f"now ({lo:.1f}..{hi:.1f} kW with load - PV at {native:.1f} kW)")
    need = (native - target) * hours  # + discharge / − charge, kWh
    rest = [replace(b, push_kw=0.0) for b in bats]
    if need > 0 and need > sum(b.up_kw(hours) for b in rest) * hours + _REACH_SLACK_KW:
        raise Rejected(f"holding {target:g} kW for {hours:.2f} h needs {need:.1f} kWh of "
                       f"discharge; the batteries hold {sum(b.up_kwh for b in bats):.1f} kWh "
                       "above soc_min")
    if need < 0 and -need > sum(b.down_kw(hours) for b in rest) * hours + _REACH_SLACK_KW:
        raise Rejected(f"holding {target:g} kW for {hours:.2f} h needs {-need:.1f} kWh of "
                       f"charge; the batteries have room for {sum(b.down_kwh for b in bats):.1f} "
                       "kWh")


class CommandHandler:
    """Turns platform commands into instructions in `cycle.book` and answers each one.

    `handle` is synchronous and returns the acks to send (unit-testable without a broker);
    `run` consumes the link's inbound queue, expires windows and sends the acks."""

    def __init__(self, config: Config, clock: Clock, cycle: ControlCycle, outbox: Outbox,
                 link: MqttLink, wake: Callable[[], None] | None = None,
                 dr: DrSink | None = None, store: CommandStore | None = None) -> None:
        self.config = config
        self.dr = dr
        self.vpp = config.vpp
        self.clock = clock
        self.cycle = cycle
        self.outbox = outbox
        self.link = link
        self.wake = wake or (lambda: None)
        self.mode = "auto"
        self.stats = Stats()
        self._active: dict[str, _Accepted] = {}
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self.store = store
        self._unsaved: set[str] = set()  # cmd_ids whose answer changed since the last save
        self._prefix = link.topic("cmd/")

    # -- the loop -------------------------------------------------------------------------

    def subscribe(self) -> None:
        self.link.subscribe(self._prefix + "+")

    async def run(self) -> None:
        """Consume commands until cancelled; a failure on one message is logged, never
        raised (the next message is handled as usual).

        Messages waiting together are judged together (up to _BATCH), then their acks are
        stored from a worker thread: an outbox write waits for an fsync, and a flood of
        commands must not hold the event loop (and with it the control cycle's polls)."""
        while True:
            timeout = self._wall_to_next_end()
            try:
                first = await asyncio.wait_for(self.link.inbound.get(), timeout)
                items = [first]
            except TimeoutError:
                items = []
            while items and len(items) < _BATCH and not self.link.inbound.empty():
                items.append(self.link.inbound.get_nowait())
            acks: list[dict[str, Any]] = []
            changed = False
            for item in items:
                try:
                    more, did = self.handle(item.topic, item.payload)
                except Exception:  # noqa: BLE001 - a bug must not end command handling
                    log.exception("command on %s failed in the handler", item.topic[:200])
                    more, did = [self._rejected(None, None, "internal error; see the log")], False
                acks += more
                changed |= did
            ended = self.expire()
            if changed or ended:
                self.wake()
            acks += ended
            if acks:
                stamped = [{"ts": _iso(self.clock.now()), **a} for a in acks]
                snap = self._snapshot() if changed or ended else None
                storing = asyncio.ensure_future(asyncio.to_thread(self._store, stamped, snap))
                try:
                    saved = await asyncio.shield(storing)
                except asyncio.CancelledError:
                    await storing  # acks already judged are stored before the task ends
                    raise
                if not saved and snap is not None:  # try those answers again next batch
                    self._unsaved.update(cmd_id for cmd_id, _, _ in snap.seen)

    def _store(self, acks: list[dict[str, Any]], snap: Snapshot | None = None) -> bool:
        """The handler's state first, then the acks: an ack never speaks of a command the
        site would forget in a restart. False when the state could not be saved."""
        saved = True
        if snap is not None and self.store is not None:
            try:
                self.store.save(snap)
            except Exception:  # noqa: BLE001 - e.g. a full disk: control goes on
                saved = False
                log.exception("accepted commands could not be saved; a restart would lose them")
        topic = self.link.topic("ack")
        for ack in acks:
            try:
                self.outbox.enqueue(topic, ack)
            except Exception:  # noqa: BLE001 - e.g. a full disk: control goes on
                log.exception("ack for %s could not be stored in the outbox", ack["cmd_id"])
        return saved

    def _snapshot(self) -> Snapshot:
        seen = [(k, self._seen[k].fingerprint, dict(self._seen[k].ack))
                for k in self._unsaved if k in self._seen]
        self._unsaved.clear()
        return Snapshot(
            active=[SavedCommand(a.cmd_id, a.command, a.start, a.end, a.instructions,
                                 dict(a.ack), a.event_id) for a in self._active.values()],
            mode=self.mode, hold=self.cycle.book.get(_HOLD_ID), saved_at=self.clock.now(),
            seen=seen)

    def restore(self) -> None:
        """Take back what was saved before a restart: the mode (with its hold target), the
        accepted commands (their instructions back into the book) and the answered cmd_ids.
        Windows that ended meanwhile are ended, with their `done` ack, on the first pass of
        `run`."""
        if self.store is None:
            return
        saved = self.store.load()
        now = self.clock.now()
        if saved.saved_at is not None and saved.saved_at > now:
            # A wall clock does not go back; a simulation started over from an earlier time
            # does. Its commands belong to the other run's timeline: keeping them would put a
            # hold and dispatches in force at times they were never meant for.
            log.warning("saved park commands are from %s, after the clock's %s (a restarted "
                        "simulation?): not restored", saved.saved_at.isoformat(),
                        now.isoformat())
            self.store.clear()
            return
        self.mode = saved.mode
        if saved.hold is not None:
            self.cycle.book.put(saved.hold)
        for c in saved.active:
            for i in c.instructions:
                self.cycle.book.put(i)
            self._active[c.cmd_id] = _Accepted(c.cmd_id, c.command, c.start, c.end,
                                               c.instructions, c.ack, c.event_id)
        for cmd_id, fp, ack in saved.seen:
            self._seen[cmd_id] = _Seen(fp, ack)
        if saved.active or saved.mode != "auto":
            log.info("restored mode %s and %d accepted command(s): %s", saved.mode,
                     len(saved.active), ", ".join(c.cmd_id for c in saved.active) or "-")

    def _wall_to_next_end(self) -> float:
        if not self._active:
            return 1.0
        sim_s = (min(a.end for a in self._active.values()) - self.clock.now()).total_seconds()
        return min(max(self.clock.wall_s(sim_s), 0.0), 1.0)

    # -- one message ------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> tuple[list[dict[str, Any]], bool]:
        """Judge one message; returns (acks, whether the book changed)."""
        name = topic[len(self._prefix):] if topic.startswith(self._prefix) else None
        cmd_id: str | None = None
        try:
            if name not in COMMANDS:
                shown = (name if name is not None else topic)[:64]
                raise Rejected(f"unknown command {shown!r}; known: {', '.join(COMMANDS)}")
            if name not in self.vpp.allow:
                raise Rejected(f"command {name} is not allowed on this site (vpp.allow: "
                               f"{', '.join(self.vpp.allow) or 'none'})")
            if len(payload) > self.vpp.max_payload_bytes:
                raise Rejected(f"payload of {len(payload)} bytes exceeds vpp.max_payload_bytes "
                               f"({self.vpp.max_payload_bytes})")
            try:
                doc = parse_json(payload)
            except ValueError as exc:
                raise Rejected(f"not valid JSON: {str(exc)[:120]}") from None
            raw_id = doc.get("cmd_id")
            if isinstance(raw_id, str) and _ID_RE.match(raw_id):
                cmd_id = raw_id
            try:
                cmd = COMMANDS[name].model_validate_json(payload, strict=True)
            except ValidationError as exc:
                raise Rejected(_validation_reason(exc)) from None
            fingerprint = name + json.dumps(doc, sort_keys=True, separators=(",", ":"))
            if (seen := self._seen.get(cmd.cmd_id)) is not None:
                if seen.fingerprint != fingerprint:
                    raise Rejected(f"cmd_id {cmd.cmd_id} was already used for another command")
                self.stats.repeated += 1
                return [dict(seen.ack)], False
            acks = self._apply(name, cmd)
            self._remember(cmd.cmd_id, fingerprint, acks[-1])  # the last ack is its own
            self.stats.accepted += 1
            return acks, True
        except Rejected as exc:
            return [self._rejected(cmd_id, name, str(exc))], False

    def _rejected(self, cmd_id: str | None, name: str | None, reason: str) -> dict[str, Any]:
        self.stats.rejected += 1
        log.warning("command %r (%s) rejected: %s", cmd_id, name if name in COMMANDS else "?",
                    reason)
        return {"cmd_id": cmd_id, "command": name if name in COMMANDS else None,
                "status": "rejected", "reason": reason}

    def _remember(self, cmd_id: str, fingerprint: str, ack: dict[str, Any]) -> None:
        self._seen[cmd_id] = _Seen(fingerprint, dict(ack))
        self._unsaved.add(cmd_id)
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)

    def _apply(self, name: str, cmd: Any) -> list[dict[str, Any]]:
        if isinstance(cmd, Dispatch):
            return self._dispatch(cmd)
        if isinstance(cmd, DrEvent):
            return self._dr_event(cmd)
        if isinstance(cmd, ModeCommand):
            return self._mode(cmd)
        assert isinstance(cmd, Cancel)
        return self._cancel(cmd)

    # -- windows and the site -----------------------------------------------------------------

    def _window(self, cmd: Dispatch | DrEvent, now: datetime, *, stale_start: bool
                ) -> tuple[datetime, datetime]:
        start = cmd.start or now
        end = cmd.end if cmd.end is not None else start + timedelta(seconds=cmd.duration_s or 0)
        if end <= now:
            raise Rejected(f"window is over: end {_iso(end)} is not after now {_iso(now)}")
        if stale_start and (now - start).total_seconds() > self.vpp.past_tolerance_s:
            raise Rejected(f"start {_iso(start)} is more than vpp.past_tolerance_s "
                           f"({self.vpp.past_tolerance_s:g} s) in the past; send a fresh command")
        if (start - now).total_seconds() > self.vpp.max_ahead_s:
            raise Rejected(f"start {_iso(start)} is more than vpp.max_ahead_s "
                           f"({self.vpp.max_ahead_s:g} s) ahead")
        if (end - start).total_seconds() > self.vpp.max_window_s:
            raise Rejected(f"window of {(end - start).total_seconds():g} s is longer than "
                           f"vpp.max_window_s ({self.vpp.max_window_s:g} s)")
        return start, end

    def _grid_now(self, why: str) -> float:
        """The PCC power the site is at: what the last cycle expects after its own writes
        (the reading it decided on predates them), else the reading itself."""
        image = self.cycle.image
        pcc = self.config.grid_meter.id
        if image is None or not image.good(pcc):
            raise Rejected(f"{why} needs the PCC power, but the PCC meter has no good reading")
        d = self.cycle.decision
        if d is not None and d.ts == image.ts and math.isfinite(d.expected_grid_kw):
            return d.expected_grid_kw
        return image.value(pcc, "power_kw")

    def _site_limits(self, what: str, *, target: float | None = None,
                     floor: float | None = None, ceiling: float | None = None) -> None:
        c = self.config.control
        imp = math.inf if c.import_limit_kw is None else c.import_limit_kw
        exp = math.inf if c.export_limit_kw is None else c.export_limit_kw
        for name, value in (("target", target), ("floor", floor)):
            if value is not None and value > imp:
                raise Rejected(f"{what} {name} {value:g} kW is above the site import limit "
                               f"{imp:g} kW (control.import_limit_kw)")
        for name, value in (("target", target), ("ceiling", ceiling)):
            if value is not None and value < -exp:
                raise Rejected(f"{what} {name} {value:g} kW is below the site export limit "
                               f"-{exp:g} kW (control.export_limit_kw)")

    def _reach(self, target: float, hours: float) -> None:
        image = self.cycle.image
        pcc = self.config.grid_meter.id
        if image is None or not image.good(pcc):
            raise Rejected("a grid target needs the PCC power, but the PCC meter has no good "
                           "reading")
        reach(site_capability(self.config, image, hours), image.value(pcc, "power_kw"), target,
              hours)

    # -- commands ------------------------------------------------------------------------------

    def _dispatch(self, cmd: Dispatch) -> list[dict[str, Any]]:
        if self.mode != "auto":
            raise Rejected(f"site is in mode {self.mode}: park dispatch is refused until "
                           "mode auto")
        now = self.clock.now()
        start, end = self._window(cmd, now, stale_start=True)
        target = cmd.grid_target_kw
        if cmd.grid_delta_kw is not None:
            target = self._grid_now("grid_delta_kw") + cmd.grid_delta_kw
        self._site_limits("dispatch", target=target, floor=cmd.grid_min_kw,
                          ceiling=cmd.grid_max_kw)
        if target is not None and start - now <= _REACH_AHEAD:
            self._reach(target, (end - max(start, now)).total_seconds() / 3600)
        ins = self._free(Instruction(
            f"park:{cmd.cmd_id}", "park", start, end,
            grid_max_kw=math.inf if cmd.grid_max_kw is None else cmd.grid_max_kw,
            grid_min_kw=-math.inf if cmd.grid_min_kw is None else cmd.grid_min_kw,
            grid_target_kw=math.nan if target is None else target,
        ))
        acks = [self._end(old, f"superseded by {cmd.cmd_id}") for old in list(self._active.values())
                if old.command == "dispatch" and old.start < end and start < old.end]
        return [*acks, self._accept(cmd.cmd_id, "dispatch", [ins])]

    def _dr_event(self, cmd: DrEvent) -> list[dict[str, Any]]:
        """The DR manager takes the event (an update when the event_id is known): its
        baseline, limits and shape decide; its refusal is the rejection."""
        if self.dr is None:
            raise Rejected("this handler has no DR manager to run events")
        now = self.clock.now()
        start, end = self._window(cmd, now, stale_start=False)
        try:
            instructions = self.dr.add(DrRequest(
                id=cmd.event_id, source="grid_operator", direction=cmd.direction, start=start,
                end=end, kw=cmd.kw, target_kw=cmd.target_kw, notice=cmd.notice,
                baseline_kw=cmd.baseline_kw, cmd_id=cmd.cmd_id), now)
        except DrRejected as exc:
            raise Rejected(str(exc)) from None
        acks = [self._end(old, f"superseded by {cmd.cmd_id}", release=False)
                for old in list(self._active.values()) if old.event_id == cmd.event_id]
        return [*acks, self._accept(cmd.cmd_id, "dr_event", instructions, event_id=cmd.event_id,
                                    window=(start, end), owned=False)]

    def _mode(self, cmd: ModeCommand) -> list[dict[str, Any]]:
        acks = []
        hold = None
        if cmd.mode == "hold":
            now = self.clock.now()
            grid = self._grid_now("mode hold")
            hold = Instruction(_HOLD_ID, "park", now, now + _FOREVER, grid_target_kw=grid)
        if cmd.mode != "auto":
            for old in [a for a in self._active.values() if a.command == "dispatch"]:
                acks.append(self._end(old, f"ended by mode {cmd.mode} ({cmd.cmd_id})"))
        self.cycle.book.cancel(_HOLD_ID)
        if hold is not None:
            self.cycle.book.put(hold)
        log.info("mode %s -> %s (%s)", self.mode, cmd.mode, cmd.cmd_id)
        self.mode = cmd.mode
        ack = {"cmd_id": cmd.cmd_id, "command": "mode", "status": "accepted", "mode": cmd.mode}
        if hold is not None:
            ack["grid_target_kw"] = round(hold.grid_target_kw, 3)
        self.stats.done += 1
        return [*acks, ack, {**ack, "status": "done", "reason": "applied"}]

    def _cancel(self, cmd: Cancel) -> list[dict[str, Any]]:
        if cmd.target_cmd_id is not None:
            found = self._active.get(cmd.target_cmd_id)
            what = f"cmd_id {cmd.target_cmd_id}"
        else:
            found = next((a for a in self._active.values() if a.event_id == cmd.event_id), None)
            what = f"event_id {cmd.event_id}"
        if found is None and cmd.event_id is not None and self.dr is not None \
                and self.dr.cancel(cmd.event_id, self.clock.now()):
            # Resumed from dr.sqlite after a restart: the manager knows it, this handler's
            # memory of the original command does not.
            ack = {"cmd_id": cmd.cmd_id, "command": "cancel", "status": "accepted"}
            self.stats.done += 1
            return [ack, {**ack, "status": "done", "reason": f"{what} ended"}]
        if found is None:
            raise Rejected(f"nothing active with {what} (already done, or never accepted)")
        if found.event_id is not None and self.dr is not None:
            self.dr.cancel(found.event_id, self.clock.now())  # restores in steps
        ended = self._end(found, f"cancelled by {cmd.cmd_id}")
        ack = {"cmd_id": cmd.cmd_id, "command": "cancel", "status": "accepted"}
        self.stats.done += 1
        return [ended, ack, {**ack, "status": "done", "reason": f"{what} ended"}]

    # -- bookkeeping ----------------------------------------------------------------------------

    def _free(self, i: Instruction) -> Instruction:
        """A platform command may replace only what its own source put in the book."""
        clash = self.cycle.book.get(i.id)
        if clash is not None and clash.source != i.source:
            raise Rejected(f"instruction id {i.id} is taken by a {clash.source} instruction")
        return i

    def _accept(self, cmd_id: str, command: str, instructions: list[Instruction],
                event_id: str | None = None, window: tuple[datetime, datetime] | None = None,
                owned: bool = True) -> dict[str, Any]:
        """Record an accepted command. `owned`: its instructions are ours to put and to take
        out of the book (a DR manager keeps its own, restore steps included)."""
        if owned:
            for i in instructions:
                self.cycle.book.put(i)
        start, end = window or (min(i.start for i in instructions),
                                max(i.end for i in instructions))
        ack: dict[str, Any] = {"cmd_id": cmd_id, "command": command, "status": "accepted",
                               "start": _iso(start), "end": _iso(end)}
        held = [i for i in instructions if i.start <= end and i.end > start]
        for key in ("grid_target_kw", "grid_max_kw", "grid_min_kw"):
            v = getattr(held[0], key) if held else math.nan
            if math.isfinite(v):
                ack[key] = round(v, 3)
        self._active[cmd_id] = _Accepted(cmd_id, command, start, end,
                                         tuple(instructions) if owned else (), ack, event_id)
        log.info("%s %s accepted: %s", command, cmd_id,
                 ", ".join(f"{k}={v}" for k, v in ack.items() if k.startswith(("grid", "end"))))
        return ack

    def _end(self, acc: _Accepted, reason: str, release: bool = True) -> dict[str, Any]:
        if release:
            for i in acc.instructions:
                self.cycle.book.cancel(i.id)
        del self._active[acc.cmd_id]
        done = {**acc.ack, "status": "done", "reason": reason}
        if (seen := self._seen.get(acc.cmd_id)) is not None:
            seen.ack = dict(done)
            self._unsaved.add(acc.cmd_id)
        self.stats.done += 1
        log.info("%s %s done: %s", acc.command, acc.cmd_id, reason)
        return done

    def expire(self) -> list[dict[str, Any]]:
        """Done acks for every window that has ended; their instructions leave the book."""
        now = self.clock.now()
        return [self._end(a, "window ended") for a in list(self._active.values()) if a.end <= now]

    @property
    def active(self) -> list[str]:
        return list(self._active)

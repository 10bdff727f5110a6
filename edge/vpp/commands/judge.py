"""One platform message judged: checked in order (edge/vpp/commands/__init__.py), then
applied to the instruction book (`view.book`) or the DR manager, with the acks to send."""

from __future__ import annotations

import json
import logging
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from drivers.quietlog import Episode
from edge.app.clock import Clock
from edge.app.fanout import SiteView
from edge.config import Config
from edge.control.instructions import Instruction
from edge.vpp.capability import site_capability
from edge.vpp.commands.checks import REACH_AHEAD, reach, session_request, site_limits, window
from edge.vpp.commands.parse import Rejected, iso, parse_json, validation_reason
from edge.vpp.schemas.commands import (
    COMMANDS,
    Cancel,
    Dispatch,
    DrEvent,
    EvSession,
    ModeCommand,
)
from edge.vpp.schemas.fields import ID_PATTERN
from edge.vpp.shaping import DrEvent as DrRequest
from edge.vpp.shaping import DrRejected

log = logging.getLogger(__name__)

HOLD_ID = "park:hold"
_FOREVER = timedelta(days=3650)
SEEN_MAX = 10_000  # cmd_ids remembered for duplicate detection
REJECTS_LOG_S = 60.0  # one log line at most this often about rejected commands (acks: each)
_ID_RE = re.compile(ID_PATTERN)


class DrSink(Protocol):
    """What commands need of the DR manager (edge/vpp/dr/manager.py `DrManager`): it computes the
    baseline, shapes the event (ramp-in, hold, staggered restore), owns its instructions in
    the book and reports `dr/<event_id>`."""

    def add(self, event: DrRequest, now: datetime) -> list[Instruction]: ...

    def cancel(self, event_id: str, now: datetime) -> bool: ...


@dataclass(slots=True)
class Accepted:
    cmd_id: str
    command: str
    start: datetime
    end: datetime
    instructions: tuple[Instruction, ...]  # the ones this handler put in the book
    ack: dict[str, Any]  # the accepted ack (without ts/msg_id), reused for done
    event_id: str | None = None


@dataclass(slots=True)
class Seen:
    fingerprint: str
    ack: dict[str, Any]  # latest ack for this cmd_id


@dataclass(slots=True)
class Stats:
    accepted: int = 0
    rejected: int = 0
    done: int = 0
    repeated: int = 0  # exact re-sends acknowledged again


class CommandJudge:
    """Turns platform commands into instructions in `view.book` and answers each one:
    `handle` is synchronous and returns the acks to send (unit-testable without a broker)."""

    def __init__(self, config: Config, clock: Clock, view: SiteView, prefix: str,
                 dr: DrSink | None = None) -> None:
        self.config = config
        self.dr = dr
        self.vpp = config.vpp
        self.clock = clock
        self.view = view
        self.mode = "auto"
        self.stats = Stats()
        self._active: dict[str, Accepted] = {}
        self._seen: OrderedDict[str, Seen] = OrderedDict()
        self._unsaved: set[str] = set()  # cmd_ids whose answer changed since the last save
        self._prefix = prefix
        self.rejects = Episode(
            log, "%(reason)s (the platform gets the reason in the ack; fix the sender)",
            "%(more)d more commands rejected in the last %(gap)s (%(count)d since the first); "
            "last: %(reason)s", every_s=REJECTS_LOG_S)

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
                raise Rejected(validation_reason(exc)) from None
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
            if cmd_id is None and name in COMMANDS:
                cmd_id = self._id_of(payload)
            return [self._rejected(cmd_id, name, str(exc))], False

    def _id_of(self, payload: bytes) -> str | None:
        """The cmd_id of a command refused before its payload was read (one this site does
        not allow): the platform must learn which of its commands was refused."""
        if len(payload) > self.vpp.max_payload_bytes:
            return None
        try:
            raw = parse_json(payload).get("cmd_id")
        except ValueError:
            return None
        return raw if isinstance(raw, str) and _ID_RE.match(raw) else None

    def _rejected(self, cmd_id: str | None, name: str | None, reason: str) -> dict[str, Any]:
        self.stats.rejected += 1
        self.rejects.failed(f"command {cmd_id!r} ({name if name in COMMANDS else '?'}) "
                            f"rejected: {reason}")
        return {"cmd_id": cmd_id, "command": name if name in COMMANDS else None,
                "status": "rejected", "reason": reason}

    def _remember(self, cmd_id: str, fingerprint: str, ack: dict[str, Any]) -> None:
        self._seen[cmd_id] = Seen(fingerprint, dict(ack))
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
        if isinstance(cmd, EvSession):
            return self._ev_session(cmd)
        assert isinstance(cmd, Cancel)
        return self._cancel(cmd)

    # -- the site --------------------------------------------------------------------------

    def _grid_now(self, why: str) -> float:
        """The PCC power the site is at: what the last cycle expects after its own writes
        (the reading it decided on predates them), else the reading itself."""
        image = self.view.image
        pcc = self.config.grid_meter.id
        if image is None or not image.good(pcc):
            raise Rejected(f"{why} needs the PCC power, but the PCC meter has no good reading")
        d = self.view.decision
        if d is not None and d.ts == image.ts and math.isfinite(d.expected_grid_kw):
            return d.expected_grid_kw
        return image.value(pcc, "power_kw")

    def _reach(self, target: float, hours: float) -> None:
        image = self.view.image
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
        start, end = window(cmd, now, self.vpp, stale_start=True)
        target = cmd.grid_target_kw
        if cmd.grid_delta_kw is not None:
            target = self._grid_now("grid_delta_kw") + cmd.grid_delta_kw
        site_limits(self.config.control, "dispatch", target=target, floor=cmd.grid_min_kw,
                          ceiling=cmd.grid_max_kw)
        if target is not None and start - now <= REACH_AHEAD:
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
        start, end = window(cmd, now, self.vpp, stale_start=False)
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
            hold = Instruction(HOLD_ID, "park", now, now + _FOREVER, grid_target_kw=grid)
        if cmd.mode != "auto":
            for old in [a for a in self._active.values() if a.command == "dispatch"]:
                acks.append(self._end(old, f"ended by mode {cmd.mode} ({cmd.cmd_id})"))
        self.view.book.cancel(HOLD_ID)
        if hold is not None:
            self.view.book.put(hold)
        log.info("mode %s -> %s (%s)", self.mode, cmd.mode, cmd.cmd_id)
        self.mode = cmd.mode
        ack = {"cmd_id": cmd.cmd_id, "command": "mode", "status": "accepted", "mode": cmd.mode}
        if hold is not None:
            ack["grid_target_kw"] = round(hold.grid_target_kw, 3)
        self.stats.done += 1
        return [*acks, ack, {**ack, "status": "done", "reason": "applied"}]

    def _ev_session(self, cmd: EvSession) -> list[dict[str, Any]]:
        """A standing request for the charger's role (InstructionBook.requests), in every
        mode: it replaces the charger's earlier one and is applied by the next cycle."""
        req = session_request(self.config, self.view.image, cmd, self.clock.now())
        self.view.book.requests[cmd.device_id] = req
        session = int(req.session)
        ack: dict[str, Any] = {"cmd_id": cmd.cmd_id, "command": "ev_session",
                               "status": "accepted", "device_id": cmd.device_id,
                               "session": session}
        if cmd.departure is not None:
            ack["departure"] = iso(cmd.departure)
        if cmd.energy_kwh is not None:
            ack["energy_kwh"] = cmd.energy_kwh
        which = f"session {session}" if session else "the next session"
        log.info("ev_session %s accepted: %s %s%s%s", cmd.cmd_id, cmd.device_id, which,
                 f", leaves {ack['departure']}" if "departure" in ack else "",
                 f", needs {cmd.energy_kwh:g} kWh" if "energy_kwh" in ack else "")
        self.stats.done += 1
        return [ack, {**ack, "status": "done", "reason": f"applied to {which}"}]

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
        clash = self.view.book.get(i.id)
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
                self.view.book.put(i)
        start, end = window or (min(i.start for i in instructions),
                                max(i.end for i in instructions))
        ack: dict[str, Any] = {"cmd_id": cmd_id, "command": command, "status": "accepted",
                               "start": iso(start), "end": iso(end)}
        held = [i for i in instructions if i.start <= end and i.end > start]
        for key in ("grid_target_kw", "grid_max_kw", "grid_min_kw"):
            v = getattr(held[0], key) if held else math.nan
            if math.isfinite(v):
                ack[key] = round(v, 3)
        self._active[cmd_id] = Accepted(cmd_id, command, start, end,
                                         tuple(instructions) if owned else (), ack, event_id)
        log.info("%s %s accepted: %s", command, cmd_id,
                 ", ".join(f"{k}={v}" for k, v in ack.items() if k.startswith(("grid", "end"))))
        return ack

    def _end(self, acc: Accepted, reason: str, release: bool = True) -> dict[str, Any]:
        if release:
            for i in acc.instructions:
                self.view.book.cancel(i.id)
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

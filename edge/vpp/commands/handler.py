"""The command loop: platform commands from the broker's inbound queue judged in batches
(judge.py), the handler's state saved (edge/vpp/cmdstore.py) before the acks go to the
outbox, windows ended on time, and the state restored after a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.app.clock import Clock
from edge.app.fanout import SiteView
from edge.config import Config
from edge.report.mqtt import Inbound, MqttLink
from edge.report.outbox import Outbox
from edge.vpp.cmdstore import CommandStore, SavedCommand, Snapshot
from edge.vpp.commands.group import group_of, site_command
from edge.vpp.commands.judge import HOLD_ID, Accepted, CommandJudge, DrSink, Seen
from edge.vpp.commands.parse import Rejected, iso, parse_json

log = logging.getLogger(__name__)

_BATCH = 64  # commands judged per pass of the loop


@dataclass(frozen=True, slots=True)
class Submitted(Inbound):
    """A command from another door than the broker (the operator's HTTP API): `reply` gets
    its acks, as stored in the outbox, once they are."""

    reply: asyncio.Future | None = None


class CommandHandler(CommandJudge):
    """The judge wired to the broker, the outbox and the command store: `run` consumes the
    link's inbound queue, expires windows and sends the acks."""

    def __init__(self, config: Config, clock: Clock, view: SiteView, outbox: Outbox,
                 link: MqttLink, wake: Callable[[], None] | None = None,
                 dr: DrSink | None = None, store: CommandStore | None = None) -> None:
        super().__init__(config, clock, view, link.topic("cmd/"), dr)
        self.outbox = outbox
        self.link = link
        self.wake = wake or (lambda: None)
        self.store = store
        self.declared: dict[str, Any] | None = None  # first interval of the last flex sent

    def declare(self, flex: dict[str, Any]) -> None:
        """The flex message just queued: group commands with a pro-rata rule share by it."""
        intervals = flex.get("intervals") or [None]
        self.declared = intervals[0]

    # -- the loop -------------------------------------------------------------------------

    def subscribe(self) -> None:
        self.link.subscribe(self._prefix + "+")
        for gid in self.vpp.groups:
            self.link.subscribe(f"{self.link.cfg.topic_prefix}/group/{gid}/cmd/+")

    def _judge(self, item: Inbound) -> tuple[list[dict[str, Any]], bool]:
        """A site command as it is; a group command as this site's share of it (silent
        when it has none), its acks naming the group and the share."""
        found = group_of(item.topic, self.link.cfg.topic_prefix)
        if found is None:
            return self.handle(item.topic, item.payload)
        gid, name = found
        if gid not in self.vpp.groups:
            return [], False
        try:
            cmd = site_command(gid, name, item.payload, self.link.site_id, self.declared,
                               self.vpp.max_payload_bytes)
        except Rejected as exc:
            try:
                cmd_id = parse_json(item.payload).get("cmd_id")
            except ValueError:
                cmd_id = None
            cmd_id = cmd_id if isinstance(cmd_id, str) and len(cmd_id) <= 64 else None
            return [{**self._rejected(cmd_id, name, str(exc)), "group": gid}], False
        if cmd is None:
            return [], False
        acks, changed = self.handle(self._prefix + cmd.name, cmd.payload)
        for ack in acks:
            if ack.get("cmd_id") == cmd.cmd_id:
                ack.update(cmd.extra)  # in place: the done ack of the window keeps them
        return acks, changed

    async def submit(self, name: str, payload: bytes) -> list[dict[str, Any]]:
        """Judge `payload` as the command `cmd/<name>` from the broker would be: it joins
        the broker's queue, and its acks are stored and sent on MQTT the same way. Returns
        them as sent (with their msg_id; None where the outbox refused one). QueueFull
        when the queue is full."""
        reply = asyncio.get_running_loop().create_future()
        self.link.inbound.put_nowait(Submitted(self._prefix + name, payload, reply))
        return await reply

    async def run(self) -> None:
        """Consume commands until cancelled; a failure on one message is logged, never
        raised (the next message is handled as usual).

        Messages waiting together are judged together (up to _BATCH), then their acks are
        stored from a worker thread: an outbox write waits for an fsync, and a flood of
        commands must not hold the event loop (and with it the control cycle's polls).
        Rejections still unsaid in the log are summed up when the loop ends."""
        try:
            await self._consume()
        finally:
            self.rejects.flush()

    async def _consume(self) -> None:
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
            replies: list[tuple[asyncio.Future, int, int]] = []  # (reply, first ack, count)
            changed = False
            for item in items:
                try:
                    more, did = self._judge(item)
                except Exception:  # noqa: BLE001 - a bug must not end command handling
                    log.exception("command on %s failed in the handler", item.topic[:200])
                    more, did = [self._rejected(None, None, "internal error; see the log")], False
                if isinstance(item, Submitted) and item.reply is not None:
                    replies.append((item.reply, len(acks), len(more)))
                acks += more
                changed |= did
            ended = self.expire()
            if changed or ended:
                self.wake()
            acks += ended
            if acks:
                stamped = [{"ts": iso(self.clock.now()), **a} for a in acks]
                snap = self._snapshot() if changed or ended else None
                storing = asyncio.ensure_future(asyncio.to_thread(self._store, stamped, snap))
                try:
                    saved = await asyncio.shield(storing)
                except asyncio.CancelledError:
                    await storing  # acks already judged are stored before the task ends
                    raise
                if not saved and snap is not None:  # try those answers again next batch
                    self._unsaved.update(cmd_id for cmd_id, _, _ in snap.seen)
                for reply, first, count in replies:
                    if not reply.done():
                        reply.set_result(stamped[first:first + count])

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
            ack["msg_id"] = None
            try:
                ack["msg_id"] = self.outbox.enqueue(topic, ack)
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
            mode=self.mode, hold=self.view.book.get(HOLD_ID), saved_at=self.clock.now(),
            seen=seen, requests=list(self.view.book.requests.values()))

    def restore(self) -> None:
        """Take back what was saved before a restart: the mode (with its hold target), the
        accepted commands (their instructions back into the book), the EV session requests
        and the answered cmd_ids. Windows that ended meanwhile are ended, with their `done`
        ack, on the first pass of `run`."""
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
            self.view.book.put(saved.hold)
        for c in saved.active:
            for i in c.instructions:
                self.view.book.put(i)
            self._active[c.cmd_id] = Accepted(c.cmd_id, c.command, c.start, c.end,
                                               c.instructions, c.ack, c.event_id)
        for cmd_id, fp, ack in saved.seen:
            self._seen[cmd_id] = Seen(fp, ack)
        for r in saved.requests:
            self.view.book.requests[r.device_id] = r
        if saved.active or saved.mode != "auto" or saved.requests:
            log.info("restored mode %s, %d accepted command(s): %s, EV session requests for "
                     "%s", saved.mode, len(saved.active),
                     ", ".join(c.cmd_id for c in saved.active) or "-",
                     ", ".join(r.device_id for r in saved.requests) or "-")

    def _wall_to_next_end(self) -> float:
        if not self._active:
            return 1.0
        sim_s = (min(a.end for a in self._active.values()) - self.clock.now()).total_seconds()
        return min(max(self.clock.wall_s(sim_s), 0.0), 1.0)

"""Commands from the park platform (`<prefix>/<site>/cmd/<name>`) into the instruction book.

Every message gets an answer on `<prefix>/<site>/ack`, through the outbox so no ack is lost:
`accepted` or `rejected` (with the reason) at once, `done` when the window ends or the
command is cancelled or superseded. Each message passes, in order: the topic names a
command the site knows and allows (`vpp.allow`); the payload fits `vpp.max_payload_bytes`;
it is one JSON object (no NaN/Infinity, no repeated keys); it validates strictly against
its schema (edge/vpp/schemas/commands.py); its cmd_id is new, or an exact re-send
(acknowledged again with its current status: idempotent); its window is not over, not too
far ahead, not too long; and it keeps to the site (configured import/export limits, and for a dispatch
target starting within 15 min what the batteries can reach and sustain now). Anything
else is rejected with the reason and logged; nothing a platform sends can stop the handler.

A dispatch replaces every accepted dispatch whose window overlaps its own (they are ended
with `done`, "superseded by <cmd_id>"): the platform's latest word holds. A dr_event goes
to the DR manager (edge/vpp/dr/: baseline, ramp-in / hold / staggered restore, M&V
reports on `dr/<event_id>`, persisted); one with the event_id of an accepted event
updates it, and the earlier command is done, "superseded".

An ev_session sets an EV charging session's departure and/or energy: the charger's role
turns it into a standing request (InstructionBook.requests, one per charger, the latest
wins) for the session the charger has now, or the next car when none is plugged in; the
decision applies it (edge/roles/evsession.py). It is answered accepted and done at once.

Modes: `auto` (normal), `hold` (hold the PCC at its power at receipt; park dispatches are
ended and refused until `auto`), `local` (the platform lets go: park dispatches are ended
and refused until `auto`; the site runs on its own functions and plan). Grid-operator DR is
honoured in every mode: it ranks above the park (docs/domain.md §3, duty 3). Accepted
commands, the mode, the EV session requests and the answered cmd_ids are saved
(edge/vpp/cmdstore.py) before their acks go out and restored on start: a restart keeps
what the site acknowledged, and a window that ended meanwhile gets its `done` ack then.
DR events persist in the DR manager.

Modules: parse.py (the payload: JSON, schema), checks.py (the window and the site:
limits, what the batteries can reach, the charger an ev_session names), judge.py (one
message into the book and its acks), handler.py (the loop: broker queue, command store,
outbox; the operator's HTTP API submits into the same queue).
"""

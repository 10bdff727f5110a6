"""Park-platform commands on disk: an accepted dispatch, the site mode, the EV session
requests and the cmd_ids already answered survive a restart (a crash, a systemd restart, an
update), so the site keeps what it acknowledged and an exact re-send is still answered as a
re-send.

One SQLite file in the daemon's state dir, written before the acks of a batch go to the
outbox: an `accepted` ack that reached the platform is never for a command the site has
forgotten. Durability as the outbox: WAL with synchronous=FULL. Times are the daemon's
clock (simulated under HIL), as the handler keeps them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.app.sqlitefile import open_durable
from edge.control.instructions import Instruction
from edge.roles.evsession import EvRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS active (
    cmd_id       TEXT PRIMARY KEY,
    command      TEXT NOT NULL,
    start_ts     TEXT NOT NULL,
    end_ts       TEXT NOT NULL,
    instructions TEXT NOT NULL,
    ack          TEXT NOT NULL,
    event_id     TEXT
);
CREATE TABLE IF NOT EXISTS seen (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    cmd_id       TEXT NOT NULL UNIQUE,
    fingerprint  TEXT NOT NULL,
    ack          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    device_id    TEXT PRIMARY KEY,
    request      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mode (
    one          INTEGER PRIMARY KEY CHECK (one = 1),
    mode         TEXT NOT NULL,
    hold         TEXT,
    saved_at     TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class SavedCommand:
    cmd_id: str
    command: str
    start: datetime
    end: datetime
    instructions: tuple[Instruction, ...]  # the ones the handler owns (none for a DR event)
    ack: dict[str, Any]
    event_id: str | None


@dataclass(slots=True)
class Snapshot:
    """What one batch changed: the full set of active commands (a handful), the mode, and
    the cmd_ids whose answer is new or changed."""

    active: list[SavedCommand]
    mode: str
    hold: Instruction | None
    saved_at: datetime  # the daemon's clock when the batch was judged
    seen: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # id, fp, ack
    requests: list[EvRequest] = field(default_factory=list)  # all of them (one per charger)


@dataclass(slots=True)
class Restored:
    active: list[SavedCommand]
    mode: str
    hold: Instruction | None
    seen: list[tuple[str, str, dict[str, Any]]]
    saved_at: datetime | None
    requests: list[EvRequest] = field(default_factory=list)


def _ins_to_json(i: Instruction) -> str:
    d = asdict(i)
    d["start"], d["end"] = i.start.isoformat(), i.end.isoformat()
    return json.dumps(d)  # inf / nan bounds round-trip as JSON's Infinity / NaN extension


def _ins_from(d: dict[str, Any]) -> Instruction:
    d = dict(d)
    d["start"], d["end"] = datetime.fromisoformat(d["start"]), datetime.fromisoformat(d["end"])
    return Instruction(**d)


def _req_to_json(r: EvRequest) -> str:
    d = asdict(r)
    for k in ("at", "departure"):
        d[k] = None if d[k] is None else d[k].isoformat()
    return json.dumps(d)


def _req_from(d: dict[str, Any]) -> EvRequest:
    for k in ("at", "departure"):
        d[k] = None if d[k] is None else datetime.fromisoformat(d[k])
    return EvRequest(**d)


class CommandStore:
    def __init__(self, path: Path, seen_max: int) -> None:
        self._db = open_durable(path, _SCHEMA, "the park command store",
                                "check that the storage dir is writable (move a corrupt file "
                                "aside: accepted dispatches are then forgotten until the "
                                "platform sends them again)")
        self._lock = threading.Lock()  # saved from a worker thread, loaded at start
        self._seen_max = seen_max

    def save(self, snap: Snapshot) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM active")
                db.executemany(
                    "INSERT INTO active VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(c.cmd_id, c.command, c.start.isoformat(), c.end.isoformat(),
                      "[" + ",".join(_ins_to_json(i) for i in c.instructions) + "]",
                      json.dumps(c.ack), c.event_id) for c in snap.active])
                db.execute("DELETE FROM requests")
                db.executemany("INSERT INTO requests VALUES (?, ?)",
                               [(r.device_id, _req_to_json(r)) for r in snap.requests])
                db.execute("INSERT OR REPLACE INTO mode VALUES (1, ?, ?, ?)",
                           (snap.mode, None if snap.hold is None else _ins_to_json(snap.hold),
                            snap.saved_at.isoformat()))
                for cmd_id, fp, ack in snap.seen:
                    db.execute("INSERT INTO seen (cmd_id, fingerprint, ack) VALUES (?, ?, ?) "
                               "ON CONFLICT(cmd_id) DO UPDATE SET ack = excluded.ack",
                               (cmd_id, fp, json.dumps(ack)))
                if snap.seen:
                    db.execute("DELETE FROM seen WHERE seq <= (SELECT MAX(seq) FROM seen) - ?",
                               (self._seen_max,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def load(self) -> Restored:
        with self._lock:
            rows = self._db.execute("SELECT * FROM active ORDER BY start_ts").fetchall()
            active = [SavedCommand(r[0], r[1], datetime.fromisoformat(r[2]),
                                   datetime.fromisoformat(r[3]),
                                   tuple(_ins_from(d) for d in json.loads(r[4])),
                                   json.loads(r[5]), r[6]) for r in rows]
            m = self._db.execute("SELECT mode, hold, saved_at FROM mode").fetchone()
            mode, hold, saved_at = ("auto", None, None) if m is None else m
            seen = [(r[0], r[1], json.loads(r[2])) for r in self._db.execute(
                "SELECT cmd_id, fingerprint, ack FROM seen ORDER BY seq")]
            requests = [_req_from(json.loads(r[0])) for r in self._db.execute(
                "SELECT request FROM requests ORDER BY device_id")]
        return Restored(active, mode, None if hold is None else _ins_from(json.loads(hold)),
                        seen, None if saved_at is None else datetime.fromisoformat(saved_at),
                        requests)

    def clear(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for table in ("active", "seen", "mode", "requests"):
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

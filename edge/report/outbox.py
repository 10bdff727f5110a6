"""Write-ahead outbox: every report exists in SQLite before anyone tries to send it.

One file per site. Rows leave the table only after the broker acknowledged them (the MQTT
link calls `remove` on PUBACK), so a broker outage or a crashed process loses nothing: the
rows wait on disk and go out, oldest first, when a link is connected again.

`msg_id` comes from a persistent counter in the `meta` table, not from MAX(msg_id): it
keeps climbing after every row was removed and after the file is reopened, so an id is
never reused and the platform can drop duplicates by id alone.

Durability: journal_mode=WAL with synchronous=FULL. NORMAL survives a process crash but
may roll back the last commits on power loss; that could hand out an id again after a
reboot for a message the platform already has, and the platform would discard the new
message as a duplicate. An fsync per report (one every few seconds) is cheap by
comparison.

Thread-safe (one connection behind a lock); the MQTT link keeps all its calls on the
event-loop thread anyway. Calls are short synchronous statements (sub-millisecond plus an
fsync), fine to make from a coroutine.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.app.sqlitefile import open_durable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    msg_id     INTEGER PRIMARY KEY,
    topic      TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    qos        INTEGER NOT NULL DEFAULT 1,
    created_ts REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_msg_id', 0);
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    msg_id: int
    topic: str
    payload: str  # JSON text exactly as it goes on the wire; contains "msg_id"
    qos: int
    created_ts: float

    def data(self) -> dict[str, Any]:
        return json.loads(self.payload)


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[int], None]] = []
        self._db = open_durable(self.path, _SCHEMA, "outbox",
                                "check that the storage dir is writable and the file is not "
                                "corrupt (move it aside to start a fresh outbox)")

    # -- writing -------------------------------------------------------------------------

    def enqueue(self, topic: str, payload: dict[str, Any]) -> int:
        """Assign the next msg_id, store it inside the payload as "msg_id", commit, return it.

        The caller's dict is not modified.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (msg_id,) = self._db.execute(
                    "UPDATE meta SET value = value + 1 WHERE key = 'last_msg_id' RETURNING value"
                ).fetchone()
                body = json.dumps({**payload, "msg_id": msg_id}, separators=(",", ":"))
                self._db.execute(
                    "INSERT INTO outbox (msg_id, topic, payload, qos, created_ts) "
                    "VALUES (?, ?, ?, 1, ?)",
                    (msg_id, topic, body, time.time()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            listeners = list(self._listeners)
        for listener in listeners:
            listener(msg_id)
        return msg_id

    def remove(self, msg_id: int) -> None:
        """Forget a message the broker acknowledged. Removing an absent id is a no-op."""
        self.remove_many([msg_id])

    def remove_many(self, msg_ids: list[int]) -> None:
        """Forget acknowledged messages in one transaction: one fsync for a batch of
        PUBACKs instead of one each, which matters on an SD card while a backlog drains.
        A removal lost to a power cut only means that message is sent again (at-least-once)."""
        if not msg_ids:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM outbox WHERE msg_id = ?", [(i,) for i in msg_ids])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- reading -------------------------------------------------------------------------

    def pending(self, limit: int, after: int = 0) -> list[OutboxRow]:
        """Up to `limit` waiting messages with msg_id > `after`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT msg_id, topic, payload, qos, created_ts FROM outbox "
                "WHERE msg_id > ? ORDER BY msg_id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    @property
    def last_id(self) -> int:
        """The highest msg_id ever assigned in this file (0 before the first enqueue)."""
        with self._lock:
            return self._db.execute(
                "SELECT value FROM meta WHERE key = 'last_msg_id'"
            ).fetchone()[0]

    # -- plumbing ------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[int], None]) -> None:
        """Call `callback(msg_id)` after each committed enqueue, on the enqueuing thread."""
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[int], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

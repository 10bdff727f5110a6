"""The one way the daemon opens a store that must not lose a commit (outbox, OpenADR events,
park commands): WAL with synchronous=FULL, autocommit mode (each caller opens its own
transactions), usable from a worker thread under the caller's lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_durable(path: Path, schema: str, what: str, fix: str) -> sqlite3.Connection:
    """Open (create) `path` with `schema`; a file that cannot be opened raises RuntimeError
    naming `what`, the file and `fix`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except sqlite3.Error as exc:
        raise RuntimeError(f"cannot open {what} {path}: {exc}; {fix}") from exc
    return db

"""DR events, their baselines and final reports in SQLite (`dr.sqlite` in the state dir): a
restarted daemon resumes an event mid-way and keeps event days out of baselines."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

from edge.vpp.baseline import Baseline
from edge.vpp.shaping import DrEvent


class DrStore:
    """Events, their baselines and final reports in SQLite (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("CREATE TABLE IF NOT EXISTS dr_event (id TEXT PRIMARY KEY, "
                            "event TEXT NOT NULL, baseline TEXT, cancelled_at TEXT, final TEXT)")
            self.db.commit()
        except sqlite3.Error as exc:
            raise RuntimeError(f"cannot open the DR store {path}: {exc}; check that the storage "
                               "dir is writable (moving a corrupt file aside forgets past "
                               "events)") from exc

    def put(self, event: DrEvent, base: Baseline | None, cancelled_at: datetime | None,
            final: dict | None) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO dr_event VALUES (?, ?, ?, ?, ?)", (
                event.id, json.dumps(event.to_json()),
                None if base is None else json.dumps(base.to_json()),
                None if cancelled_at is None else cancelled_at.isoformat(),
                None if final is None else json.dumps(final)))

    def rows(self) -> list[tuple[DrEvent, Baseline | None, datetime | None, dict | None]]:
        out = []
        for ev, base, cancelled, final in self.db.execute("SELECT event, baseline, cancelled_at, "
                                                          "final FROM dr_event"):
            out.append((DrEvent.from_json(json.loads(ev)),
                        None if base is None else Baseline.from_json(json.loads(base)),
                        None if cancelled is None else datetime.fromisoformat(cancelled),
                        None if final is None else json.loads(final)))
        return out

    def prune(self, before: datetime) -> list[str]:
        """Forget final events that ended before `before`; returns their ids."""
        gone = [ev.id for ev, _b, _c, final in self.rows() if final is not None and ev.end < before]
        with self.db:
            self.db.executemany("DELETE FROM dr_event WHERE id = ?", [(i,) for i in gone])
        return gone

    def close(self) -> None:
        self.db.close()

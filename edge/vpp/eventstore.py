"""Grid-operator DR events on disk: openleadr keeps events in memory only, so without this a
restart mid-event would forget what the site had promised until the VTN sent it again.

One SQLite file in the daemon's state dir. Every event received is kept with its raw signals,
what they were normalised to (`DrRequest`s), the baseline they are relative to, its status
and the opt decision with its reason. On start, the live ones (opted in, not cancelled or
completed, not yet ended) go back into the instruction book before the VEN polls again.

Times are wall-clock UTC, as the VTN sent them; the daemon maps them onto its own clock
(which runs faster under HIL) when it builds instructions. Durability as the outbox: WAL with
synchronous=FULL, one short statement per change, fine to call from a coroutine.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from edge.app.sqlitefile import open_durable

OPT_IN, OPT_OUT = "optIn", "optOut"
ENDED = ("completed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id           TEXT PRIMARY KEY,
    modification INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    opt          TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    start_ts     TEXT    NOT NULL,
    end_ts       TEXT    NOT NULL,
    baseline_kw  REAL,
    requests     TEXT    NOT NULL,
    signals      TEXT    NOT NULL,
    received     TEXT    NOT NULL,
    updated      TEXT    NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class DrRequest:
    """One interval of one signal, protocol-free: what the site should do and when.

    Either `kw` (a change relative to the baseline, >= 0, in `direction`) or `target_kw`
    (an absolute grid power, + import) is set; the other is NaN.
    """

    event_id: str
    key: str  # unique within the event: "<signal>.<interval>"
    direction: Literal["reduce", "increase"]
    kw: float
    target_kw: float
    start: datetime  # wall clock, aware UTC
    end: datetime  # exclusive
    notice_s: float  # from reception to start; 0 when received after the start

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["kw"] = None if math.isnan(self.kw) else self.kw
        d["target_kw"] = None if math.isnan(self.target_kw) else self.target_kw
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DrRequest:
        return cls(
            d["event_id"], d["key"], d["direction"],
            math.nan if d["kw"] is None else float(d["kw"]),
            math.nan if d["target_kw"] is None else float(d["target_kw"]),
            datetime.fromisoformat(d["start"]), datetime.fromisoformat(d["end"]),
            float(d["notice_s"]),
        )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: str
    modification: int
    status: str  # far | near | active | completed | cancelled (OpenADR event status)
    opt: str  # optIn | optOut
    reason: str  # why (always for optOut: what the site could not deliver)
    start: datetime  # wall clock, aware UTC
    end: datetime
    baseline_kw: float  # grid import the relative requests are measured from (NaN: none)
    requests: tuple[DrRequest, ...]
    signals: list[dict[str, Any]] = field(default_factory=list)  # as received, JSON-safe
    received: datetime | None = None

    def live(self, now: datetime) -> bool:
        """Still to be honoured: opted in, not ended by the VTN, not past its end."""
        return self.opt == OPT_IN and self.status not in ENDED and self.end > now


def jsonable(value: Any) -> Any:
    """openleadr's parsed messages hold datetimes and timedeltas; keep them readable."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EventStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_durable(self.path, _SCHEMA, "the DR event store",
                                "check that the storage dir is writable (move a corrupt file "
                                "aside: live events are then forgotten until the VTN sends "
                                "them again)")

    def put(self, ev: StoredEvent, now: datetime) -> None:
        row = (
            ev.id, ev.modification, ev.status, ev.opt, ev.reason, ev.start.isoformat(),
            ev.end.isoformat(), None if math.isnan(ev.baseline_kw) else ev.baseline_kw,
            json.dumps([r.to_json() for r in ev.requests]), json.dumps(jsonable(ev.signals)),
            (ev.received or now).isoformat(), now.isoformat(),
        )
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO events (id, modification, status, opt, reason, start_ts, "
                "end_ts, baseline_kw, requests, signals, received, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    def set_status(self, event_id: str, status: str, now: datetime) -> None:
        with self._lock:
            self._db.execute("UPDATE events SET status = ?, updated = ? WHERE id = ?",
                             (status, now.isoformat(), event_id))

    def prune(self, before: datetime) -> int:
        """Forget completed and cancelled events that ended before `before`."""
        gone = [(e.id,) for e in self.all() if e.status in ENDED and e.end < before]
        with self._lock:
            self._db.executemany("DELETE FROM events WHERE id = ?", gone)
        return len(gone)

    def get(self, event_id: str) -> StoredEvent | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else self._event(row)

    def all(self) -> list[StoredEvent]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM events ORDER BY start_ts, id").fetchall()
        return [self._event(r) for r in rows]

    def open(self) -> list[StoredEvent]:
        """Events neither completed nor cancelled, by start time (ended ones stay as history)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM events WHERE status NOT IN (?, ?) ORDER BY start_ts, id",
                ENDED).fetchall()
        return [self._event(r) for r in rows]

    def live(self, now: datetime) -> list[StoredEvent]:
        """Events to honour from now on (see `StoredEvent.live`), by start time."""
        return [e for e in self.open() if e.live(now)]

    @staticmethod
    def _event(row: tuple) -> StoredEvent:
        (eid, mod, status, opt, reason, start, end, baseline, requests, signals, received,
         _updated) = row
        return StoredEvent(
            eid, mod, status, opt, reason, datetime.fromisoformat(start),
            datetime.fromisoformat(end), math.nan if baseline is None else baseline,
            tuple(DrRequest.from_json(r) for r in json.loads(requests)), json.loads(signals),
            datetime.fromisoformat(received),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

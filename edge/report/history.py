"""The site's own 15-min history: energy per interval, integrated from every control cycle
and kept in SQLite. Forecasts learn from it, DR baselines are computed from it, carbon and
the cumulative counters the platform settles on come out of it.

Intervals are aligned to UTC quarter hours (local quarter hours coincide for every zone
with a whole-quarter offset). Energy is integrated from the process image, not from the
meter's own registers, so a site without counters still gets them; a value that is not
GOOD is not integrated, and `covered_s` says how much of the interval was measured.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path

import numpy as np

from edge.image.balance import SitePower

INTERVAL_S = 900
PER_DAY = 86400 // INTERVAL_S
ENERGY = ("import_kwh", "export_kwh", "pv_kwh", "load_kwh", "charge_kwh", "discharge_kwh",
          "ev_kwh")
_COV_TERMS = ("covered_s", "covered_load_s", "covered_pv_s", "covered_bess_s")


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime  # UTC, on a quarter hour
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    pv_kwh: float = 0.0
    load_kwh: float = 0.0
    charge_kwh: float = 0.0
    discharge_kwh: float = 0.0
    covered_s: float = 0.0  # seconds of the interval with a GOOD grid reading
    # Seconds measured for the other terms; None: as covered_s. A stale PV inverter leaves
    # pv (and a balance-derived load) unmeasured while the grid is still metered.
    covered_load_s: float | None = None
    covered_pv_s: float | None = None
    covered_bess_s: float | None = None
    ev_kwh: float = 0.0  # EV charging (not in load_kwh, the building's); last: added later

    @property
    def consumed_kwh(self) -> float:
        """All the site consumed: the building and its EVs."""
        return self.load_kwh + self.ev_kwh

    @property
    def grid_kwh(self) -> float:
        return self.import_kwh - self.export_kwh

    def coverage_s(self, key: str) -> float:
        term = _COVER.get(key, "covered_s")
        own = getattr(self, term)
        return self.covered_s if own is None else own

    def mean_kw(self, key: str) -> float:
        """Average power of an energy term (`grid` = import − export) over the part of the
        interval it was measured: a gap is not a reduction. NaN when never measured."""
        kwh = self.grid_kwh if key == "grid" else getattr(self, f"{key}_kwh")
        cov = self.coverage_s(key)
        return kwh * 3600.0 / cov if cov > 0 else math.nan


_COVER = {"load": "covered_load_s", "pv": "covered_pv_s", "charge": "covered_bess_s",
          "discharge": "covered_bess_s", "ev": "covered_load_s"}


def interval_start(ts: datetime) -> datetime:
    t = ts.astimezone(UTC)
    return t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)


class Accumulator:
    """Integrates each cycle's powers into the open interval and into cumulative counters.

    `add` returns the interval it closed when the cycle crossed a quarter hour. A gap longer
    than `max_dt_s` (daemon stopped, clock jump) is not integrated: unknown energy is left
    out, never guessed."""

    def __init__(self, counters: dict[str, float] | None = None, max_dt_s: float = 60.0,
                 co2_kg_per_import_kwh: float = 0.0) -> None:
        self.counters = {k: 0.0 for k in (*ENERGY, "co2_kg")} | dict(counters or {})
        self.max_dt_s = max_dt_s
        self.co2_factor = co2_kg_per_import_kwh
        self._start: datetime | None = None
        self._acc = dict.fromkeys(ENERGY, 0.0)
        self._cov = dict.fromkeys(_COV_TERMS, 0.0)

    def add(self, ts: datetime, dt_s: float, p: SitePower) -> Interval | None:
        """Integrate `p` over the `dt_s` seconds ending at `ts`: they belong to the interval
        in which they began, so a cycle on the quarter hour closes the old interval."""
        usable = 0 < dt_s <= self.max_dt_s
        start = interval_start(ts - timedelta(seconds=dt_s) if usable else ts)
        closed = None
        if self._start is not None and start != self._start:
            closed = self._close()
        if self._start is None or closed is not None:
            self._start = start
        if not usable:
            return closed
        h = dt_s / 3600.0
        terms = {}
        if p.grid_kw is not None:
            terms["import_kwh"] = max(p.grid_kw, 0.0) * h
            terms["export_kwh"] = max(-p.grid_kw, 0.0) * h
            self._cov["covered_s"] += dt_s
        if p.pv_kw is not None:
            terms["pv_kwh"] = max(p.pv_kw, 0.0) * h
            self._cov["covered_pv_s"] += dt_s
        if p.load_kw is not None:
            terms["load_kwh"] = max(p.load_kw, 0.0) * h
            self._cov["covered_load_s"] += dt_s
        if p.ev_kw is not None:
            terms["ev_kwh"] = max(p.ev_kw, 0.0) * h
        if p.bess_kw is not None:
            terms["discharge_kwh"] = max(p.bess_kw, 0.0) * h
            terms["charge_kwh"] = max(-p.bess_kw, 0.0) * h
            self._cov["covered_bess_s"] += dt_s
        for k, v in terms.items():
            self._acc[k] += v
            self.counters[k] += v
        self.counters["co2_kg"] += terms.get("import_kwh", 0.0) * self.co2_factor
        return closed

    def current(self) -> Interval | None:
        """The open interval so far (energy up to the last cycle); None before the first.
        Live DR M&V reads it so the running quarter hour counts before it closes."""
        if self._start is None:
            return None
        return self._interval()

    def _interval(self) -> Interval:
        return Interval(self._start, **self._acc,
                        **{k: min(v, INTERVAL_S) for k, v in self._cov.items()})

    def _close(self) -> Interval:
        iv = self._interval()
        self._acc = dict.fromkeys(ENERGY, 0.0)
        self._cov = dict.fromkeys(_COV_TERMS, 0.0)
        return iv


_COLUMNS = [f.name for f in fields(Interval)]


class History:
    """15-min intervals and the cumulative counters in one SQLite file (WAL, so a reader
    such as a report never blocks the cycle)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        cols = ", ".join(f"{c} REAL" + (" NOT NULL" if c in ENERGY or c == "covered_s" else "")
                         for c in _COLUMNS[1:])
        self.db.execute(f"CREATE TABLE IF NOT EXISTS interval (start TEXT PRIMARY KEY, {cols})")
        have = {r[1] for r in self.db.execute("PRAGMA table_info(interval)")}
        for c in ENERGY:
            if c not in have:  # a file from before the term existed
                self.db.execute(f"ALTER TABLE interval ADD COLUMN {c} REAL NOT NULL DEFAULT 0")
        self.db.execute("CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, kwh REAL)")
        self.db.commit()

    @classmethod
    def reader(cls, path: str | Path) -> History:
        """A read-only second connection to the file, usable from a worker thread (one at a
        time): readers outside the cycle, such as the operator API, query it there and
        never hold the event loop; WAL keeps them from blocking the writer."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                  check_same_thread=False)
        return self

    def put(self, iv: Interval, counters: dict[str, float] | None = None,
            merge: bool = False) -> None:
        """Store an interval and, in the same transaction, the counters as they stood at its
        end. `merge` adds to a stored part of the same interval (the daemon saved the part
        before a restart) instead of replacing it."""
        row = asdict(iv)
        row["start"] = interval_start(iv.start).isoformat()
        values = [row[c] for c in _COLUMNS]
        if merge:
            add = ", ".join(f"{c} = {c} + excluded.{c}" for c in ENERGY)
            cov = ", ".join(f"{c} = MIN({INTERVAL_S}, COALESCE({c}, covered_s) + "
                            f"COALESCE(excluded.{c}, excluded.covered_s))" for c in _COV_TERMS[1:])
            upsert = (f"ON CONFLICT(start) DO UPDATE SET {add}, {cov}, "
                      f"covered_s = MIN({INTERVAL_S}, covered_s + excluded.covered_s)")
            sql = (f"INSERT INTO interval ({', '.join(_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(_COLUMNS))}) {upsert}")
        else:
            sql = (f"INSERT OR REPLACE INTO interval ({', '.join(_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(_COLUMNS))})")
        with self.db:
            self.db.execute(sql, values)
            if counters:
                self._save_counters(counters)

    def save_counters(self, counters: dict[str, float]) -> None:
        """Persist the counters before they are published, so a restart (even kill -9)
        resumes at or above any figure the platform has seen: counters never go back."""
        with self.db:
            self._save_counters(counters)

    def _save_counters(self, counters: dict[str, float]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO counter VALUES (?, ?)",
                            list(counters.items()))

    def counters(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT name, kwh FROM counter").fetchall())

    def intervals(self, start: datetime, end: datetime) -> list[Interval]:
        rows = self.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM interval WHERE start >= ? AND start < ? "
            "ORDER BY start", (interval_start(start).isoformat(), end.astimezone(UTC).isoformat()))
        return [Interval(datetime.fromisoformat(r[0]), *r[1:]) for r in rows]

    def series(self, key: str, start: datetime, end: datetime,
               min_coverage: float = 0.5) -> np.ndarray:
        """Mean kW of `key` (import, export, pv, load, charge, discharge, grid) per 15 min
        from `start` (inclusive) to `end` (exclusive); NaN where the interval is missing or
        less than `min_coverage` of it was measured."""
        s = interval_start(start)
        n = max(0, math.ceil((end - s).total_seconds() / INTERVAL_S))
        out = np.full(n, np.nan)
        for iv in self.intervals(s, end):
            i = int((iv.start - s).total_seconds() // INTERVAL_S)
            if 0 <= i < n and iv.coverage_s(key) >= min_coverage * INTERVAL_S:
                out[i] = iv.mean_kw(key)
        return out

    def day(self, key: str, day: date, tz: tzinfo) -> np.ndarray:
        """The 96 quarter hours of one local day (fewer or more on a DST change day)."""
        start = datetime.combine(day, datetime.min.time(), tz)
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz)
        return self.series(key, start, end)

    def prune(self, before: datetime) -> int:
        with self.db:
            cur = self.db.execute("DELETE FROM interval WHERE start < ?",
                                  (interval_start(before).isoformat(),))
        return cur.rowcount

    def close(self) -> None:
        self.db.close()

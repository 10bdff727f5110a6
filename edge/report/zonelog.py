"""Each HVAC zone's own history, the input of its model fit (edge/plan/learn.py): one row
per unit and 15-min interval in the site history's SQLite file (table `zone_interval`),
with the zone temperature at the interval's start, and the outdoor temperature and the
electric power averaged over it - the sample the fit's exact RC step takes
(edge/plan/identify.py).

Only GOOD readings count. A zone temperature not read within `SNAP_S` of the interval's
start, or an interval measured for less than `MIN_COVER` of its length, is stored as NaN
in that column, which the fit leaves out: a gap is unknown, never guessed."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from edge.report.history import INTERVAL_S, interval_start

SNAP_S = 60.0  # the zone reading at the start of an interval: within this of the start
MIN_COVER = 0.9  # share of an interval measured for its means to count


@dataclass(frozen=True, slots=True)
class ZoneRow:
    device: str
    start: datetime  # UTC, on a quarter hour
    zone_c: float  # at the start; NaN: not read near it
    outdoor_c: float  # mean; NaN: too little measured
    power_kw: float  # mean electric; NaN: too little measured
    covered_s: float


@dataclass(slots=True)
class _Open:
    start: datetime
    zone_c: float = math.nan
    outdoor_s: float = 0.0  # °C x s
    kwh: float = 0.0
    covered_s: float = 0.0


class ZoneRecorder:
    """Integrates each cycle's image into the open interval of every HVAC unit; `add`
    returns the rows of the intervals it closed. A gap longer than `max_dt_s` is not
    integrated (the daemon was stopped, the clock jumped)."""

    def __init__(self, device_ids: list[str], max_dt_s: float = 60.0) -> None:
        self.ids = list(device_ids)
        self.max_dt_s = max_dt_s
        self._open: dict[str, _Open] = {}

    def add(self, image) -> list[ZoneRow]:
        dt = image.dt_s
        usable = 0 < dt <= self.max_dt_s
        began = interval_start(image.ts - timedelta(seconds=dt) if usable else image.ts)
        now_start = interval_start(image.ts)
        closed = []
        for dev in self.ids:
            iv = self._open.get(dev)
            if iv is not None and iv.start != began:
                closed.append(_row(dev, iv))
                iv = None
            if iv is None:
                iv = self._open[dev] = _Open(began)
            good = image.good(dev)
            if usable and good:
                iv.outdoor_s += image.value(dev, "outdoor_temp_c") * dt
                iv.kwh += max(image.value(dev, "power_kw"), 0.0) * dt / 3600
                iv.covered_s += dt
            if now_start != began:  # this image is the first of the next interval
                closed.append(_row(dev, iv))
                iv = self._open[dev] = _Open(now_start)
            if good and math.isnan(iv.zone_c) and (image.ts - iv.start).total_seconds() <= SNAP_S:
                iv.zone_c = image.value(dev, "zone_temp_c")
        return closed


def _row(dev: str, iv: _Open) -> ZoneRow:
    ok = iv.covered_s >= MIN_COVER * INTERVAL_S
    return ZoneRow(dev, iv.start, iv.zone_c,
                   iv.outdoor_s / iv.covered_s if ok else math.nan,
                   iv.kwh * 3600 / iv.covered_s if ok else math.nan, min(iv.covered_s, INTERVAL_S))


class ZoneLog:
    """The `zone_interval` table on an open connection to the history file."""

    def __init__(self, db: sqlite3.Connection, create: bool = True) -> None:
        self.db = db
        if create:
            with db:
                db.execute("CREATE TABLE IF NOT EXISTS zone_interval (device TEXT NOT NULL, "
                           "start TEXT NOT NULL, zone_c REAL, outdoor_c REAL, power_kw REAL, "
                           "covered_s REAL NOT NULL, PRIMARY KEY (device, start))")

    def put(self, rows: list[ZoneRow]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO zone_interval VALUES (?, ?, ?, ?, ?, ?)",
                [(r.device, interval_start(r.start).isoformat(), _sql(r.zone_c),
                  _sql(r.outdoor_c), _sql(r.power_kw), r.covered_s) for r in rows])

    def series(self, device: str, start: datetime, end: datetime
               ) -> tuple[list[datetime], np.ndarray, np.ndarray, np.ndarray]:
        """(interval starts, zone °C, outdoor °C, electric kW) on the 15-min grid from `start`
        (inclusive) to `end` (exclusive); NaN where nothing was stored."""
        s = interval_start(start)
        n = max(0, math.ceil((end - s).total_seconds() / INTERVAL_S))
        times = [s + timedelta(seconds=k * INTERVAL_S) for k in range(n)]
        out = np.full((3, n), np.nan)
        try:
            rows = self.db.execute(
                "SELECT start, zone_c, outdoor_c, power_kw FROM zone_interval WHERE device = ? "
                "AND start >= ? AND start < ?",
                (device, s.isoformat(), (s + timedelta(seconds=n * INTERVAL_S)).isoformat())
            ).fetchall()
        except sqlite3.OperationalError:  # a file from before the table existed
            rows = []
        for r in rows:
            k = int((datetime.fromisoformat(r[0]) - s).total_seconds() // INTERVAL_S)
            if 0 <= k < n:
                out[:, k] = [math.nan if v is None else v for v in r[1:]]
        return times, out[0], out[1], out[2]

    def prune(self, before: datetime) -> int:
        with self.db:
            cur = self.db.execute("DELETE FROM zone_interval WHERE start < ?",
                                  (interval_start(before).isoformat(),))
        return cur.rowcount


def _sql(x: float) -> float | None:
    return None if not math.isfinite(x) else x

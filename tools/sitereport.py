"""`pedf-edge report`: one local day of a real site as the HTML day report of demo and
simulate (tools/report_html.py), from the site's own 15-min history
(`<storage.dir>/history.sqlite`, edge/report/history.py), with what the battery saved.

The saving is the day's bill at the configured tariff - import at its period's price, export
at the export price - next to the same load and PV without the battery. Without it, each
quarter hour's grid energy is the metered one plus what the battery discharged, less what
it charged; netted per quarter hour (import and export inside one interval cannot be told
apart afterwards), which if anything flatters the site without the battery. The demand
charge is billed on the month's peak, not a day's: the day's peaks are shown, not priced.

The history is opened read-only: a report never writes to the file of a running daemon,
and WAL lets it read while the daemon writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from edge.app.statedir import state_dir
from edge.config import Config
from edge.report.bill import energy_cost, self_consumption_pct
from edge.report.history import INTERVAL_S, History, Interval
from tools.report_html import Bills, ReportData, write


class NoHistory(LookupError):
    """The state dir holds no history for the day; the message names the dir and what it has."""


@dataclass(frozen=True, slots=True)
class Row:
    """One history interval as the figures read a sample: mean kW over the quarter hour
    ending at `t`; None where the term was not measured (or, for EVs, the site has none)."""

    t: datetime
    load_kw: float | None
    ev_kw: float | None
    pv_kw: float | None
    bess_kw: float | None
    grid_kw: float | None
    pv_available_kw: float | None = None  # not in the history: curtailment is not metered
    soc_pct: float | None = None  # not in the history


def recorded_days(history: History, tz: tzinfo) -> list[date]:
    starts = history.db.execute("SELECT start FROM interval").fetchall()
    return sorted({datetime.fromisoformat(s).astimezone(tz).date() for (s,) in starts})


def _spans(days: list[date]) -> str:
    """[15, 16, 17, 19] June -> "2026-06-15 to 2026-06-17, 2026-06-19"."""
    spans: list[list[date]] = []
    for d in days:
        if spans and d - spans[-1][1] == timedelta(days=1):
            spans[-1][1] = d
        else:
            spans.append([d, d])
    text = [a.isoformat() if a == b else f"{a.isoformat()} to {b.isoformat()}" for a, b in spans]
    return ", ".join(text if len(text) <= 8 else ["…", *text[-8:]])


def day_bounds(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """The local day in UTC (23 or 25 hours long on a DST change)."""
    return tuple(datetime.combine(d, datetime.min.time(), tz).astimezone(UTC)
                 for d in (day, day + timedelta(days=1)))


def day_intervals(config: Config, day: date) -> tuple[list[Interval], Path]:
    """The day's intervals, or NoHistory naming the state dir and the days it has."""
    tz = ZoneInfo(config.site.timezone)
    directory = state_dir(config)
    path = directory / "history.sqlite"
    if not path.exists():
        raise NoHistory(f"no history in {directory} (no history.sqlite): has `pedf-edge run` "
                        "run with this config's storage.dir?")
    history = History.reader(path)
    try:
        intervals = history.intervals(*day_bounds(day, tz))
        days = [] if intervals else recorded_days(history, tz)
    finally:
        history.close()
    if not intervals:
        has = f"it has {_spans(days)} ({len(days)} days)" if days else "it holds no intervals"
        raise NoHistory(f"no history for {day.isoformat()} ({config.site.timezone}) in "
                        f"{path}; {has}")
    return intervals, path


def _kw(iv: Interval, key: str) -> float | None:
    v = iv.mean_kw(key)
    return None if v != v else round(v, 3)


def rows(intervals: list[Interval], lo: datetime, n: int) -> list[Row]:
    """A row for each of the `n` quarter hours from `lo`: one not recorded is all None, so
    the figures show the gap instead of drawing across it."""
    ev = any(iv.ev_kwh > 0 for iv in intervals)
    by_start = {iv.start: iv for iv in intervals}
    out = []
    for k in range(n):
        start = lo + timedelta(seconds=k * INTERVAL_S)
        end = start + timedelta(seconds=INTERVAL_S)
        iv = by_start.get(start)
        if iv is None:
            out.append(Row(end, None, None, None, None, None))
            continue
        dis, ch = _kw(iv, "discharge"), _kw(iv, "charge")
        out.append(Row(end, _kw(iv, "load"), _kw(iv, "ev") if ev else None, _kw(iv, "pv"),
                       None if dis is None or ch is None else dis - ch, _kw(iv, "grid")))
    return out


def bills(config: Config, day: date, intervals: list[Interval]) -> tuple[Bills, dict, dict]:
    """Per quarter hour of the day, the cost with and without the battery, and the day's
    KPIs of each case."""
    tz = ZoneInfo(config.site.timezone)
    lo, hi = day_bounds(day, tz)
    n = int((hi - lo).total_seconds() // INTERVAL_S)
    cost = {"with battery": np.zeros(n), "without battery": np.zeros(n)}
    kpis = {case: dict.fromkeys(("import_kwh", "export_kwh", "import_cost", "export_revenue",
                                 "peak_kw", "pv_kwh", "consumed_kwh"), 0.0) for case in cost}
    for iv in intervals:
        i = int((iv.start - lo).total_seconds() // INTERVAL_S)
        net = iv.grid_kwh + iv.discharge_kwh - iv.charge_kwh
        for case, imp, exp in (("with battery", iv.import_kwh, iv.export_kwh),
                               ("without battery", max(net, 0.0), max(-net, 0.0))):
            k = kpis[case]
            cost_in, revenue = energy_cost(config.tariff, tz, iv.start, imp, exp)
            k["import_kwh"] += imp
            k["export_kwh"] += exp
            k["import_cost"] += cost_in
            k["export_revenue"] += revenue
            k["pv_kwh"] += iv.pv_kwh
            k["consumed_kwh"] += iv.consumed_kwh
            if iv.covered_s > 0:  # mean net import over what was measured
                k["peak_kw"] = max(k["peak_kw"], (imp - exp) * 3600 / iv.covered_s)
            cost[case][i] = cost_in - revenue
    for k in kpis.values():
        k["bill"] = k["import_cost"] - k["export_revenue"]
    return Bills(lo, INTERVAL_S, cost), kpis["with battery"], kpis["without battery"]


def headline(day: date, a: dict, b: dict, cur: str) -> str:
    saved = b["bill"] - a["bill"]
    share = f" ({100 * saved / b['bill']:.1f} % less)" if b["bill"] > 0 else ""
    what = (f"the battery saved {saved:,.2f} {cur}" if saved >= 0 else
            f"the battery cost {-saved:,.2f} {cur} more than it saved")
    return (f"On {day.isoformat()} {what}: the day's bill was {a['bill']:,.2f} {cur} at the "
            f"configured tariff, against {b['bill']:,.2f} {cur} for the same load and PV "
            f"without the battery{share}.")


def report_data(config: Config, day: date, intervals: list[Interval], source: Path) -> ReportData:
    tz = ZoneInfo(config.site.timezone)
    cur = config.tariff.currency
    per_step, a, b = bills(config, day, intervals)
    charged = sum(iv.charge_kwh for iv in intervals)
    discharged = sum(iv.discharge_kwh for iv in intervals)
    kpi_rows = [
        ("Bill (import cost − export revenue)", cur, [a["bill"], b["bill"]]),
        ("Import cost", cur, [a["import_cost"], b["import_cost"]]),
        ("Export revenue", cur, [a["export_revenue"], b["export_revenue"]]),
        ("Energy imported", "kWh", [a["import_kwh"], b["import_kwh"]]),
        ("Energy exported", "kWh", [a["export_kwh"], b["export_kwh"]]),
        ("Peak import (15-min mean)", "kW", [a["peak_kw"], b["peak_kw"]]),
        ("PV generated", "kWh", [a["pv_kwh"], b["pv_kwh"]]),
        ("Consumption (building and EVs)", "kWh", [a["consumed_kwh"], b["consumed_kwh"]]),
        ("Battery charged", "kWh", [charged, None]),
        ("Battery discharged", "kWh", [discharged, None]),
        ("Self-consumption", "%", [self_consumption_pct(a), self_consumption_pct(b)]),
    ]
    lo, hi = day_bounds(day, tz)
    n = int((hi - lo).total_seconds() // INTERVAL_S)
    partial = sum(iv.covered_s < INTERVAL_S - 1 for iv in intervals)
    notes = [f"Recorded: {len(intervals)} of the day's {n} quarter hours"
             + (f", {partial} of them only partly measured (the daemon down or a meter "
                "stale for a while); the figures cover what was measured." if partial else "."),
             f"Without the battery: each quarter hour's metered grid energy plus what the "
             f"battery discharged, less what it charged, netted per quarter hour. Both bills "
             f"at the tariff configured now: import at its period's price, export at "
             f"{config.tariff.export_price:g} {cur}/kWh."]
    if config.tariff.demand_charge_per_kw > 0:
        notes.append(f"The demand charge ({config.tariff.demand_charge_per_kw:g} {cur}/kW) is "
                     "billed on the month's peak and is not in these bills; the day's peaks "
                     "are in the table.")
    return ReportData(
        title=f"{config.site.id}: {day.isoformat()} ({day:%A})", tz=tz, currency=cur,
        subtitle=f"{config.site.name + ' — ' if config.site.name else ''}from the site's "
                 f"history, {source}",
        samples=rows(intervals, lo, n),
        import_price=lambda t: config.tariff.price_at(t.astimezone(tz).time()),
        export_price=config.tariff.export_price,
        kpi_columns=["with battery", "without battery"], kpi_rows=kpi_rows, notes=notes,
        import_limit_kw=config.control.import_limit_kw,
        export_limit_kw=config.control.export_limit_kw,
        headline=headline(day, a, b, cur), sample_s=INTERVAL_S, bills=per_step)


def yesterday(config: Config) -> date:
    return datetime.now(ZoneInfo(config.site.timezone)).date() - timedelta(days=1)


def day_report(config: Config, day: date | None = None,
               out: Path | None = None) -> tuple[Path, str]:
    """Write the report of `day` (default: yesterday, local) to `out` (default:
    report-<site>-<day>.html here); returns the file and the headline. NoHistory when the
    history has nothing of that day."""
    day = day or yesterday(config)
    intervals, source = day_intervals(config, day)
    data = report_data(config, day, intervals, source)
    path = write(data, out or Path(f"report-{config.site.id}-{day.isoformat()}.html"))
    return path, data.headline

"""A daily report of a simulated (or real) run as one self-contained HTML file: a headline,
a KPI table and, per local day, the figures - power flows, SoC, prices, plan vs actual, the
cumulative bill - drawn with matplotlib's object API (no pyplot, no GUI backend) and
embedded as inline SVG, so the file opens anywhere, offline, and can be mailed as is. A
figure without data is left out (a site's history keeps no SoC). Every time axis shades the
tariff's dearest and cheapest hours, and the legends sit below the plots, off the data."""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure

from edge.report.bill import self_consumption_pct

FIGURES = ("power", "soc", "prices", "plan")  # ids per day: fig-<name>-<YYYY-MM-DD>
_C = {"load": "#444444", "pv": "#e0a000", "pv_av": "#e0a000", "bess": "#2a7ab0",
      "grid": "#c0392b", "plan": "#7b3fa0", "opt": "#2e8b57", "export": "#888888",
      "ev": "#16a085"}
_BAND = {"peak": "#fbe3c8", "valley": "#dcebf7"}  # the tariff's dearest / cheapest hours


@dataclass
class Steps:
    """Per-step values (kW, %) on a regular grid: e.g. a plan in force or the optimum."""

    start: datetime
    step_s: int
    grid_kw: np.ndarray
    bess_kw: np.ndarray
    soc_pct: np.ndarray | None = None  # at the end of each step

    def times(self) -> list[datetime]:
        return [self.start + timedelta(seconds=i * self.step_s) for i in range(len(self.grid_kw) + 1)]


@dataclass
class Bills:
    """Cost per step (import cost − export revenue) of each case, e.g. the site with and
    without its battery: drawn as the cumulative bill of each day."""

    start: datetime
    step_s: int
    cases: dict[str, np.ndarray]  # label -> cost per step


@dataclass
class ReportData:
    title: str
    tz: tzinfo
    currency: str
    samples: Sequence  # hil.site.Sample, one per simulated minute
    import_price: Callable[[datetime], float]  # per kWh at an instant (UTC)
    export_price: float
    kpi_columns: list[str]
    kpi_rows: list[tuple[str, str, list[float | None]]]  # name, unit, one value per column
    subtitle: str = ""
    notes: list[str] = field(default_factory=list)
    import_limit_kw: float | None = None
    export_limit_kw: float | None = None
    actual: Steps | None = None  # 15-min means of what happened
    plan: Steps | None = None  # what the plan in force said for each step
    optimum: Steps | None = None  # the perfect-foresight schedule
    windows: list[tuple[datetime, datetime, str]] = field(default_factory=list)  # events
    headline: str = ""  # one sentence above the KPI table, e.g. the savings
    sample_s: int = 60  # what one sample covers: 60 (a simulated minute), 900 (a history row)
    bills: Bills | None = None
    no_plan_title: str = "Actual (no plan: rule-based control)"


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "pedf"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _fig(height: float) -> Figure:
    return Figure(figsize=(10, height), layout="constrained")


def _axes(fig: Figure, n: int = 1, ratios=None):
    axs = fig.subplots(n, 1, sharex=True, gridspec_kw={"height_ratios": ratios} if ratios else None)
    return list(axs) if n > 1 else [axs]


def _finish(ax, tz: tzinfo, day0: datetime, ylabel: str) -> None:
    ax.set_xlim(day0, day0 + timedelta(days=1))
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=tz))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _legend(fig: Figure) -> None:
    """One legend per figure, below its plots: it never hides a curve or a band."""
    seen: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center",
                   ncols=min(len(seen), 4), fontsize=8, frameon=False)


def tariff_bands(price: Callable[[datetime], float], lo: datetime,
                 hi: datetime) -> list[tuple[datetime, datetime, str, float]]:
    """The spans of the dearest and the cheapest import price between `lo` and `hi`, by the
    minute: (start, end, "peak" | "valley", price). None under a flat price."""
    minutes = int((hi - lo).total_seconds() // 60)
    prices = [round(price(lo + timedelta(minutes=m)), 6) for m in range(minutes)]
    if len(set(prices)) < 2:
        return []
    top, bottom = max(prices), min(prices)
    out, begin = [], 0
    for m in range(1, minutes + 1):
        if m == minutes or prices[m] != prices[begin]:
            kind = "peak" if prices[begin] == top else "valley" if prices[begin] == bottom else ""
            if kind:
                out.append((lo + timedelta(minutes=begin), lo + timedelta(minutes=m), kind,
                            prices[begin]))
            begin = m
    return out


def _shade(ax, data: ReportData, lo: datetime, hi: datetime) -> None:
    for a, b, kind, p in tariff_bands(data.import_price, lo, hi):
        what = "dearest" if kind == "peak" else "cheapest"
        ax.axvspan(a, b, color=_BAND[kind], lw=0, zorder=0,
                   label=f"{what} hours ({p:g} {data.currency}/kWh)")
    for a, b, label in data.windows:
        if a < hi and b > lo:
            ax.axvspan(max(a, lo), min(b, hi), color="#f2d7d5", alpha=0.6, lw=0)
            ax.text(max(a, lo), 0.98, label, transform=ax.get_xaxis_transform(), fontsize=7,
                    va="top")


def _steps(ax, s: Steps | None, key: str, lo: datetime, hi: datetime, label: str, color: str,
           style: str = "-") -> None:
    if s is None:
        return
    y = getattr(s, key)
    if y is None or not np.isfinite(y).any():
        return
    t = s.times()
    keep = [i for i in range(len(y)) if lo <= t[i] < hi]
    if not keep:
        return
    xs = [t[i] for i in keep] + [t[keep[-1] + 1]]
    ys = list(y[keep]) + [y[keep[-1]]]
    ax.step(xs, ys, where="post", color=color, ls=style, lw=1.4, label=label)


def _line(ax, t: list[datetime], y: np.ndarray, step_s: int, **kw) -> None:
    """A measured series; left out when nothing was measured. Samples longer than a minute
    are means over the span ending at their time: drawn as steps over that span."""
    if not np.isfinite(y).any():
        return
    if step_s <= 60:
        ax.plot(t, y, **kw)
    else:
        ax.step([t[0] - timedelta(seconds=step_s), *t], [y[0], *y], where="pre", **kw)


def _resolution(step_s: int) -> str:
    return "1-min samples" if step_s <= 60 else f"{step_s // 60}-min means"


def _day_figures(data: ReportData, day: date, rows: list) -> dict[str, str]:
    tz = data.tz
    lo = datetime.combine(day, datetime.min.time(), tz)
    hi = lo + timedelta(days=1)
    t = [r.t for r in rows]
    col = {k: np.array([v if (v := getattr(r, k, None)) is not None else np.nan for r in rows],
                       dtype=float)
           for k in ("load_kw", "ev_kw", "pv_kw", "pv_available_kw", "bess_kw", "grid_kw",
                     "soc_pct")}
    step = data.sample_s
    out = {}

    fig = _fig(4.0)
    (ax,) = _axes(fig)
    _line(ax, t, col["load_kw"], step, color=_C["load"], lw=1.2, label="load")
    _line(ax, t, col["ev_kw"], step, color=_C["ev"], lw=1.2, label="EV charging")
    _line(ax, t, col["pv_available_kw"], step, color=_C["pv_av"], lw=1, ls=":",
          label="PV available")
    _line(ax, t, col["pv_kw"], step, color=_C["pv"], lw=1.4, label="PV")
    _line(ax, t, col["bess_kw"], step, color=_C["bess"], lw=1.2, label="battery (+ discharge)")
    _line(ax, t, col["grid_kw"], step, color=_C["grid"], lw=1.2, label="grid (+ import)")
    if data.import_limit_kw is not None:
        ax.axhline(data.import_limit_kw, color=_C["grid"], ls="--", lw=0.8, label="import limit")
    if data.export_limit_kw is not None:
        ax.axhline(-data.export_limit_kw, color=_C["export"], ls="--", lw=0.8,
                   label="export limit")
    ax.axhline(0, color="black", lw=0.5)
    _shade(ax, data, lo, hi)
    _finish(ax, tz, lo, "kW")
    ax.set_title(f"Power flows ({_resolution(step)})", fontsize=10)
    _legend(fig)
    out["power"] = _svg(fig)

    fig = _fig(3.0)
    (ax,) = _axes(fig)
    _line(ax, t, col["soc_pct"], step, color=_C["bess"], lw=1.4, label="SoC actual")
    _steps(ax, data.plan, "soc_pct", lo, hi, "SoC planned (plan in force)", _C["plan"], "--")
    _steps(ax, data.optimum, "soc_pct", lo, hi, "SoC optimum (perfect foresight)", _C["opt"], ":")
    if ax.get_legend_handles_labels()[0]:  # a site's history keeps no SoC
        ax.set_ylim(0, 100)
        _shade(ax, data, lo, hi)
        _finish(ax, tz, lo, "%")
        ax.set_title("State of charge", fontsize=10)
        _legend(fig)
        out["soc"] = _svg(fig)

    fig = _fig(2.8)
    (ax,) = _axes(fig)
    minutes = [lo + timedelta(minutes=m) for m in range(1441)]
    ax.step(minutes, [data.import_price(m) for m in minutes], where="post", color=_C["grid"],
            lw=1.4, label=f"import ({data.currency}/kWh)")
    ax.axhline(data.export_price, color=_C["export"], lw=1.2, ls="--",
               label=f"export ({data.currency}/kWh)")
    ax.set_ylim(bottom=0)
    _shade(ax, data, lo, hi)
    _finish(ax, tz, lo, f"{data.currency}/kWh")
    ax.set_title("Prices", fontsize=10)
    _legend(fig)
    out["prices"] = _svg(fig)

    if data.actual is not None or data.plan is not None or data.optimum is not None:
        out["plan"] = _plan_figure(data, lo, hi)
    if data.bills is not None:
        out["cost"] = _bill_figure(data, lo, hi)
    return out


def _plan_figure(data: ReportData, lo: datetime, hi: datetime) -> str:
    fig = _fig(4.8)
    ax1, ax2 = _axes(fig, 2)
    for ax, key, what in ((ax1, "grid_kw", "grid (+ import)"), (ax2, "bess_kw",
                                                                "battery (+ discharge)")):
        _steps(ax, data.actual, key, lo, hi, f"{what} actual", _C["grid" if ax is ax1 else "bess"])
        _steps(ax, data.plan, key, lo, hi, "plan in force", _C["plan"], "--")
        _steps(ax, data.optimum, key, lo, hi, "optimum", _C["opt"], ":")
        ax.axhline(0, color="black", lw=0.5)
        _shade(ax, data, lo, hi)
        _finish(ax, data.tz, lo, "kW")
    what = ("Plan vs actual" if data.plan is not None else
            "Actual vs optimum (no plan: rule-based control)" if data.optimum is not None else
            data.no_plan_title)
    ax1.set_title(f"{what}, 15-min means", fontsize=10)
    _legend(fig)
    return _svg(fig)


def _bill_figure(data: ReportData, lo: datetime, hi: datetime) -> str:
    """Each case's bill from the start of the day: the gap at midnight is the day's saving."""
    b = data.bills
    fig = _fig(3.0)
    (ax,) = _axes(fig)
    n = len(next(iter(b.cases.values())))
    t = [b.start + timedelta(seconds=i * b.step_s) for i in range(n + 1)]
    keep = [i for i in range(len(t) - 1) if lo <= t[i] < hi]
    styles = iter([("-", _C["grid"]), ("--", _C["load"]), (":", _C["opt"])])
    for label, cost in b.cases.items():
        style, color = next(styles, ("-", None))
        if keep:
            ys = np.concatenate([[0.0], np.cumsum(np.nan_to_num(cost[keep]))])
            ax.step([t[i] for i in keep] + [t[keep[-1] + 1]], ys, where="pre", ls=style,
                    color=color, lw=1.4, label=label)
    ax.axhline(0, color="black", lw=0.5)
    _shade(ax, data, lo, hi)
    _finish(ax, data.tz, lo, data.currency)
    ax.set_title("Cumulative bill (import cost − export revenue)", fontsize=10)
    _legend(fig)
    return _svg(fig)


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, int):  # a count
        return f"{v:,d}"
    return f"{v:,.2f}"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .8em;border-bottom:1px solid #ddd}
td.n{text-align:right;font-variant-numeric:tabular-nums}figure{margin:1em 0}
figcaption{font-size:.85em;color:#555}svg{max-width:100%;height:auto}.note{color:#555}
.headline{font-size:1.3em;font-weight:600;margin:.6em 0}"""


def render(data: ReportData) -> str:
    day_of = {id(r): (r.t - timedelta(seconds=1)).astimezone(data.tz).date() for r in data.samples}
    days = sorted(set(day_of.values()))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in data.kpi_columns)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(unit)}</td>"
        + "".join(f'<td class="n">{_fmt(v)}</td>' for v in values) + "</tr>"
        for name, unit, values in data.kpi_rows)
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(data.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(data.title)}</h1>",
        f"<p>{html.escape(data.subtitle)}</p>" if data.subtitle else "",
        f"<p class='headline'>{html.escape(data.headline)}</p>" if data.headline else "",
        f"<table><tr><th>KPI</th><th>unit</th>{head}</tr>{body}</table>",
        "".join(f"<p class='note'>{html.escape(n)}</p>" for n in data.notes),
    ]
    captions = {"power": "Power flows", "soc": "State of charge", "prices": "Prices",
                "plan": "Plan vs actual", "cost": "Cumulative bill"}
    for day in days:
        rows = [r for r in data.samples if day_of[id(r)] == day]  # a sample ends its minute
        parts.append(f"<h2>{day.isoformat()} ({day:%A})</h2>")
        for name, svg in _day_figures(data, day, rows).items():
            parts.append(f"<figure id='fig-{name}-{day.isoformat()}'>{svg}"
                         f"<figcaption>{captions[name]}, {day.isoformat()}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(data: ReportData, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render(data), encoding="utf-8")
    return p


def from_site(config, site, kpis: dict, plan: Steps | None = None,
              title: str | None = None, end: datetime | None = None) -> ReportData:
    """The report of a HIL run without a scenario (the demo): the site's samples up to
    `end`, its tariff, and the controlled site next to the same day without a battery."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(config.site.timezone)
    samples = [s for s in site.samples if end is None or s.t <= end]
    a, b = kpis["with_battery"], kpis["no_battery"]
    cur = kpis["currency"]

    rows = [("Total cost", cur, "total_cost"), ("Energy cost", cur, "energy_cost"),
            ("Demand charge", cur, "demand_cost"), ("Energy imported", "kWh", "import_kwh"),
            ("Energy exported", "kWh", "export_kwh"), ("PV curtailed", "kWh", "pv_curtailed_kwh"),
            ("Peak import (15-min mean)", "kW", "peak_15min_import_kw")]
    kpi_rows = [(n, u, [a[k], b[k]]) for n, u, k in rows]
    kpi_rows.append(("Self-consumption", "%", [self_consumption_pct(a), self_consumption_pct(b)]))
    c = config.control
    return ReportData(
        actual=quarter_hours(samples),
        title=title or f"{config.site.id}: simulated {kpis['sim_hours']:.1f} h",
        tz=tz, currency=cur, samples=samples,
        import_price=lambda t: config.tariff.price_at(t.astimezone(tz).time()),
        export_price=config.tariff.export_price, kpi_columns=["controlled", "no battery"],
        kpi_rows=kpi_rows, subtitle=config.site.name, import_limit_kw=c.import_limit_kw,
        export_limit_kw=c.export_limit_kw, plan=plan)


def quarter_hours(samples: Sequence) -> Steps | None:
    """15-min means of grid and battery power (SoC at the end) from 1-min samples."""
    if not samples:
        return None
    start = samples[0].t - timedelta(minutes=1)
    start -= timedelta(seconds=start.timestamp() % 900)
    n = int((samples[-1].t - start).total_seconds() // 900)
    grid, bess, soc = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    buckets: dict[int, list] = {}
    for s in samples:
        buckets.setdefault(int((s.t - start).total_seconds() - 1) // 900, []).append(s)
    for i in range(n):
        rows = buckets.get(i)
        if rows:
            grid[i] = np.mean([r.grid_kw for r in rows])
            bess[i] = np.mean([r.bess_kw for r in rows])
            soc[i] = rows[-1].soc_pct if rows[-1].soc_pct is not None else np.nan
    return Steps(start, 900, grid, bess, soc)

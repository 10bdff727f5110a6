"""JSON views of what the daemon's services hold: the plan in force (the planner's last plan,
in process or from its worker), the 15-min history, DR events with their M&V, and flex
(schemas.py PlanView, HistoryView, DrView, FlexView). Each is built by the service's own
code where it has one (the `dr/<event_id>` report, the flex message), so the API and MQTT
say the same."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from edge.api.views import num
from edge.config import Config
from edge.plan.inputs import tariff_prices
from edge.report.bill import day_so_far, tariff_spans
from edge.report.carbon import day_bounds
from edge.report.history import INTERVAL_S, History, Interval
from edge.vpp import flex as flex_message
from edge.vpp.commands.parse import iso

if TYPE_CHECKING:
    from edge.app.daemon import Daemon

log = logging.getLogger(__name__)

HISTORY_MAX = timedelta(days=31)  # the longest range one history request may ask for
TARIFF_AROUND = timedelta(hours=24)  # /tariff spans this much before and after now
_ENERGY = ("import_kwh", "export_kwh", "pv_kwh", "load_kwh", "ev_kwh", "charge_kwh",
           "discharge_kwh")


def plan(daemon: Daemon, now: datetime) -> dict[str, Any]:
    cfg = daemon.config
    planner = daemon.planner
    p = getattr(planner, "plan", None) if planner is not None else None
    out: dict[str, Any] = {
        "ts": iso(now), "enabled": cfg.planner.enabled, "status": None, "reason": None,
        "start": None, "end": None, "step_s": None, "soc_start_pct": None, "objective": None,
        "peak_kw": None, "currency": cfg.tariff.currency, "planner": _planner(planner),
        "steps": []}
    if p is None:
        return out
    n, step = p.n, timedelta(seconds=p.step_s)
    first = getattr(p, "first_step_s", None)
    prices = tariff_prices(cfg.tariff, cfg.site.timezone, p.start, p.step_s, n, first)
    demand = getattr(p, "demand_kw", None) or {}
    steps = []
    for k in range(n):
        start = p.start + k * step
        if k == 0 and first:
            start = p.start + step - timedelta(seconds=first)
        by_dev = {dev: num(kw[k]) or 0.0 for dev, kw in demand.items()}
        steps.append({
            "start": iso(start), "end": iso(p.start + (k + 1) * step),
            "grid_kw": num(p.grid_kw[k]), "bess_kw": num(p.bess_kw[k]),
            "pv_kw": num(p.pv_kw[k]),
            "soc_pct": num(p.soc_pct[k + 1], 2) if len(p.soc_pct) > k + 1 else None,
            "import_price": num(prices[k], 4), "export_price": cfg.tariff.export_price,
            "ev_kw": round(sum(by_dev.values()), 3), "ev_kw_by_device": by_dev})
    out.update(status=p.status, reason=p.reason, start=steps[0]["start"] if steps else None,
               end=iso(p.end), step_s=int(p.step_s),
               soc_start_pct=num(p.soc_pct[0], 2) if len(p.soc_pct) else None,
               objective=num(p.objective, 2), peak_kw=num(p.peak_kw), steps=steps)
    return out


def _planner(planner) -> dict[str, Any] | None:
    if planner is None:
        return None
    s = planner.stats
    return {"solves": s.solves, "failures": s.failures,
            "last_at": iso(s.last_at) if s.last_at else None, "last_trigger": s.last_trigger,
            "last_status": s.last_status, "last_reason": s.last_reason,
            "last_solve_s": num(s.last_solve_s, 4), "last_build_s": num(s.last_build_s, 4),
            "restarts": getattr(planner, "restarts", None), "zones": list(s.zones)}


def history_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC as the API answers it: at most HISTORY_MAX from `start` (the
    answer's `to` says where it ends), empty when `end` is not after `start`."""
    start, end = _utc(start), _utc(end)
    if end - start > HISTORY_MAX:
        end = start + HISTORY_MAX
    return start, max(start, end)


def _utc(t: datetime) -> datetime:
    try:
        return t.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset: the edge of time in UTC
        edge = datetime.min if t.year == 1 else datetime.max
        return edge.replace(tzinfo=UTC)


def history(reader: History, start: datetime, end: datetime) -> dict[str, Any]:
    """The intervals in [start, end); runs in a worker thread on its own connection."""
    rows = []
    for iv in reader.intervals(start, end):
        row = {"start": iso(iv.start), "end": iso(iv.start + timedelta(seconds=INTERVAL_S)),
               **{k: round(getattr(iv, k), 4) for k in _ENERGY},
               "covered_s": round(iv.covered_s, 1)}
        rows.append(row)
    return {"from": iso(start), "to": iso(end), "interval_s": INTERVAL_S, "intervals": rows}


def today(reader: History, config: Config, now: datetime,
          open_iv: Interval | None) -> dict[str, Any]:
    """The local day from midnight to `now`: its stored intervals plus the one the meter
    holds open (after a restart the stored part of that quarter hour and the meter's part
    add up, as History.put merges them). Runs in a worker thread."""
    tz = ZoneInfo(config.site.timezone)
    day = now.astimezone(tz).date()
    start, end = day_bounds(day, tz)
    intervals = reader.intervals(start, now)
    if open_iv is not None and start <= open_iv.start < end:
        intervals.append(open_iv)
    return {"ts": iso(now), "day": day.isoformat(), "timezone": config.site.timezone,
            "from": iso(start), "to": iso(now), "currency": config.tariff.currency,
            **day_so_far(config, intervals, tz, start, end)}


def tariff(config: Config, now: datetime) -> dict[str, Any]:
    """The configured tariff, and its periods as absolute spans from a day before `now` to
    a day after: what the dashboard shades behind its chart."""
    t, tz = config.tariff, ZoneInfo(config.site.timezone)
    return {"ts": iso(now), "timezone": config.site.timezone, "currency": t.currency,
            "export_price": t.export_price, "demand_charge_per_kw": t.demand_charge_per_kw,
            "periods": [{"name": p.name, "start": f"{p.start:%H:%M}", "end": f"{p.end:%H:%M}",
                         "price": p.price} for p in t.periods],
            "spans": tariff_spans(t, tz, now - TARIFF_AROUND, now + TARIFF_AROUND)}


def dr(daemon: Daemon, now: datetime) -> dict[str, Any]:
    """Events in hand with their M&V so far (the report the event would send now), those
    waiting for a baseline, and the final reports the manager keeps."""
    manager = daemon.dr
    image = daemon.view.image
    events, waiting = [], []
    for event, exe in manager.events():
        if exe is None:
            waiting.append({"event_id": event.id, "cmd_id": event.cmd_id,
                            "source": event.source, "direction": event.direction,
                            "start": iso(event.start), "end": iso(event.end)})
            continue
        if exe.final is not None:
            continue  # among the finals
        try:
            m = exe.measure(manager.view, now, image, daemon.config)
            events.append(exe.report(m, now, final=False))
        except Exception:  # noqa: BLE001 - one event's fault must not fail the view
            log.exception("DR event %s: M&V for the API failed", event.id)
    finals = sorted(manager.finals.values(), key=lambda m: m.get("ts", ""))
    return {"ts": iso(now), "events": events, "waiting": waiting,
            "finals": [{k: v for k, v in m.items() if k != "msg_id"} for m in finals]}


def flex(daemon: Daemon, now: datetime) -> dict[str, Any] | None:
    """The flex message as it would go out now (the daemon's own flex job's inputs)."""
    image = daemon.view.image
    if image is None:
        return None
    decision = daemon.view.decision
    plan_now = getattr(daemon.planner, "plan", None) if daemon.planner is not None else None
    return flex_message.build(daemon.config, image, now, plan_now,
                              decision.demands if decision is not None else ())

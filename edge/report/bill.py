"""What the site's metered energy costs at the configured tariff, and the day so far as the
operator's dashboard shows it: import at its period's price (local time), export at the
export price, CO2 and the green share from carbon.py, the self-consumption share. The day
report (tools/sitereport.py) bills each interval the same way; the demand charge is billed
on the month's peak and is in neither."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo

from edge.config import Config, TariffConfig
from edge.report import carbon
from edge.report.history import Interval


def price_at(tariff: TariffConfig, tz: tzinfo, t: datetime) -> float:
    """The import price per kWh at `t` (the period of its local time of day)."""
    return tariff.price_at(t.astimezone(tz).time())


def energy_cost(tariff: TariffConfig, tz: tzinfo, start: datetime, import_kwh: float,
                export_kwh: float) -> tuple[float, float]:
    """(import cost, export revenue) of one interval's energy, priced at its start."""
    return import_kwh * price_at(tariff, tz, start), export_kwh * tariff.export_price


def self_consumption_pct(k: dict) -> float | None:
    """The share of the PV energy used on site, from `pv_kwh` and `export_kwh`; None
    without PV."""
    pv = k["pv_kwh"]
    return 100 * (pv - k["export_kwh"]) / pv if pv > 0 else None


def day_so_far(config: Config, intervals: Iterable[Interval], tz: tzinfo, start: datetime,
               end: datetime) -> dict:
    """Energy, bill, CO2 and shares of the intervals (the local day's, the open one
    included): the dashboard's tiles."""
    ivs = list(intervals)
    k = dict.fromkeys(("import_kwh", "export_kwh", "pv_kwh", "charge_kwh", "discharge_kwh",
                       "import_cost", "export_revenue"), 0.0)
    consumed = covered = 0.0
    for iv in ivs:
        cost, revenue = energy_cost(config.tariff, tz, iv.start, iv.import_kwh, iv.export_kwh)
        k["import_cost"] += cost
        k["export_revenue"] += revenue
        for key in ("import_kwh", "export_kwh", "pv_kwh", "charge_kwh", "discharge_kwh"):
            k[key] += getattr(iv, key)
        consumed += iv.consumed_kwh
        covered += iv.covered_s
    co2 = carbon.account(ivs, config.carbon, start, end)
    share = self_consumption_pct(k)
    return {
        **{key: round(v, 4) for key, v in k.items()},
        "consumed_kwh": round(consumed, 4),
        "bill": round(k["import_cost"] - k["export_revenue"], 4),
        "self_consumption_pct": None if share is None else round(share, 2),
        "co2_kg": round(co2.co2_kg, 4),
        "green_share": co2.as_dict()["green_share"],
        "covered_s": round(covered, 1),
    }


def tariff_spans(tariff: TariffConfig, tz: tzinfo, start: datetime,
                 end: datetime) -> list[dict]:
    """The tariff's periods as absolute spans covering [start, end) (UTC ISO times), one
    per stretch of the same period: what a chart shades. Walks local days, so a DST change
    moves the spans with the wall clock."""
    out: list[dict] = []
    day = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date() + timedelta(days=1)
    while day <= last:
        for p in sorted(tariff.periods, key=lambda p: (p.start.hour, p.start.minute)):
            a = datetime.combine(day, p.start, tz)
            b = datetime.combine(day, p.end, tz)
            if b <= a:  # ends at or after midnight
                b = datetime.combine(day + timedelta(days=1), p.end, tz)
            a, b = max(a, start), min(b, end)
            if a >= b:
                continue
            if out and out[-1]["name"] == p.name and out[-1]["price"] == p.price \
                    and out[-1]["end_dt"] == a:
                out[-1]["end_dt"] = b
            else:
                out.append({"name": p.name, "price": p.price, "start_dt": a, "end_dt": b})
        day += timedelta(days=1)
    return [{"name": s["name"], "price": s["price"], "start": _iso(s["start_dt"]),
             "end": _iso(s["end_dt"])} for s in out]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

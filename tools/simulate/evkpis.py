"""EV figures of a run, the same for every strategy: energy delivered, the share of it in
the tariff's cheapest period, the sessions that met their departure energy, and the time
and worst kW above the import limit.

A session is one car's stay on a connector (the charger's `sim.arrivals`). Its need is the
least energy that counts as met: up to the charger's `target_soc_pct` on the car's true
battery; for a car that does not tell its SoC no more than the charger's
`default_energy_kwh`, which is all the daemon is asked for. It is met when it received its
need (within `MET_TOL_KWH`) or the car reached the target SoC by the time it left. Only
sessions that left within the run are judged; those still plugged in at the end are open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from edge.config import Config, TariffConfig
from edge.roles.evcharger import EvChargerDevice
from hil.config import Arrival, sim_of
from hil.devices.car import Car, stay_window
from tools.simulate.tracks import Excess

MET_TOL_KWH = 0.05  # a session this close to its need has met it (metering, the taper)
VALLEY_TOL = 1e-9


def need_kwh(dev: EvChargerDevice, a: Arrival) -> float:
    """The least energy that meets a session of `a` on `dev` (see the module docstring)."""
    to_target = max(dev.target_soc_pct - a.soc_pct, 0.0) / 100 * a.capacity_kwh
    return to_target if a.reports_soc else min(to_target, dev.default_energy_kwh)


def max_kw(dev: EvChargerDevice, a: Arrival) -> float:
    """The most the car of `a` draws on `dev` (below its taper)."""
    return min(a.car_max_a, dev.max_current_a) * dev.voltage_v * min(a.car_phases,
                                                                     dev.phases) / 1000


@dataclass(frozen=True)
class Outcome:
    """One session as a strategy served it."""

    device: str
    connector: int
    arrived: datetime
    departs: datetime
    need_kwh: float
    delivered_kwh: float
    soc_pct: float | None  # the car's at the end (None: not modelled, the LP)
    target_pct: float
    done: bool  # it left within the run

    @property
    def met(self) -> bool:
        return (self.delivered_kwh >= self.need_kwh - MET_TOL_KWH
                or (self.soc_pct is not None and self.soc_pct >= self.target_pct - 1e-6))


@dataclass(frozen=True)
class TrueSession:
    """A session as the scenario has it: for the references that plan with the truth."""

    device: EvChargerDevice
    arrival: Arrival
    connector: int
    arrives: datetime
    departs: datetime

    @property
    def id(self) -> str:
        return f"{self.device.id}@{self.arrives.astimezone(ZoneInfo('UTC')):%Y%m%dT%H%M}"


def true_sessions(config: Config, start: datetime, end: datetime) -> list[TrueSession]:
    """Every stay that overlaps [start, end), by arrival; one under way at the start begins
    there (the HIL plugs that car in at the start, as it arrives)."""
    tz = ZoneInfo(config.site.timezone)
    out = []
    first = start.astimezone(tz).date() - timedelta(days=1)
    days = [first + timedelta(days=k) for k in range((end - start).days + 3)]
    for dev in (d for d in config.devices if isinstance(d, EvChargerDevice)):
        for a in sim_of(dev).arrivals:
            for day in days:
                arrive, depart = stay_window(a, day, tz)
                if arrive < end and depart > start:
                    out.append(TrueSession(dev, a, a.connector,
                                           max(arrive, start).astimezone(tz), depart))
    return sorted(out, key=lambda s: (s.arrives, s.device.id, s.connector))


def valley_price(tariff: TariffConfig) -> float:
    return min(p.price for p in tariff.periods)


@dataclass
class _Seen:
    """A session as the ledger follows it: its car (whose energy and SoC move on)."""

    dev: EvChargerDevice
    arrival: Arrival
    car: Car
    arrived: datetime
    day: date  # the stay's, for its departure


class EvLedger:
    """Watches chargers step by step (the HIL's charge points or the replay's): EV energy,
    the part of it in the tariff's valley, and each session's car."""

    def __init__(self, config: Config, end: datetime) -> None:
        self.tariff = config.tariff
        self.tz = ZoneInfo(config.site.timezone)
        self.low = valley_price(config.tariff)
        self.end = end
        self.kwh = 0.0
        self.valley_kwh = 0.0
        self._minute: int | None = None
        self._valley = False
        self._sessions: dict[tuple, _Seen] = {}  # by (device, connector, stay)

    def _in_valley(self, t: datetime) -> bool:
        minute = int(t.timestamp() // 60)
        if minute != self._minute:
            self._minute = minute
            price = self.tariff.price_at(t.astimezone(self.tz).time())
            self._valley = price <= self.low + VALLEY_TOL
        return self._valley

    def see(self, t: datetime, dt_s: float, chargers) -> None:
        """After a step from `t` of `dt_s`: `chargers` is [(device config, connectors)],
        each connector with `number`, `stay` (arrival index, day), `car` and `power_kw`."""
        kw = 0.0
        for dev, plugs in chargers:
            for p in plugs:
                kw += p.power_kw if p.car is not None else 0.0
                key = (dev.id, p.number, p.stay)
                s = self._sessions.get(key)
                if p.car is not None and (s is None or s.car is not p.car):
                    self._sessions[key] = _Seen(dev, sim_of(dev).arrivals[p.stay[0]], p.car,
                                                t.astimezone(self.tz), p.stay[1])
        self.kwh += kw * dt_s / 3600
        if self._in_valley(t):
            self.valley_kwh += kw * dt_s / 3600

    def outcomes(self) -> list[Outcome]:
        out = []
        for (_, number, _), s in self._sessions.items():
            _, departs = stay_window(s.arrival, s.day, self.tz)
            out.append(Outcome(s.dev.id, number, s.arrived, departs, need_kwh(s.dev, s.arrival),
                               s.car.energy_kwh, s.car.soc_pct, s.dev.target_soc_pct,
                               departs <= self.end))
        return sorted(out, key=lambda o: (o.arrived, o.device, o.connector))


def ev_kpis(kwh: float, valley_kwh: float, outcomes: list[Outcome],
            imports: Excess) -> dict:
    """The flat EV and import-limit figures of one strategy."""
    done = [o for o in outcomes if o.done]
    return {
        "ev_kwh": kwh, "ev_valley_kwh": valley_kwh,
        "ev_valley_share_pct": 100 * valley_kwh / kwh if kwh > 1e-9 else None,
        "ev_sessions": len(done), "ev_sessions_met": sum(o.met for o in done),
        "ev_sessions_open": len(outcomes) - len(done),
        "ev_short_kwh": sum(max(o.need_kwh - o.delivered_kwh, 0.0) for o in done if not o.met),
        "import_over_min": imports.seconds / 60, "import_worst_kw": imports.worst_kw,
        "import_over_kwh": imports.kwh, "import_over_count": imports.count,
    }


def unmet(rows: list[dict]) -> str:
    """The sessions of a strategy (`session_rows`) that left short, in words."""
    return ", ".join(f"{r['device']} (left {r['departs'][11:16]}) short "
                     f"{r['need_kwh'] - r['delivered_kwh']:.1f} kWh"
                     for r in rows if r["done"] and not r["met"])


def session_rows(outcomes: list[Outcome]) -> list[dict]:
    """Each session for the JSON report."""
    return [{"device": o.device, "connector": o.connector, "arrived": o.arrived.isoformat(),
             "departs": o.departs.isoformat(), "need_kwh": o.need_kwh,
             "delivered_kwh": o.delivered_kwh, "soc_pct": o.soc_pct, "done": o.done,
             "met": o.met} for o in outcomes]

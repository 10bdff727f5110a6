"""The replay's EV chargers (tools/simulate/replay.py): the cars of each charger's `sim:`
block (hil/devices/car.py: the same cars, arrivals and stays the HIL's charge points run)
drawing the limit in force, and the charger as the OCPP driver reports it (the EvCharger
reading keys of drivers/base.py), fresh every cycle.

The limit in force follows the wanted current by the driver's writer rules
(drivers/ocpp/writer.py): a change within `deadband_a` is not sent unless it starts or
pauses the car, a cut goes at once, a raise at most every `min_interval_s` after the last
change. Before the first limit the charger's fail-safe current applies. `uncontrolled`:
no controller, every car is offered the charger's maximum from arrival until it is full or
leaves."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from drivers.base import CHARGER_STATUS
from edge.roles.evcharger import EvChargerDevice
from hil.config import sim_of
from hil.devices.car import Car, stay_at

NAN = math.nan
# The one state reported for a charger: its busiest connector's (as the driver ranks them).
_RANK = ("Charging", "SuspendedEVSE", "SuspendedEV", "Preparing", "Available")


def chargers_of(config) -> list[EvChargerDevice]:
    return [d for d in config.devices if isinstance(d, EvChargerDevice)]


@dataclass
class Plug:
    """One connector: the car on it (and its stay: arrival index and day), what it draws.
    The attributes the session ledger reads (tools/simulate/evkpis.py) are those of the
    HIL's connector (hil/devices/evcharger.py), so one ledger watches both."""

    number: int
    stay: tuple[int, date] | None = None
    car: Car | None = None
    power_kw: float = 0.0
    amps: float = 0.0
    energy_kwh: float = 0.0  # the connector's register
    session: float = 0.0  # the transaction's number, 0 without one
    start_s: float = NAN


@dataclass
class Charger:
    cfg: EvChargerDevice
    uncontrolled: bool = False
    plugs: list[Plug] = field(init=False)
    offered: float | None = None  # the limit the charger accepted last (None: none yet)
    changed_s: float = -math.inf  # when that limit last changed value
    wanted: float | None = None  # the latest current the controller asked for
    sessions: int = 0

    def __post_init__(self) -> None:
        self.sim = sim_of(self.cfg)
        self.plugs = [Plug(i + 1) for i in range(self.cfg.connectors)]
        if self.uncontrolled:
            self.offered = self.cfg.max_current_a

    @property
    def limit_a(self) -> float:
        """The current the cars are offered now."""
        return self.cfg.fail_safe_a if self.offered is None else self.offered

    def send(self, now_s: float) -> None:
        """The driver's writer: bring the limit in force toward the wanted one."""
        w, cur = self.wanted, self.offered
        if w is None or self.uncontrolled or w == cur:
            return
        if cur is not None:
            flip = (w == 0) != (cur == 0)
            if abs(w - cur) < self.cfg.deadband_a and not flip:
                return
            if w > cur and now_s - self.changed_s < self.cfg.min_interval_s:
                return
        self.offered, self.changed_s = w, now_s

    def presence(self, t: datetime, t_local: datetime) -> None:
        for p in self.plugs:
            stay = stay_at(self.sim.arrivals, p.number, t_local)
            if stay == p.stay:
                continue
            p.stay, p.car, p.power_kw, p.amps = stay, None, 0.0, 0.0
            p.session, p.start_s = 0.0, NAN
            if stay is not None:
                a = self.sim.arrivals[stay[0]]
                p.car = Car.arriving(a, self.cfg.min_current_a, self.sim.ignores_below_min,
                                     self.sim.ramp_s)
                self.sessions += 1
                p.session, p.start_s = float(self.sessions), t.timestamp()

    def step(self, dt_s: float) -> float:
        total = 0.0
        for p in self.plugs:
            if p.car is None:
                continue
            p.power_kw = p.car.step(self.limit_a, dt_s, self.cfg.voltage_v, self.cfg.phases)
            p.amps = p.car.amps
            p.energy_kwh += p.power_kw * dt_s / 3600
            total += p.power_kw
        return total

    def _status(self, p: Plug) -> str:
        if p.car is None:
            return "Available"
        if p.amps > 0:
            return "Charging"
        return "SuspendedEVSE" if self.limit_a < self.cfg.min_current_a else "SuspendedEV"

    def values(self, now_s: float) -> dict[str, float]:
        """The reading the OCPP driver would give (drivers/base.py EvCharger), with a meter
        value taken at `now_s`."""
        phases = [0.0, 0.0, 0.0]
        socs, starts, number, session_kwh = [], [], 0.0, 0.0
        for p in self.plugs:
            if p.car is None:
                continue
            n = p.car.phases_used(self.cfg.phases)
            phases = [x + (p.amps if i < n else 0.0) for i, x in enumerate(phases)]
            if p.car.reports_soc:
                socs.append(p.car.soc_pct)
            starts.append(p.start_s)
            number = max(number, p.session)
            session_kwh += p.car.energy_kwh
        status = min((self._status(p) for p in self.plugs), key=_RANK.index)
        plugged = float(any(p.car is not None for p in self.plugs))
        return {
            "power_kw": sum(p.power_kw for p in self.plugs), "current_a": max(phases),
            "l1_a": phases[0], "l2_a": phases[1], "l3_a": phases[2],
            "energy_kwh": sum(p.energy_kwh for p in self.plugs),
            "soc_pct": max(socs) if socs else NAN, "connected": plugged, "charging": plugged,
            "session_kwh": session_kwh, "session_start_s": min(starts) if starts else NAN,
            "session": number, "offered_a": NAN if self.offered is None else self.offered,
            "meter_lag_s": now_s - self.changed_s,
            "status": float(CHARGER_STATUS.index(status)),
        }


class EvPark:
    """Every charger of the site with its cars, stepped by the replay."""

    def __init__(self, chargers: list[EvChargerDevice], tz: ZoneInfo,
                 uncontrolled: bool = False) -> None:
        self.tz = tz
        self.chargers = {d.id: Charger(d, uncontrolled) for d in chargers}
        self.kw = 0.0  # drawn over the last step

    def presence(self, t: datetime) -> None:
        t_local = t.astimezone(self.tz)
        for c in self.chargers.values():
            c.presence(t, t_local)

    def values(self, now_s: float) -> dict[str, dict[str, float]]:
        return {k: c.values(now_s) for k, c in self.chargers.items()}

    def want(self, due: dict[str, float], now_s: float) -> None:
        """The currents the controller wrote this cycle, then the writers' rules."""
        for k, c in self.chargers.items():
            if k in due:
                c.wanted = due[k]
            c.send(now_s)

    def step(self, dt_s: float) -> float:
        self.kw = sum(c.step(dt_s) for c in self.chargers.values())
        return self.kw

    def watched(self) -> list[tuple[EvChargerDevice, list[Plug]]]:
        """What the session ledger watches: each charger's config and connectors."""
        return [(c.cfg, c.plugs) for c in self.chargers.values()]


def without_chargers(config):
    """The site as a controller that knows nothing of its chargers sees it."""
    data = config.model_dump()
    ids = {d.id for d in chargers_of(config)}
    data["devices"] = [d for d in data["devices"] if d["id"] not in ids]
    return type(config).model_validate(data)

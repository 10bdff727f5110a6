"""Simulated OCPP charge point (role `ev_charger`), with the cars that use it.

Unlike the other simulators it is a client: it connects to the daemon's CSMS at
ws://<ocpp.host>:<ocpp.port>/<charge_point_id> (hil/serve/ocpp_client.py; the site starts
`run` beside its servers). The physics runs on the site's clock: cars arrive and leave at
their `sim.arrivals` times each day, draw what the composite charging-profile limit offers
(hil/devices/chargingprofiles.py, hil/devices/car.py), and every status change, transaction
step and meter reading is queued as an event the wire delivers (hil/devices/evsession.py).
The charger's draw counts at the PCC as load.

For tests, `limits` records every change of the limit in force and `received` every
SetChargingProfile, each with its simulated time.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from datetime import UTC, datetime
from typing import ClassVar

from drivers.quietlog import Episode
from edge.config import Config
from edge.roles.evcharger import EvChargerDevice
from hil.config import minute_of_day
from hil.devices.base import Env, SimulatedDevice
from hil.devices.car import Car, stay_at
from hil.devices.chargingprofiles import Profile, ProfileRejected, ProfileStore, Tx
from hil.devices.evsession import VOLATILE, Event, Kind, Sample, Session
from hil.serve.ocpp_client import csms_url, run_charge_point

log = logging.getLogger(__name__)
OUTBOX_MAX = 10_000  # events kept while the CSMS is away; meter readings go first


class Connector:
    def __init__(self, number: int) -> None:
        self.number = number
        self.car: Car | None = None
        self.stay: tuple[int, object] | None = None  # (arrival index, its day) plugged in
        self.session: Session | None = None
        self.status = "Available"
        self.limit_a: float | None = None  # the composite limit in force
        self.amps = 0.0
        self.power_kw = 0.0
        self.energy_wh = 0.0  # the connector's energy register
        self.meter_k = 0  # index of the last meter interval reported


class EvChargerSim(SimulatedDevice):
    role = "ev_charger"
    models = ()
    protocols: ClassVar[tuple[str, ...]] = ("ocpp",)
    connects_out = True
    cfg: EvChargerDevice

    @classmethod
    def rating_kw(cls, cfg: EvChargerDevice) -> float:
        return cfg.max_kw

    def __init__(self, cfg: EvChargerDevice, site_max_kw: float) -> None:
        self._init_unit(cfg)  # not SimulatedDevice.__init__: no SunSpec image
        s = self.sim
        self.store = ProfileStore(cfg.connectors, s.max_stack_level, s.rejects_tx_default)
        self.connectors = [Connector(i + 1) for i in range(cfg.connectors)]
        self.outbox: deque[Event] = deque()
        self.wake: asyncio.Event | None = None  # set by `run`: new events, drops, time
        self.t_utc: datetime | None = None
        self.connected = False  # a session with the CSMS is up (booted)
        self.booted = False
        self.heartbeat_s: float | None = None  # granted at boot
        self.meter_every_s = s.meter_every_s
        self.drop_requested = False
        self.offline_until_s = 0.0
        self.connections = 0
        self.transactions = 0
        self.limits: list[tuple[float, int, float]] = []  # (sim s, connector, A in force)
        self.received: list[dict] = []  # every SetChargingProfile, with its sim s
        self._last_hb_s: float | None = None
        self._refused = Episode(
            log, f"charge point {cfg.charge_point_id}: SetChargingProfile rejected: %(reason)s",
            f"charge point {cfg.charge_point_id}: %(more)s more SetChargingProfile rejected in "
            "%(gap)s; last: %(reason)s", level=logging.INFO)
        self._sod: float | None = None  # second of the local day at the last step

    # -- physics ------------------------------------------------------------------------
    def step(self, env: Env, dt_s: float) -> float:
        self.t_s, self.t_utc = env.t_s, env.t_utc
        t = env.t_local
        sod = t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
        self._drops(sod)
        self._sod = sod
        total = 0.0
        for c in self.connectors:
            self._presence(c, env)
            total += self._charge(c, env, dt_s)
        if self.connected and self.heartbeat_s and (
                self._last_hb_s is None or env.t_s - self._last_hb_s >= self.heartbeat_s):
            self._last_hb_s = env.t_s
            self._emit("heartbeat")
        self.power_kw = total
        if self.drop_requested or not self.connected or not self.online:
            self.notify()
        return -total

    def _drops(self, sod: float) -> None:
        """`sim.drops_at`: the connection goes down when the local time passes one."""
        if self._sod is None:
            return
        for hhmm in self.sim.drops_at:
            x = minute_of_day(hhmm) * 60
            crossed = (self._sod < x <= sod) if self._sod <= sod else (x > self._sod or x <= sod)
            if crossed:
                log.info("charge point %s: dropping its CSMS connection at %s (sim.drops_at)",
                         self.cfg.charge_point_id, hhmm)
                self.drop_requested = True
                self.offline_until_s = self.t_s + self.sim.offline_s

    def _presence(self, c: Connector, env: Env) -> None:
        stay = stay_at(self.sim.arrivals, c.number, env.t_local)
        if stay == c.stay:
            return
        if c.car is not None:
            self._depart(c)
        c.stay = stay
        if stay is not None:
            self._arrive(c, stay[0])

    def _arrive(self, c: Connector, index: int) -> None:
        a, cfg = self.sim.arrivals[index], self.cfg
        c.car = Car.arriving(a, cfg.min_current_a, self.sim.ignores_below_min, self.sim.ramp_s)
        self._set_status(c, "Preparing")
        self.transactions += 1
        s = Session(self.transactions, c.number, a.id_tag, self.t_utc, c.energy_wh,
                    f"{cfg.charge_point_id}-{self.transactions}")
        if self.sim.ocpp_version != "1.6":
            s.tx_id = s.local_id
        c.session = s
        c.meter_k = math.floor(self.t_s / self.meter_every_s)
        self._emit("authorize", c)
        self._emit("start", c, sample=self._sample(c))

    def _depart(self, c: Connector) -> None:
        if c.session is not None:
            self._stop(c, "EVDisconnected")
        c.car, c.amps, c.power_kw = None, 0.0, 0.0
        self._set_status(c, "Available")

    def _stop(self, c: Connector, reason: str) -> None:
        self._emit("stop", c, sample=self._sample(c), reason=reason)
        self.store.end_transaction(c.number)
        c.session = None

    def _charge(self, c: Connector, env: Env, dt_s: float) -> float:
        cfg = self.cfg
        tx = Tx(c.session.tx_id, c.session.start) if c.session is not None else None
        limit = self.store.limit_a(c.number, env.t_utc, tx, cfg.max_current_a, cfg.voltage_v,
                                   cfg.phases)
        if c.limit_a is None or abs(limit - c.limit_a) > 1e-6:
            c.limit_a = limit
            self.limits.append((env.t_s, c.number, limit))
        if c.car is None:
            return 0.0
        offer = limit if c.session is not None else 0.0  # refused: no transaction, no power
        c.power_kw = c.car.step(offer, dt_s, cfg.voltage_v, cfg.phases)
        c.amps = c.car.amps
        c.energy_wh += c.power_kw * dt_s / 3.6
        if c.session is None:
            self._set_status(c, "Finishing")
        elif c.amps > 0:
            self._set_status(c, "Charging")
        else:
            self._set_status(c, "SuspendedEVSE" if offer < cfg.min_current_a else "SuspendedEV")
        k = math.floor((env.t_s + dt_s) / self.meter_every_s + 1e-9)
        if c.session is not None and k > c.meter_k:
            c.meter_k = k
            self._emit("meter", c, sample=self._sample(c))
        return c.power_kw

    def _sample(self, c: Connector) -> Sample:
        n = c.car.phases_used(self.cfg.phases) if c.car is not None else self.cfg.phases
        amps = tuple(c.amps if i < n else 0.0 for i in range(3))
        soc = c.car.soc_pct if c.car is not None and c.car.reports_soc else None
        return Sample(c.power_kw * 1000, amps, n, c.energy_wh, soc, c.limit_a or 0.0)

    def _set_status(self, c: Connector, status: str) -> None:
        if status != c.status:
            c.status = status
            self._emit("status", c, status=status)

    def _emit(self, kind: Kind, c: Connector | None = None, **kw) -> None:
        if len(self.outbox) >= OUTBOX_MAX and kind in ("meter", *VOLATILE):
            return
        self.outbox.append(Event(kind, self.t_utc or datetime.now(UTC),
                                 c.number if c else 0, c.session if c else None, **kw))
        self.notify()

    def notify(self) -> None:
        if self.wake is not None:
            self.wake.set()

    # -- what the wire asks (hil/serve/ocpp16.py, ocpp201.py) ----------------------------
    def may_connect(self) -> bool:
        return self.online and self.t_s >= self.offline_until_s

    def link_up(self) -> None:
        """A session with the CSMS is up: stale statuses go (the wire tells the current
        ones), transaction events wait in order."""
        self.connected = True
        self.connections += 1
        self._last_hb_s = self.t_s
        self.outbox = deque(e for e in self.outbox if e.kind not in VOLATILE)

    def link_down(self) -> None:
        self.connected = False

    def boot_accepted(self, interval_s: float) -> None:
        self.booted = True
        if interval_s > 0:
            self.heartbeat_s = float(interval_s)

    def statuses(self) -> list[tuple[int, str, Session | None]]:
        return [(c.number, c.status, c.session) for c in self.connectors]

    def set_profile(self, connector: int, payload: dict) -> str:
        """SetChargingProfile: Accepted or Rejected, recorded with the simulated time."""
        sched = payload.get("charging_schedule") or {}
        sched = sched[0] if isinstance(sched, list) and sched else sched
        first = (sched.get("charging_schedule_period") or [{}])[0] if isinstance(sched, dict) else {}
        record = {"t_s": self.t_s, "connector": connector,
                  "purpose": payload.get("charging_profile_purpose"),
                  "stack_level": payload.get("stack_level"), "limit": first.get("limit"),
                  "unit": sched.get("charging_rate_unit") if isinstance(sched, dict) else None,
                  "duration_s": sched.get("duration") if isinstance(sched, dict) else None}
        c = self.connectors[connector - 1] if 1 <= connector <= len(self.connectors) else None
        tx = Tx(c.session.tx_id, c.session.start) if c and c.session else None
        try:
            self.store.install(Profile.parse(connector, payload, self.t_utc or datetime.now(UTC)), tx)
            status = "Accepted"
            self._refused.ok()
        except (ProfileRejected, KeyError, ValueError, TypeError, IndexError) as exc:
            self._refused.failed(f"{type(exc).__name__}: {exc}")
            status = "Rejected"
        self.received.append({**record, "status": status})
        return status

    def refuse(self, session: Session) -> None:
        """The CSMS did not accept the car's id tag: the transaction stops, the car stays."""
        session.refused = True
        c = self.connectors[session.connector - 1]
        if c.session is session:
            self._stop(c, "DeAuthorized")
            self._set_status(c, "Finishing")

    def trigger(self, what: str, connector: int | None = None) -> bool:
        """TriggerMessage: queue the message asked for; False for one it does not send."""
        chosen = [c for c in self.connectors if connector in (None, 0, c.number)]
        if what == "Heartbeat":
            self._emit("heartbeat")
        elif what == "StatusNotification":
            for c in chosen:
                self._emit("status", c, status=c.status)
        elif what == "MeterValues":
            for c in chosen:
                self._emit("meter", c, sample=self._sample(c), context="Trigger")
        else:
            return False
        return True

    # -- the client task (the site starts it beside its servers) ------------------------
    async def run(self, config: Config) -> None:
        """Connect to the CSMS and keep connecting until cancelled."""
        self.wake = asyncio.Event()
        await run_charge_point(self, csms_url(config, self.cfg.charge_point_id))

    def sim_device(self):
        raise TypeError(f"{self.id} is an OCPP charge point; it connects to the CSMS itself")

    # -- reporting ----------------------------------------------------------------------
    def state(self) -> dict:
        c = self.connectors[0]
        out = {"power_kw": self.power_kw, "limit_a": c.limit_a, "status": c.status,
               "soc_pct": c.car.soc_pct if c.car else None,
               "energy_kwh": sum(x.energy_wh for x in self.connectors) / 1000,
               "connected": int(self.connected), "transactions": self.transactions,
               "connections": self.connections, "drops": self.drops,
               "limits": list(self.limits), "received": list(self.received)}
        if len(self.connectors) > 1:
            out["by_connector"] = [
                {"power_kw": x.power_kw, "limit_a": x.limit_a, "status": x.status,
                 "soc_pct": x.car.soc_pct if x.car else None, "energy_kwh": x.energy_wh / 1000}
                for x in self.connectors]
        return out

"""What we know of one charger, whichever OCPP version it speaks: connector states, running
transactions, the last sane meter values per connector. It outlives the WebSocket, so a
charger that reconnects mid-session finds its transaction and readings where it left them.
The version modules translate their messages into these calls."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from drivers.base import CHARGER_STATUS
from drivers.ocpp.quiet import Throttle
from drivers.spec import OcppSpec

log = logging.getLogger(__name__)
NAN = math.nan

POWER = "Power.Active.Import"
CURRENT = "Current.Import"
ENERGY = "Energy.Active.Import.Register"
SOC = "SoC"
_SCALE = {"kw": 1000.0, "kwh": 1000.0, "w": 1.0, "wh": 1.0}
_PHASE = {"L1": 0, "L2": 1, "L3": 2}
# The car is at the plug in these states (a transaction may not have started yet).
PLUGGED = {"Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing"}
# The one state reported for the whole charger: the busiest connector's.
_RANK = ("Charging", "SuspendedEVSE", "SuspendedEV", "Preparing", "Finishing", "Reserved",
         "Faulted", "Available", "Unavailable", "Offline")


class Sample(NamedTuple):
    """One sampled value in base units (W, A, Wh, %); `context` is OCPP's reading context."""

    measurand: str
    phase: str | None
    value: float
    context: str | None = None


def to_base(measurand: str, value: float, unit: str | None, multiplier: int = 0) -> float:
    """A sampled value in W, Wh, A or %: kW and kWh scaled up, OCPP 2.0.1's power-of-ten
    multiplier applied."""
    return value * _SCALE.get((unit or "").lower(), 1.0) * 10.0 ** multiplier


@dataclass
class Tx:
    id: str
    connector: int
    start_s: float  # Unix s
    meter_start_wh: float = NAN  # the register at its start, once known
    number: float = 0.0  # the session number the reading shows
    state: str = ""  # OCPP 2.0.1 chargingState


@dataclass
class Meter:
    power_w: float = NAN
    amps: list[float] = field(default_factory=lambda: [NAN, NAN, NAN])
    energy_wh: float = NAN
    soc: float = NAN
    metered: bool = False  # the charger sends a Power measurand: no need to derive it


def parse_time(stamp: object) -> float:
    """Unix s of an OCPP timestamp; now when it is missing or unreadable."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return time.time()


class Station:
    """State of one charge point; `seen()` on every frame it sends keeps it fresh."""

    def __init__(self, name: str, spec: OcppSpec,
                 clock: Callable[[], float] = time.time) -> None:
        self.name, self.spec, self.clock = name, spec, clock
        self.protocol = ""  # the subprotocol of the current or last connection
        self.info: dict[str, str] = {}
        self.booted = False  # a BootNotification was accepted since we started
        self.stack_level = 1  # the highest the charger supports, read after boot
        self.tx_profiles = False  # it refused TxDefaultProfile: limit each transaction
        self.offered_a = NAN  # the last limit it accepted
        self.offered_at = NAN  # when that limit changed (clock s)
        self.metered_at = NAN  # when the last meter value came (clock s)
        self.status: dict[int, str] = {}
        self.meters: dict[int, Meter] = {}
        self.txs: dict[str, Tx] = {}
        self.last_seen = -math.inf
        self.on_tx = lambda: None  # a transaction started or ended (the writer listens)
        self._next_session = float(int(time.time()))  # differs across restarts too
        self._next_tx_id = int(time.time()) % 2_000_000_000
        self._absurd = Throttle(log)

    def offer(self, amps: float) -> None:
        """The charger accepted a limit of `amps`."""
        if amps != self.offered_a:
            self.offered_a, self.offered_at = amps, self.clock()

    def seen(self) -> None:
        self.last_seen = time.monotonic()

    def boot(self, protocol: str, **info: str | None) -> None:
        self.protocol, self.booted = protocol, True
        self.info = {k: v for k, v in info.items() if v}

    # --- connectors and transactions ---------------------------------------------------

    def set_status(self, connector: int, name: str) -> None:
        if name not in CHARGER_STATUS:
            self._absurd.say(("status", name), logging.WARNING,
                             "charger %s: unknown connector status %r ignored", self.name, name)
            return
        self.status[connector] = name
        if name == "Available":  # unplugged: its transaction, what it drew, the SoC are gone
            if (tx := self.tx_on(connector)) is not None:
                self.stop_tx(tx.id)
            self._idle(connector)
            if (m := self.meters.get(connector)) is not None:
                m.soc = NAN

    def new_tx_id(self) -> int:
        """An OCPP 1.6 transaction id (we assign them); starts from the clock, so ids of
        one run do not repeat those of the run before."""
        self._next_tx_id = self._next_tx_id % 2_000_000_000 + 1
        return self._next_tx_id

    def start_tx(self, tx_id: str, connector: int, start_s: float,
                 meter_start_wh: float = NAN) -> Tx:
        tx = self.txs.get(tx_id)
        if tx is None:
            if (stale := self.tx_on(connector)) is not None:  # one per connector: the
                self.stop_tx(stale.id)  # charger started again without stopping that one
            self._next_session += 1
            tx = self.txs[tx_id] = Tx(tx_id, connector, start_s, number=self._next_session)
            if math.isfinite(meter_start_wh) and meter_start_wh >= 0:
                tx.meter_start_wh = meter_start_wh
            log.info("charger %s: transaction %s started on connector %d", self.name, tx_id,
                     connector)
            self.on_tx()
        return tx

    def tx(self, tx_id: str | None, connector: int | None = None) -> Tx | None:
        """The running transaction `tx_id`; one we never saw start (we restarted while it
        ran) is adopted when the connector is known."""
        if tx_id is None:
            return None
        tx = self.txs.get(tx_id)
        if tx is None and connector is not None and connector > 0:
            tx = self.start_tx(tx_id, connector, time.time())
        return tx

    def tx_on(self, connector: int) -> Tx | None:
        return next((t for t in self.txs.values() if t.connector == connector), None)

    def stop_tx(self, tx_id: str, meter_stop_wh: float = NAN) -> Tx | None:
        tx = self.txs.pop(tx_id, None)
        if tx is None:
            return None
        if math.isfinite(meter_stop_wh) and self._sane(ENERGY, meter_stop_wh, tx.connector):
            self.meters.setdefault(tx.connector, Meter()).energy_wh = meter_stop_wh
        self._idle(tx.connector)
        log.info("charger %s: transaction %s ended on connector %d", self.name, tx_id,
                 tx.connector)
        self.on_tx()
        return tx

    def _idle(self, connector: int) -> None:
        m = self.meters.get(connector)
        if m is not None and self.tx_on(connector) is None:
            m.power_w, m.amps = (0.0 if m.metered else NAN), [0.0, 0.0, 0.0]

    # --- meter values ------------------------------------------------------------------

    def samples(self, connector: int, samples: list[Sample], tx: Tx | None = None) -> None:
        """One sampled set (a MeterValue): absurd values are dropped (logged, throttled)."""
        m = self.meters.setdefault(connector, Meter())
        total, per_phase, amps = None, {}, {}
        for s in samples:
            if not self._sane(s.measurand, s.value, connector, s.phase):
                continue
            phase = _PHASE.get((s.phase or "")[:2])
            if s.measurand == POWER:
                if s.phase is None:
                    total = s.value
                elif phase is not None:
                    per_phase[phase] = s.value
            elif s.measurand == CURRENT:
                if phase is not None:
                    amps[phase] = s.value
                elif s.phase is None:  # no phase given: each phase carries it
                    amps.update(dict.fromkeys(range(self.spec.phases), s.value))
            elif s.measurand == ENERGY and s.phase is None:
                m.energy_wh = s.value
                begin = s.context == "Transaction.Begin"
                if tx is not None and (begin or math.isnan(tx.meter_start_wh)):
                    tx.meter_start_wh = s.value
            elif s.measurand == SOC:
                m.soc = s.value
        if total is not None or per_phase:
            m.power_w = total if total is not None else sum(per_phase.values())
            m.metered = True
        if total is not None or per_phase or amps:
            self.metered_at = self.clock()
        for i, a in amps.items():
            m.amps[i] = a

    def _sane(self, measurand: str, value: float, connector: int,
              phase: str | None = None) -> bool:
        s = self.spec
        share = s.connectors if connector == 0 else 1
        top = {POWER: 10 * s.max_current_a * s.voltage_v * s.phases * share,
               CURRENT: 10 * s.max_current_a * share, SOC: 100.0}.get(measurand, math.inf)
        if math.isfinite(value) and 0 <= value <= top:
            return True
        why = "not a number" if math.isnan(value) else "negative" if value < 0 else "absurd"
        name = f"{measurand} {phase}" if phase else measurand
        self._absurd.say("absurd value", logging.WARNING,
                         "charger %s: %s = %s from connector %d ignored (%s)", self.name,
                         name, value, connector, why)
        return False

    # --- the reading -------------------------------------------------------------------

    def values(self) -> dict[str, float]:
        """The EvCharger reading keys (drivers.base), summed over connectors; connector 0
        (the whole charger's meter) counts only when no connector reports its own. A
        charger that sends only currents gets its power from them (× voltage_v), one that
        sends only power its currents from it (spread over its phases)."""
        own = [c for c in self.meters if c > 0]
        meters = [self.meters[c] for c in (own or [c for c in self.meters if c == 0])]
        volts, n = self.spec.voltage_v, self.spec.phases
        powers, phases = [], [0.0, 0.0, 0.0]
        for m in meters:
            amps = m.amps
            if all(math.isnan(a) for a in amps) and m.metered and not math.isnan(m.power_w):
                amps = [m.power_w / (volts * n) if i < n else 0.0 for i in range(3)]
            amps = [0.0 if math.isnan(a) else a for a in amps]
            phases = [p + a for p, a in zip(phases, amps, strict=True)]
            powers.append(m.power_w if m.metered else sum(amps) * volts)
        if not meters and self.txs:  # charging, but no meter value yet
            phases = [NAN, NAN, NAN]
        known = [p for p in powers if not math.isnan(p)]
        charging = bool(self.txs)
        power = sum(known) if known else (NAN if charging else 0.0)
        energy = [m.energy_wh for m in meters if not math.isnan(m.energy_wh)]
        socs = [m.soc for m in meters if not math.isnan(m.soc)]
        session_wh, starts = 0.0, []
        for tx in self.txs.values():
            starts.append(tx.start_s)
            reg = self.meters.get(tx.connector, Meter()).energy_wh
            if not math.isnan(reg) and not math.isnan(tx.meter_start_wh):
                session_wh += max(0.0, reg - tx.meter_start_wh)
        plugged = charging or any(s in PLUGGED for s in self.status.values())
        return {
            "power_kw": power / 1000, "current_a": max(phases),
            "l1_a": phases[0], "l2_a": phases[1], "l3_a": phases[2],
            "energy_kwh": sum(energy) / 1000 if energy else NAN,
            "soc_pct": max(socs) if socs else NAN,
            "connected": float(plugged), "charging": float(charging),
            "session_kwh": session_wh / 1000,
            "session_start_s": min(starts) if starts else NAN,
            "session": max((t.number for t in self.txs.values()), default=0.0),
            "offered_a": self.offered_a,
            "meter_lag_s": self.metered_at - self.offered_at,
            "status": float(CHARGER_STATUS.index(self.overall_status())),
        }

    def overall_status(self) -> str:
        whole = self.status.get(0)
        if whole in ("Faulted", "Unavailable"):
            return whole
        own = [s for c, s in self.status.items() if c > 0]
        if not own:
            return "Charging" if self.txs else (whole or "Available")
        return min(own, key=_RANK.index)

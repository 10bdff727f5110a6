"""Smart charging on the charge point's side: the profiles a CSMS installs (OCPP 1.6
SetChargingProfile and 2.0.1 alike) and the composite limit they give at a moment.

The rules a real charge point follows, as far as a current limit goes:

- per purpose, the profile with the highest stack level that has a schedule period valid
  at t wins; a schedule is valid from its start (startSchedule, else the transaction's
  start for Relative ones, else when it was received) for `duration` seconds, so a control
  profile that runs out lapses to the one beneath it (a stack-0 fail-safe);
- a TxProfile (only during a transaction) beats a TxDefaultProfile, one on the connector
  beats one on connector 0;
- the station Max profile (ChargePointMaxProfile / ChargingStationMaxProfile) caps the rest;
  the simulator caps each connector by it, as the role's max_current_a is per connector;
- no profile at all: the charger's own maximum.

Limits in W are turned into A per phase at the charger's voltage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

MAX, TX_DEFAULT, TX = "max", "tx_default", "tx"
PURPOSES = {"ChargePointMaxProfile": MAX, "ChargingStationMaxProfile": MAX,
            "TxDefaultProfile": TX_DEFAULT, "TxProfile": TX}
_RECUR_S = {"Daily": 86400, "Weekly": 7 * 86400}


class ProfileRejected(ValueError):
    """The charge point answers Rejected (the message says why, for the log)."""


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    t = datetime.fromisoformat(value)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Profile:
    id: int
    connector: int
    purpose: str  # MAX, TX_DEFAULT or TX
    stack_level: int
    kind: str  # Absolute, Relative, Recurring
    unit: str  # A or W
    periods: tuple[tuple[float, float, int | None], ...]  # (start s, limit, phases)
    duration_s: float | None
    start: datetime | None
    recurrency: str | None
    valid_from: datetime | None
    valid_to: datetime | None
    transaction_id: str | None
    received: datetime

    @classmethod
    def parse(cls, connector: int, p: dict, received: datetime) -> Profile:
        """A profile as the ocpp library hands it over (snake_case keys, 1.6 or 2.0.1)."""
        purpose = PURPOSES.get(p["charging_profile_purpose"])
        if purpose is None:
            raise ProfileRejected(f"purpose {p['charging_profile_purpose']} is not for a CSMS")
        sched = p["charging_schedule"]
        if isinstance(sched, list):  # 2.0.1: one to three schedules; the first applies
            sched = sched[0]
        periods = tuple(sorted((float(x["start_period"]), float(x["limit"]), x.get("number_phases"))
                               for x in sched["charging_schedule_period"]))
        tx = p.get("transaction_id")
        return cls(
            id=int(p.get("charging_profile_id", p.get("id", 0))), connector=connector,
            purpose=purpose, stack_level=int(p["stack_level"]),
            kind=p["charging_profile_kind"], unit=sched["charging_rate_unit"], periods=periods,
            duration_s=sched.get("duration"), start=parse_time(sched.get("start_schedule")),
            recurrency=p.get("recurrency_kind"), valid_from=parse_time(p.get("valid_from")),
            valid_to=parse_time(p.get("valid_to")),
            transaction_id=None if tx is None else str(tx), received=received)

    def limit_at(self, t: datetime, tx_start: datetime | None) -> tuple[float, int | None] | None:
        """(limit, phases) of the period in force at t, None when no period is."""
        if (self.valid_from and t < self.valid_from) or (self.valid_to and t >= self.valid_to):
            return None
        if self.kind == "Relative":
            start = tx_start if tx_start is not None else t
        else:
            start = self.start or self.received
        elapsed = (t - start).total_seconds()
        if elapsed < 0:
            return None
        if self.kind == "Recurring" and self.recurrency in _RECUR_S:
            elapsed %= _RECUR_S[self.recurrency]
        if self.duration_s is not None and elapsed >= self.duration_s:
            return None
        now = None
        for begin, limit, phases in self.periods:
            if begin <= elapsed:
                now = (limit, phases)
        return now

    def amps_at(self, t: datetime, tx_start: datetime | None, voltage_v: float,
                phases: int) -> float | None:
        got = self.limit_at(t, tx_start)
        if got is None:
            return None
        limit, n = got
        return limit if self.unit == "A" else limit / (voltage_v * (n or phases))


@dataclass(frozen=True)
class Tx:
    """What the profiles need of a running transaction."""

    id: str | None  # None until the CSMS gave it (1.6)
    start: datetime


class ProfileStore:
    """The profiles installed on one charge point and the limit they make."""

    def __init__(self, connectors: int, max_stack_level: int, rejects_tx_default: bool) -> None:
        self.connectors = connectors
        self.max_stack_level = max_stack_level
        self.rejects_tx_default = rejects_tx_default
        self.profiles: list[Profile] = []

    def install(self, profile: Profile, tx: Tx | None) -> None:
        """Install or replace (same id, or same connector, purpose and stack level); raise
        ProfileRejected as a real charge point would answer Rejected."""
        p = profile
        if not 0 <= p.connector <= self.connectors:
            raise ProfileRejected(f"no connector {p.connector}")
        if not 0 <= p.stack_level <= self.max_stack_level:
            raise ProfileRejected(f"stack level {p.stack_level} above {self.max_stack_level}")
        if p.purpose == MAX and p.connector != 0:
            raise ProfileRejected("a Max profile belongs on connector 0")
        if p.purpose == TX_DEFAULT and self.rejects_tx_default:
            raise ProfileRejected("this charge point does not take TxDefaultProfile")
        if p.purpose == TX:
            if p.connector == 0 or tx is None:
                raise ProfileRejected("a TxProfile needs a transaction on its connector")
            if p.transaction_id is not None and p.transaction_id != tx.id:
                raise ProfileRejected(f"transaction {p.transaction_id} is not running here")
        if p.unit not in ("A", "W") or not p.periods:
            raise ProfileRejected("a schedule needs periods in A or W")
        self.profiles = [q for q in self.profiles if q.id != p.id and (
            q.connector, q.purpose, q.stack_level) != (p.connector, p.purpose, p.stack_level)]
        self.profiles.append(p)

    def clear(self, id: int | None = None, connector: int | None = None,
              purpose: str | None = None, stack_level: int | None = None) -> bool:
        """ClearChargingProfile: the profiles matching every criterion given; False when none."""
        def hit(q: Profile) -> bool:
            if id is not None:
                return q.id == id
            return ((connector is None or q.connector == connector)
                    and (purpose is None or q.purpose == PURPOSES.get(purpose, purpose))
                    and (stack_level is None or q.stack_level == stack_level))
        kept = [q for q in self.profiles if not hit(q)]
        cleared = len(kept) < len(self.profiles)
        self.profiles = kept
        return cleared

    def end_transaction(self, connector: int) -> None:
        """A TxProfile lives as long as its transaction."""
        self.profiles = [q for q in self.profiles if not (q.purpose == TX and q.connector == connector)]

    def limit_a(self, connector: int, t: datetime, tx: Tx | None, hw_max_a: float,
                voltage_v: float, phases: int) -> float:
        """The composite limit (A per phase) on `connector` at t."""
        start = tx.start if tx is not None else None

        def best(purpose: str, on: int) -> float | None:
            for q in sorted((q for q in self.profiles if q.purpose == purpose and q.connector == on),
                            key=lambda q: -q.stack_level):
                if purpose == TX and (tx is None or (q.transaction_id not in (None, tx.id))):
                    continue
                amps = q.amps_at(t, start, voltage_v, phases)
                if amps is not None:
                    return amps
            return None

        cap = hw_max_a
        if (m := best(MAX, 0)) is not None:
            cap = min(cap, m)
        own = best(TX, connector) if tx is not None else None
        if own is None:
            own = best(TX_DEFAULT, connector)
        if own is None:
            own = best(TX_DEFAULT, 0)
        return max(0.0, min(cap, own if own is not None else cap))

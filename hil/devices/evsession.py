"""What a simulated charge point tells its CSMS, independent of the OCPP version: sessions
(one car's stay on a connector, one transaction) and the events the physics queues for the
wire (hil/serve/ocpp16.py and ocpp201.py turn them into messages).

The physics decides what happens and when, in simulated time; the wire only delivers, so a
run does not depend on how fast the CSMS answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Kind = Literal["status", "heartbeat", "authorize", "start", "meter", "stop"]
# Delivered only over a live connection; the rest wait for the CSMS, as a charger's
# transaction queue does.
VOLATILE: frozenset[str] = frozenset({"status", "heartbeat"})


@dataclass
class Session:
    number: int  # per charge point, from 1
    connector: int
    id_tag: str
    start: datetime  # UTC
    meter_start_wh: float
    local_id: str  # the transaction id a 2.0.1 station makes up itself
    tx_id: str | None = None  # as profiles name it: 2.0.1 local_id, 1.6 the CSMS's number
    csms_id: int | None = None  # 1.6: StartTransaction.conf transactionId
    start_sent: bool = False
    refused: bool = False  # the CSMS did not accept the id tag: the charger stops
    seq: int = field(default=0)  # 2.0.1 seqNo of the next TransactionEvent
    charging_state: str | None = None  # 2.0.1: the last one told

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq - 1


@dataclass(frozen=True)
class Sample:
    """One meter reading of a connector."""

    power_w: float
    amps: tuple[float, float, float]  # L1, L2, L3
    phases: int  # phases in use (a 1-phase car on a 3-phase charger: 1)
    energy_wh: float  # the connector's register
    soc_pct: float | None  # only when the car reports it
    offered_a: float  # the limit in force


@dataclass(frozen=True)
class Event:
    kind: Kind
    t: datetime  # simulated UTC
    connector: int = 0
    session: Session | None = None
    status: str | None = None  # "status": 1.6 connector status names
    sample: Sample | None = None  # "meter", "start", "stop"
    context: str = "Sample.Periodic"  # "meter": Sample.Periodic or Trigger
    reason: str | None = None  # "stop": EVDisconnected, DeAuthorized

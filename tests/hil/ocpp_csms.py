"""A minimal real CSMS for the simulated charge points' tests: the ocpp library's central
system side (1.6 and 2.0.1) on websockets.serve, accepting everything and recording every
request per charge point; tests send SetChargingProfile and friends through `station(id)`."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import websockets
from conftest import wait_for
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call_result as r16
from ocpp.v16.enums import Action as A16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call_result as r201
from ocpp.v201.enums import Action as A201

HEARTBEAT_S = 30
_tx_ids = itertools.count(1001)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class _Recording:
    def _record(self, action: str, **payload) -> None:
        self.csms.calls.append((self.id, action, payload))


class Central16(_Recording, Cp16):
    @on(A16.boot_notification)
    def _boot(self, **kw):
        self._record("BootNotification", **kw)
        return r16.BootNotification(current_time=_now(), interval=HEARTBEAT_S, status="Accepted")

    @on(A16.heartbeat)
    def _heartbeat(self, **kw):
        self._record("Heartbeat", **kw)
        return r16.Heartbeat(current_time=_now())

    @on(A16.status_notification)
    def _status(self, **kw):
        self._record("StatusNotification", **kw)
        return r16.StatusNotification()

    @on(A16.authorize)
    def _authorize(self, **kw):
        self._record("Authorize", **kw)
        return r16.Authorize(id_tag_info={"status": self.csms.id_tag_status})

    @on(A16.start_transaction)
    def _start(self, **kw):
        tx = next(_tx_ids)
        self._record("StartTransaction", transaction_id=tx, **kw)
        return r16.StartTransaction(transaction_id=tx, id_tag_info={"status": "Accepted"})

    async def _send(self, message: str) -> None:
        """With `tx_limit_at_start` set, a TxProfile for the new transaction goes out in the
        same breath as the StartTransaction answer, so both frames reach the charge point
        together, as they can from a busy CSMS."""
        await super()._send(message)
        amps, msg = self.csms.tx_limit_at_start, json.loads(message)
        if amps is None or msg[0] != 3 or "transactionId" not in msg[2]:
            return
        tx = msg[2]["transactionId"]
        profile = {"chargingProfileId": tx, "transactionId": tx, "stackLevel": 1,
                   "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
                   "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
                       {"startPeriod": 0, "limit": amps}]}}
        await self._connection.send(json.dumps(
            [2, f"limit-{tx}", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile}]))

    async def route_message(self, raw_msg: str) -> None:
        msg = json.loads(raw_msg)
        if msg[0] == 3 and str(msg[1]).startswith("limit-"):
            self._record("SetChargingProfile.conf", **msg[2])
            return
        await super().route_message(raw_msg)

    @on(A16.stop_transaction)
    def _stop(self, **kw):
        self._record("StopTransaction", **kw)
        return r16.StopTransaction()

    @on(A16.meter_values)
    def _meter(self, **kw):
        self._record("MeterValues", **kw)
        return r16.MeterValues()


class Central201(_Recording, Cp201):
    @on(A201.boot_notification)
    def _boot(self, **kw):
        self._record("BootNotification", **kw)
        return r201.BootNotification(current_time=_now(), interval=HEARTBEAT_S, status="Accepted")

    @on(A201.heartbeat)
    def _heartbeat(self, **kw):
        self._record("Heartbeat", **kw)
        return r201.Heartbeat(current_time=_now())

    @on(A201.status_notification)
    def _status(self, **kw):
        self._record("StatusNotification", **kw)
        return r201.StatusNotification()

    @on(A201.authorize)
    def _authorize(self, **kw):
        self._record("Authorize", **kw)
        return r201.Authorize(id_token_info={"status": self.csms.id_tag_status})

    @on(A201.transaction_event)
    def _transaction(self, **kw):
        self._record("TransactionEvent", **kw)
        return r201.TransactionEvent()

    @on(A201.meter_values)
    def _meter(self, **kw):
        self._record("MeterValues", **kw)
        return r201.MeterValues()


@dataclass
class Csms:
    port: int
    calls: list[tuple[str, str, dict]] = field(default_factory=list)
    stations: dict[str, Cp16 | Cp201] = field(default_factory=dict)  # the live connection
    connections: dict[str, int] = field(default_factory=dict)
    id_tag_status: str = "Accepted"
    tx_limit_at_start: float | None = None  # 1.6: a TxProfile (A) right behind StartTransaction
    server: object = None

    async def start(self) -> None:
        self.server = await websockets.serve(self._handle, "127.0.0.1", self.port,
                                             subprotocols=["ocpp1.6", "ocpp2.0.1"])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, ws) -> None:
        cp_id = ws.request.path.strip("/")
        cls = Central16 if ws.subprotocol == "ocpp1.6" else Central201
        cp = cls(cp_id, ws)
        cp.csms = self
        self.stations[cp_id] = cp
        self.connections[cp_id] = self.connections.get(cp_id, 0) + 1
        try:
            await cp.start()
        except websockets.ConnectionClosed:
            pass

    def of(self, cp_id: str, action: str) -> list[dict]:
        return [p for who, a, p in self.calls if who == cp_id and a == action]

    async def wait(self, cp_id: str, action: str, count: int = 1, timeout: float = 20.0,
                   where=lambda p: True) -> list[dict]:
        await wait_for(lambda: len([p for p in self.of(cp_id, action) if where(p)]) >= count,
                       timeout, f"{count} × {action} from {cp_id}")
        return [p for p in self.of(cp_id, action) if where(p)]

    async def call(self, cp_id: str, payload):
        await wait_for(lambda: cp_id in self.stations, 20.0, f"{cp_id} connected")
        return await asyncio.wait_for(self.stations[cp_id].call(payload), 20.0)

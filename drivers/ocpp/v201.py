"""OCPP 2.0.1 charging stations: boot, connector status per EVSE (Occupied refined by the
transaction's chargingState into the 1.6 names of CHARGER_STATUS), TransactionEvent with
its meter values, MeterValues; our calls GetVariables (profile stack depth),
SetChargingProfile and ClearChargingProfile. EVSEs play the part of 1.6's connectors."""

from __future__ import annotations

import logging

from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from drivers.ocpp.point import PROFILE_ID, Point
from drivers.ocpp.station import ENERGY, Sample, Tx, parse_time, to_base

log = logging.getLogger(__name__)

PURPOSE = {"max": "ChargingStationMaxProfile", "safe": "TxDefaultProfile",
           "default": "TxDefaultProfile", "tx": "TxProfile"}
# chargingState of a running transaction -> the connector status it amounts to
CHARGING_STATE = {"Charging": "Charging", "SuspendedEV": "SuspendedEV",
                  "SuspendedEVSE": "SuspendedEVSE", "EVConnected": "Preparing",
                  "Idle": "Preparing"}
ACCEPTED = {"status": "Accepted"}


def sampled(meter_value: list[dict]) -> list[list[Sample]]:
    """2.0.1 MeterValue elements as sample sets: values are numbers with an optional
    unitOfMeasure (unit, power-of-ten multiplier)."""
    sets = []
    for element in meter_value:
        samples = []
        for sv in element.get("sampled_value", []):
            measurand = sv.get("measurand", ENERGY)
            unit = sv.get("unit_of_measure") or {}
            try:
                value = to_base(measurand, float(sv.get("value")), unit.get("unit"),
                                int(unit.get("multiplier", 0)))
            except (TypeError, ValueError, OverflowError):
                value = float("nan")  # dropped (and logged) by the station's sanity check
            samples.append(Sample(measurand, sv.get("phase"), value, sv.get("context")))
        sets.append(samples)
    return sets


class V201(Point, ChargePoint):
    protocol = "ocpp2.0.1"

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self._connector: dict[int, str] = {}  # evse -> its last connectorStatus
        self._ended: set[int] = set()  # evses whose transaction ended while still occupied

    @on(Action.boot_notification)
    def on_boot_notification(self, charging_station: dict, reason: str,
                             **_: object) -> call_result.BootNotification:
        cs = charging_station
        self.station.boot(self.protocol, vendor=cs.get("vendor_name"), model=cs.get("model"),
                          serial=cs.get("serial_number"), firmware=cs.get("firmware_version"))
        log.info("%s booted: %s %s (OCPP 2.0.1, %s)", self.who, cs.get("vendor_name"),
                 cs.get("model"), reason)
        return call_result.BootNotification(current_time=self.now_iso(),
                                            interval=self.station.spec.heartbeat_s,
                                            status="Accepted")

    @after(Action.boot_notification)
    def after_boot_notification(self, **_: object) -> None:
        self.on_boot()  # our calls go out only once the station has its acceptance

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: object) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=self.now_iso())

    @on(Action.status_notification)
    def on_status_notification(self, connector_status: str, evse_id: int,
                               **_: object) -> call_result.StatusNotification:
        self._connector[evse_id] = connector_status
        if connector_status != "Occupied":
            self._ended.discard(evse_id)
        self._refresh(evse_id)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_token: dict, **_: object) -> call_result.Authorize:
        return call_result.Authorize(id_token_info=ACCEPTED)

    @on(Action.transaction_event)
    def on_transaction_event(self, event_type: str, timestamp: str,
                             transaction_info: dict, meter_value: list | None = None,
                             evse: dict | None = None, id_token: dict | None = None,
                             **_: object) -> call_result.TransactionEvent:
        tx_id = str(transaction_info.get("transaction_id"))
        evse_id = (evse or {}).get("id")
        if event_type == "Started":
            tx = self.station.start_tx(tx_id, evse_id or 1, parse_time(timestamp))
        else:
            tx = self.station.tx(tx_id, evse_id)
        if tx is not None and (state := transaction_info.get("charging_state")):
            tx.state = state
        where = tx.connector if tx is not None else (evse_id or 0)
        for samples in sampled(meter_value or []):
            self.station.samples(where, samples, tx)
        if event_type == "Ended":
            self.station.stop_tx(tx_id)
            self._ended.add(where)
        self._refresh(where)
        return call_result.TransactionEvent(
            id_token_info=ACCEPTED if id_token is not None else None)

    @on(Action.meter_values)
    def on_meter_values(self, evse_id: int, meter_value: list[dict],
                        **_: object) -> call_result.MeterValues:
        tx = self.station.tx_on(evse_id)
        for samples in sampled(meter_value):
            self.station.samples(evse_id, samples, tx)
        return call_result.MeterValues()

    @on(Action.notify_event)
    def on_notify_event(self, **_: object) -> call_result.NotifyEvent:
        return call_result.NotifyEvent()

    @on(Action.security_event_notification)
    def on_security_event(self, **_: object) -> call_result.SecurityEventNotification:
        return call_result.SecurityEventNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **_: object) -> call_result.FirmwareStatusNotification:
        return call_result.FirmwareStatusNotification()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: object) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")

    def _refresh(self, evse_id: int) -> None:
        """The CHARGER_STATUS name of one EVSE: Occupied says only that a car is there; the
        transaction's chargingState says what it does."""
        if evse_id == 0:
            if (raw := self._connector.get(0)) is not None:
                self.station.set_status(0, "Preparing" if raw == "Occupied" else raw)
            return
        raw, tx = self._connector.get(evse_id), self.station.tx_on(evse_id)
        if tx is not None and raw in (None, "Occupied"):
            name = CHARGING_STATE.get(tx.state, "Preparing")
        elif raw == "Occupied":
            name = "Finishing" if evse_id in self._ended else "Preparing"
        elif raw is None:
            return
        else:
            name = raw
        self.station.set_status(evse_id, name)

    # --- our calls ---------------------------------------------------------------------

    async def read_stack_level(self) -> int | None:
        result = await self.request(call.GetVariables(get_variable_data=[
            {"component": {"name": "SmartChargingCtrlr"},
             "variable": {"name": "ProfileStackLevel"}}]))
        for entry in result.get_variable_result or []:
            if isinstance(entry, dict) and entry.get("attribute_status") == "Accepted":
                try:
                    return int(entry.get("attribute_value"))
                except (TypeError, ValueError):
                    return None
        return None

    async def set_meter_interval(self, seconds: int) -> str:
        result = await self.request(call.SetVariables(set_variable_data=[
            {"component": {"name": "SampledDataCtrlr"},
             "variable": {"name": "TxUpdatedInterval"}, "attribute_value": str(seconds)}]))
        answers = [e for e in result.set_variable_result or [] if isinstance(e, dict)]
        return str(answers[0].get("attribute_status")) if answers else "Rejected"

    async def set_profile(self, purpose: str, amps: float, stack: int,
                          duration: int | None = None, tx: Tx | None = None) -> str:
        pid = PROFILE_ID[purpose]
        schedule = {"id": pid, "charging_rate_unit": "A", "start_schedule": self.schedule_start(),
                    "charging_schedule_period": [{"start_period": 0,
                                                  "limit": round(amps, 1)}]}
        if duration is not None:
            schedule["duration"] = duration
        profile = {"id": pid, "stack_level": stack,
                   "charging_profile_purpose": PURPOSE[purpose],
                   "charging_profile_kind": "Absolute", "charging_schedule": [schedule]}
        evse = 0
        if tx is not None:
            profile["transaction_id"], evse = tx.id, tx.connector
        result = await self.request(call.SetChargingProfile(evse_id=evse,
                                                            charging_profile=profile))
        return str(result.status)

    async def clear_profile(self, purpose: str) -> None:
        await self.request(call.ClearChargingProfile(charging_profile_id=PROFILE_ID[purpose]))

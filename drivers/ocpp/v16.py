"""OCPP 1.6J charge points: what they tell us (boot, status per connector, transactions we
number, meter values) and the smart-charging calls we make (GetConfiguration for the stack
depth, SetChargingProfile, ClearChargingProfile)."""

from __future__ import annotations

import logging

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, RegistrationStatus

from drivers.ocpp.point import PROFILE_ID, Point
from drivers.ocpp.station import ENERGY, Sample, Tx, parse_time, to_base

log = logging.getLogger(__name__)

PURPOSE = {"max": "ChargePointMaxProfile", "safe": "TxDefaultProfile",
           "default": "TxDefaultProfile", "tx": "TxProfile"}
ACCEPTED = {"status": "Accepted"}


def _number(text: object) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")  # dropped (and logged) by the station's sanity check


def sampled(meter_value: list[dict]) -> list[list[Sample]]:
    """1.6 MeterValue elements as sample sets: values are strings, units W/kW, Wh/kWh,
    A, Percent; a value without measurand is the energy register."""
    sets = []
    for element in meter_value:
        samples = []
        for sv in element.get("sampled_value", []):
            if sv.get("format") == "SignedData":
                continue
            measurand = sv.get("measurand", ENERGY)
            value = to_base(measurand, _number(sv.get("value")), sv.get("unit"))
            samples.append(Sample(measurand, sv.get("phase"), value, sv.get("context")))
        sets.append(samples)
    return sets


class V16(Point, ChargePoint):
    protocol = "ocpp1.6"

    @on(Action.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                             **kw: str) -> call_result.BootNotification:
        self.station.boot(self.protocol, vendor=charge_point_vendor, model=charge_point_model,
                          serial=kw.get("charge_point_serial_number")
                          or kw.get("charge_box_serial_number"),
                          firmware=kw.get("firmware_version"))
        log.info("%s booted: %s %s (OCPP 1.6)", self.who, charge_point_vendor,
                 charge_point_model)
        return call_result.BootNotification(current_time=self.now_iso(),
                                            interval=self.station.spec.heartbeat_s,
                                            status=RegistrationStatus.accepted)

    @after(Action.boot_notification)
    def after_boot_notification(self, **_: object) -> None:
        self.on_boot()  # our calls go out only once the charger has its acceptance

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: object) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=self.now_iso())

    @on(Action.status_notification)
    def on_status_notification(self, connector_id: int, status: str, error_code: str,
                               **_: object) -> call_result.StatusNotification:
        self.station.set_status(connector_id, status)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str, **_: object) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info=ACCEPTED)

    @on(Action.start_transaction)
    def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int,
                             timestamp: str, **_: object) -> call_result.StartTransaction:
        tx_id = self.station.new_tx_id()
        self.station.start_tx(str(tx_id), connector_id, parse_time(timestamp),
                              float(meter_start))
        return call_result.StartTransaction(transaction_id=tx_id, id_tag_info=ACCEPTED)

    @on(Action.stop_transaction)
    def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int,
                            **_: object) -> call_result.StopTransaction:
        self.station.stop_tx(str(transaction_id), float(meter_stop))
        return call_result.StopTransaction(id_tag_info=ACCEPTED)

    @on(Action.meter_values)
    def on_meter_values(self, connector_id: int, meter_value: list[dict],
                        transaction_id: int | None = None,
                        **_: object) -> call_result.MeterValues:
        tx = self.station.tx(None if transaction_id is None else str(transaction_id),
                             connector_id)
        for samples in sampled(meter_value):
            self.station.samples(connector_id, samples, tx)
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: object) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **_: object) -> call_result.FirmwareStatusNotification:
        return call_result.FirmwareStatusNotification()

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status(self, **_: object) -> call_result.DiagnosticsStatusNotification:
        return call_result.DiagnosticsStatusNotification()

    # --- our calls ---------------------------------------------------------------------

    async def read_stack_level(self) -> int | None:
        key = "ChargeProfileMaxStackLevel"
        result = await self.request(call.GetConfiguration(key=[key]))
        for entry in result.configuration_key or []:
            if isinstance(entry, dict) and entry.get("key") == key:
                try:
                    return int(entry.get("value"))
                except (TypeError, ValueError):
                    return None
        return None

    async def set_meter_interval(self, seconds: int) -> str:
        result = await self.request(call.ChangeConfiguration(
            key="MeterValueSampleInterval", value=str(seconds)))
        return str(result.status)

    async def set_profile(self, purpose: str, amps: float, stack: int,
                          duration: int | None = None, tx: Tx | None = None) -> str:
        schedule = {"charging_rate_unit": "A", "start_schedule": self.schedule_start(),
                    "charging_schedule_period": [{"start_period": 0,
                                                  "limit": round(amps, 1)}]}
        if duration is not None:
            schedule["duration"] = duration
        profile = {"charging_profile_id": PROFILE_ID[purpose], "stack_level": stack,
                   "charging_profile_purpose": PURPOSE[purpose],
                   "charging_profile_kind": "Absolute", "charging_schedule": schedule}
        connector = 0
        if tx is not None:
            profile["transaction_id"], connector = int(tx.id), tx.connector
        result = await self.request(call.SetChargingProfile(
            connector_id=connector, cs_charging_profiles=profile))
        return str(result.status)

    async def clear_profile(self, purpose: str) -> None:
        await self.request(call.ClearChargingProfile(id=PROFILE_ID[purpose]))

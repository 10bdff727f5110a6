"""OCPP 2.0.1 as a simulated charging station speaks it: the device's events as
BootNotification, StatusNotification (Available / Occupied), Heartbeat, Authorize and
TransactionEvent (Started, Updated on a charging-state change or a periodic meter reading,
Ended), and the CSMS's SetChargingProfile, ClearChargingProfile, Get/SetVariables and
TriggerMessage answered from the device. Each connector of the config is an EVSE with one
connector."""

from __future__ import annotations

import logging
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from hil.devices.evsession import Event, Sample
from hil.serve.ocppwire import RESPONSE_TIMEOUT_S, Wire, stamp

# 1.6 connector status -> (2.0.1 connector status, charging state of the transaction)
_STATUS = {
    "Available": ("Available", None), "Preparing": ("Occupied", "EVConnected"),
    "Charging": ("Occupied", "Charging"), "SuspendedEV": ("Occupied", "SuspendedEV"),
    "SuspendedEVSE": ("Occupied", "SuspendedEVSE"), "Finishing": ("Occupied", "EVConnected"),
    "Unavailable": ("Unavailable", None), "Faulted": ("Faulted", None),
}
_WRITABLE = {("SampledDataCtrlr", "TxUpdatedInterval"), ("OCPPCommCtrlr", "HeartbeatInterval")}


def variables(dev: Any) -> dict[tuple[str, str], str]:
    return {
        ("SmartChargingCtrlr", "Enabled"): "true",
        ("SmartChargingCtrlr", "ProfileStackLevel"): str(dev.sim.max_stack_level),
        ("SmartChargingCtrlr", "RateUnit"): "A,W",
        ("SmartChargingCtrlr", "PeriodsPerSchedule"): "24",
        ("SmartChargingCtrlr", "Entries"): "16",
        ("SampledDataCtrlr", "TxUpdatedInterval"): str(int(dev.meter_every_s)),
        ("SampledDataCtrlr", "TxUpdatedMeasurands"):
            "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Current.Offered,SoC",
        ("OCPPCommCtrlr", "HeartbeatInterval"): str(int(dev.heartbeat_s or 0)),
    }


def _lookup(dev: Any, item: dict) -> tuple[str, str | None]:
    key = (item["component"]["name"], item["variable"]["name"])
    values = variables(dev)
    if key in values:
        return "Accepted", values[key]
    known = {c for c, _ in values}
    return ("UnknownVariable" if key[0] in known else "UnknownComponent"), None


def meter_value(s: Sample, t: str, context: str) -> dict:
    def sv(value: float, measurand: str, unit: str, **kw: str) -> dict:
        return {"value": round(value, 2), "context": context, "measurand": measurand,
                "unit_of_measure": {"unit": unit}, **kw}
    values = [sv(s.energy_wh, "Energy.Active.Import.Register", "Wh"),
              sv(s.power_w, "Power.Active.Import", "W"),
              *(sv(a, "Current.Import", "A", phase=f"L{i + 1}")
                for i, a in enumerate(s.amps[:s.phases])),
              sv(s.offered_a, "Current.Offered", "A")]
    if s.soc_pct is not None:
        values.append(sv(s.soc_pct, "SoC", "Percent", location="EV"))
    return {"timestamp": t, "sampled_value": values}


class _Cp(ChargePoint):
    def __init__(self, dev: Any, ws: Any, logger: logging.Logger) -> None:
        super().__init__(dev.cfg.charge_point_id, ws, response_timeout=RESPONSE_TIMEOUT_S,
                         logger=logger)
        self.dev = dev

    @on(Action.set_charging_profile)
    def _set_profile(self, evse_id: int, charging_profile: dict, **_: Any):
        return call_result.SetChargingProfile(
            status=self.dev.set_profile(evse_id, charging_profile))

    @on(Action.clear_charging_profile)
    def _clear_profile(self, charging_profile_id: int | None = None,
                       charging_profile_criteria: dict | None = None, **_: Any):
        c = charging_profile_criteria or {}
        cleared = self.dev.store.clear(charging_profile_id, c.get("evse_id"),
                                       c.get("charging_profile_purpose"), c.get("stack_level"))
        return call_result.ClearChargingProfile(status="Accepted" if cleared else "Unknown")

    @on(Action.get_variables)
    def _get_variables(self, get_variable_data: list[dict], **_: Any):
        results = []
        for item in get_variable_data:
            status, value = _lookup(self.dev, item)
            results.append({"attribute_status": status, "component": item["component"],
                            "variable": item["variable"], "attribute_value": value})
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.set_variables)
    def _set_variables(self, set_variable_data: list[dict], **_: Any):
        results = []
        for item in set_variable_data:
            status, _ = _lookup(self.dev, item)
            key = (item["component"]["name"], item["variable"]["name"])
            if status == "Accepted":
                status = self._write(key, item["attribute_value"])
            results.append({"attribute_status": status, "component": item["component"],
                            "variable": item["variable"]})
        return call_result.SetVariables(set_variable_result=results)

    def _write(self, key: tuple[str, str], value: str) -> str:
        try:
            seconds = int(value)
        except ValueError:
            seconds = 0
        if key not in _WRITABLE or seconds <= 0:
            return "Rejected"
        if key[0] == "SampledDataCtrlr":
            self.dev.meter_every_s = float(seconds)
        else:
            self.dev.heartbeat_s = float(seconds)
        return "Accepted"

    @on(Action.trigger_message)
    def _trigger(self, requested_message: str, evse: dict | None = None, **_: Any):
        ok = self.dev.trigger(requested_message, (evse or {}).get("id"))
        return call_result.TriggerMessage(status="Accepted" if ok else "NotImplemented")


class Wire201(Wire):
    def make_cp(self, dev: Any, ws: Any, logger: logging.Logger) -> ChargePoint:
        self._told: dict[int, str] = {}  # connector status last sent on this connection
        return _Cp(dev, ws, logger)

    async def boot(self) -> bool:
        res = await self.call(call.BootNotification(
            charging_station={"model": "HIL-AC22", "vendor_name": "PEDF-HIL",
                              "serial_number": self.dev.cfg.charge_point_id,
                              "firmware_version": "0.1"},
            reason="PowerUp"))
        if res is None or res.status != "Accepted":
            return False
        self.dev.boot_accepted(res.interval)
        return True

    async def send_statuses(self) -> None:
        for number, status, session in self.dev.statuses():
            await self._status(Event("status", self.dev.t_utc, number, session, status=status))

    def _id_token(self, ev: Event) -> dict:
        return {"id_token": ev.session.id_tag, "type": "ISO14443"}

    async def _transaction(self, ev: Event, event_type: str, trigger: str, *,
                           context: str | None = None, **kw: Any) -> Any:
        s = ev.session
        state = _STATUS.get(self.dev.connectors[ev.connector - 1].status, (None, None))[1]
        info = {"transaction_id": s.local_id, "charging_state": s.charging_state or state,
                **kw.pop("info", {})}
        if context is not None:
            kw["meter_value"] = [meter_value(ev.sample, stamp(ev.t), context)]
        return await self.call(call.TransactionEvent(
            event_type=event_type, timestamp=stamp(ev.t), trigger_reason=trigger,
            seq_no=s.next_seq(), transaction_info=info, **kw))

    async def _status(self, ev: Event) -> None:
        connector_status, charging = _STATUS.get(ev.status, ("Unavailable", None))
        if self._told.get(ev.connector) != connector_status:
            await self.call(call.StatusNotification(
                timestamp=stamp(ev.t), connector_status=connector_status, evse_id=ev.connector,
                connector_id=1))
            self._told[ev.connector] = connector_status
        s = ev.session
        if s is not None and s.start_sent and not s.refused and charging not in (
                None, s.charging_state):
            s.charging_state = charging
            await self._transaction(ev, "Updated", "ChargingStateChanged")

    async def _heartbeat(self, ev: Event) -> None:
        await self.call(call.Heartbeat())

    async def _authorize(self, ev: Event) -> None:
        if ev.session.refused:
            return
        res = await self.call(call.Authorize(id_token=self._id_token(ev)))
        self.tag_refused(res.id_token_info.get("status") if res else None, ev)

    async def _start(self, ev: Event) -> None:
        s = ev.session
        if s.refused:
            return
        s.charging_state = "EVConnected"
        res = await self.call(call.TransactionEvent(
            event_type="Started", timestamp=stamp(ev.t), trigger_reason="CablePluggedIn",
            seq_no=s.next_seq(),
            transaction_info={"transaction_id": s.local_id, "charging_state": "EVConnected"},
            evse={"id": ev.connector, "connector_id": 1}, id_token=self._id_token(ev),
            meter_value=[meter_value(ev.sample, stamp(ev.t), "Transaction.Begin")],
            number_of_phases_used=ev.sample.phases))
        s.start_sent = True
        info = getattr(res, "id_token_info", None) or {}
        self.tag_refused(info.get("status"), ev)

    async def _meter(self, ev: Event) -> None:
        s = ev.session
        if s is not None and s.start_sent and not s.refused:
            trigger = "Trigger" if ev.context == "Trigger" else "MeterValuePeriodic"
            await self._transaction(ev, "Updated", trigger, context=ev.context)
        elif s is None:
            await self.call(call.MeterValues(
                evse_id=ev.connector, meter_value=[meter_value(ev.sample, stamp(ev.t), ev.context)]))

    async def _stop(self, ev: Event) -> None:
        s = ev.session
        if not s.start_sent:
            return  # never started at the CSMS
        trigger = "Deauthorized" if ev.reason == "DeAuthorized" else "EVDeparted"
        await self._transaction(ev, "Ended", trigger, context="Transaction.End",
                                info={"stopped_reason": ev.reason, "charging_state": "Idle"})

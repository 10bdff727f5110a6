"""OCPP 1.6J as a simulated charge point speaks it: the device's events as BootNotification,
StatusNotification, Heartbeat, Authorize, Start/StopTransaction and MeterValues, and the
CSMS's SetChargingProfile, ClearChargingProfile, Get/ChangeConfiguration and TriggerMessage
answered from the device."""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable

from ocpp.messages import MessageType, unpack
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from hil.devices.evsession import Event, Sample
from hil.serve.ocppwire import RESPONSE_TIMEOUT_S, Wire, stamp

_WRITABLE = {"MeterValueSampleInterval", "HeartbeatInterval"}
_MEASURANDS = "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Current.Offered,SoC"


def configuration(dev: Any) -> dict[str, str]:
    return {
        "ChargeProfileMaxStackLevel": str(dev.sim.max_stack_level),
        "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
        "ChargingScheduleMaxPeriods": "24",
        "MaxChargingProfilesInstalled": "16",
        "HeartbeatInterval": str(int(dev.heartbeat_s or 0)),
        "MeterValueSampleInterval": str(int(dev.meter_every_s)),
        "MeterValuesSampledData": _MEASURANDS,
        "NumberOfConnectors": str(dev.cfg.connectors),
    }


def sampled_values(s: Sample, context: str) -> list[dict]:
    out = [
        {"value": f"{s.energy_wh:.0f}", "context": context,
         "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": f"{s.power_w:.0f}", "context": context, "measurand": "Power.Active.Import",
         "unit": "W"},
        *({"value": f"{a:.2f}", "context": context, "measurand": "Current.Import",
           "phase": f"L{i + 1}", "unit": "A"} for i, a in enumerate(s.amps[:s.phases])),
        {"value": f"{s.offered_a:.1f}", "context": context, "measurand": "Current.Offered",
         "unit": "A"},
    ]
    if s.soc_pct is not None:
        out.append({"value": f"{s.soc_pct:.1f}", "context": context, "measurand": "SoC",
                    "location": "EV", "unit": "Percent"})
    return out


class _Cp(ChargePoint):
    def __init__(self, dev: Any, ws: Any, logger: logging.Logger) -> None:
        super().__init__(dev.cfg.charge_point_id, ws, response_timeout=RESPONSE_TIMEOUT_S,
                         logger=logger)
        self.dev = dev
        self.on_result: dict[str, Callable[[dict], None]] = {}

    async def route_message(self, raw_msg: str) -> None:
        """A real charge point handles one frame after the other, so an answer is applied
        before the CSMS's next request is read (the ocpp library would hand the answer to
        the waiting call and read on, answering a TxProfile before the transaction id)."""
        msg = unpack(raw_msg)
        if msg.message_type_id == MessageType.CallResult and msg.unique_id in self.on_result:
            self.on_result.pop(msg.unique_id)(msg.payload)
        await super().route_message(raw_msg)

    @on(Action.set_charging_profile)
    def _set_profile(self, connector_id: int, cs_charging_profiles: dict, **_: Any):
        return call_result.SetChargingProfile(
            status=self.dev.set_profile(connector_id, cs_charging_profiles))

    @on(Action.clear_charging_profile)
    def _clear_profile(self, id: int | None = None, connector_id: int | None = None,
                       charging_profile_purpose: str | None = None,
                       stack_level: int | None = None, **_: Any):
        cleared = self.dev.store.clear(id, connector_id, charging_profile_purpose, stack_level)
        return call_result.ClearChargingProfile(status="Accepted" if cleared else "Unknown")

    @on(Action.get_configuration)
    def _get_configuration(self, key: list[str] | None = None, **_: Any):
        values = configuration(self.dev)
        keys = key or list(values)
        return call_result.GetConfiguration(
            configuration_key=[{"key": k, "readonly": k not in _WRITABLE, "value": values[k]}
                               for k in keys if k in values],
            unknown_key=[k for k in keys if k not in values] or None)

    @on(Action.change_configuration)
    def _change_configuration(self, key: str, value: str, **_: Any):
        if key not in configuration(self.dev):
            return call_result.ChangeConfiguration(status="NotSupported")
        try:
            seconds = int(value)
        except ValueError:
            seconds = 0
        if key not in _WRITABLE or seconds <= 0:
            return call_result.ChangeConfiguration(status="Rejected")
        if key == "MeterValueSampleInterval":
            self.dev.meter_every_s = float(seconds)
        else:
            self.dev.heartbeat_s = float(seconds)
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.trigger_message)
    def _trigger(self, requested_message: str, connector_id: int | None = None, **_: Any):
        ok = self.dev.trigger(requested_message, connector_id)
        return call_result.TriggerMessage(status="Accepted" if ok else "NotImplemented")


class Wire16(Wire):
    def make_cp(self, dev: Any, ws: Any, logger: logging.Logger) -> ChargePoint:
        return _Cp(dev, ws, logger)

    async def boot(self) -> bool:
        res = await self.call(call.BootNotification(
            charge_point_model="HIL-AC22", charge_point_vendor="PEDF-HIL",
            charge_point_serial_number=self.dev.cfg.charge_point_id, firmware_version="0.1"))
        if res is None or res.status != "Accepted":
            return False
        self.dev.boot_accepted(res.interval)
        return True

    async def send_statuses(self) -> None:
        now = stamp(self.dev.t_utc) if self.dev.t_utc else None
        await self.call(call.StatusNotification(0, "NoError", "Available", timestamp=now))
        for number, status, _ in self.dev.statuses():
            await self.call(call.StatusNotification(number, "NoError", status, timestamp=now))

    async def _status(self, ev: Event) -> None:
        await self.call(call.StatusNotification(ev.connector, "NoError", ev.status,
                                                timestamp=stamp(ev.t)))

    async def _heartbeat(self, ev: Event) -> None:
        await self.call(call.Heartbeat())

    async def _authorize(self, ev: Event) -> None:
        if ev.session.refused:
            return
        res = await self.call(call.Authorize(id_tag=ev.session.id_tag))
        self.tag_refused(res.id_tag_info.get("status") if res else None, ev)

    async def _start(self, ev: Event) -> None:
        s = ev.session
        if s.refused:
            return

        def started(payload: dict) -> None:
            s.csms_id = payload["transactionId"]
            s.tx_id = str(s.csms_id)

        uid = str(uuid.uuid4())
        self.cp.on_result[uid] = started
        try:
            res = await self.call(call.StartTransaction(
                connector_id=ev.connector, id_tag=s.id_tag, meter_start=round(s.meter_start_wh),
                timestamp=stamp(ev.t)), unique_id=uid)
        finally:
            self.cp.on_result.pop(uid, None)
        s.start_sent = True
        if res is not None:
            self.tag_refused(res.id_tag_info.get("status"), ev)

    async def _meter(self, ev: Event) -> None:
        s = ev.session
        if s is not None and s.csms_id is None:
            if not s.start_sent:
                return  # a transaction the CSMS never heard of (refused)
            s = None
        mv = {"timestamp": stamp(ev.t),
              "sampled_value": sampled_values(ev.sample, ev.context)}
        await self.call(call.MeterValues(connector_id=ev.connector, meter_value=[mv],
                                         transaction_id=s.csms_id if s else None))

    async def _stop(self, ev: Event) -> None:
        s = ev.session
        if s.csms_id is None:
            return  # never started at the CSMS: nothing to stop
        mv = {"timestamp": stamp(ev.t),
              "sampled_value": sampled_values(ev.sample, "Transaction.End")}
        await self.call(call.StopTransaction(
            meter_stop=round(ev.sample.energy_wh), timestamp=stamp(ev.t),
            transaction_id=s.csms_id, reason=ev.reason, id_tag=s.id_tag, transaction_data=[mv]))

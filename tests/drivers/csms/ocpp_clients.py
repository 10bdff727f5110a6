"""Real OCPP charge points for the CSMS tests: the `ocpp` library's own ChargePoint classes
(1.6 and 2.0.1) over real WebSockets, recording what the CSMS sends them and answering as
each test tells them. Plus the CSMS under test on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import websockets
from conftest import free_port
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp16Base
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as Cp201Base
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.exceptions import ConnectionClosed

from drivers.ocpp import Csms, OcppCharger
from drivers.spec import OcppSpec

SPEC = OcppSpec(charge_point_id="CP1", listen_host="127.0.0.1", listen_port=0, connectors=1,
                phases=3, voltage_v=230.0, max_current_a=32.0, safe_current_a=6.0,
                heartbeat_s=30, deadband_a=1.0, min_interval_s=1.0, meter_interval_s=10)


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Got:
    """One SetChargingProfile the charge point received, in neutral terms."""

    at: float  # monotonic, on arrival
    where: int  # connector (1.6) or EVSE (2.0.1)
    purpose: str
    stack: int
    kind: str
    limit: float
    start: str | None
    duration: int | None
    tx: object | None
    profile_id: int


class Recorder:
    """What both versions' test charge points share: the profiles they got, how they answer
    (`answer(got)` -> status, may be async), the profile ids they were told to clear."""

    def setup_recorder(self, stack_level: int | None) -> None:
        self.got: list[Got] = []
        self.cleared: list[int] = []
        self.stack_level = stack_level
        self.configured: dict[str, str] = {}  # settings the CSMS changed, by name
        self.answer: Callable[[Got], object] = lambda got: "Accepted"

    async def _answer(self, got: Got) -> str:
        self.got.append(got)
        status = self.answer(got)
        return await status if inspect.isawaitable(status) else status

    def control(self) -> list[Got]:
        """Profiles above stack level 0: our limits, not the fail-safe ones."""
        return [g for g in self.got if g.stack > 0]


class Cp16(Recorder, Cp16Base):
    def __init__(self, cp_id: str, ws, stack_level: int | None = 3) -> None:
        super().__init__(cp_id, ws, response_timeout=10)
        self.setup_recorder(stack_level)

    @on(Action16.set_charging_profile)
    async def on_set_profile(self, connector_id: int, cs_charging_profiles: dict, **_):
        p = cs_charging_profiles
        s = p["charging_schedule"]
        got = Got(time.monotonic(), connector_id, p["charging_profile_purpose"],
                  p["stack_level"], p["charging_profile_kind"],
                  float(s["charging_schedule_period"][0]["limit"]), s.get("start_schedule"),
                  s.get("duration"), p.get("transaction_id"), p["charging_profile_id"])
        return result16.SetChargingProfile(status=await self._answer(got))

    @on(Action16.get_configuration)
    def on_get_configuration(self, key: list | None = None, **_):
        if self.stack_level is None:
            return result16.GetConfiguration(unknown_key=key or [])
        return result16.GetConfiguration(configuration_key=[
            {"key": "ChargeProfileMaxStackLevel", "readonly": True,
             "value": str(self.stack_level)}])

    @on(Action16.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_):
        self.configured[key] = value
        return result16.ChangeConfiguration(status="Accepted")

    @on(Action16.clear_charging_profile)
    def on_clear(self, id: int | None = None, **_):
        self.cleared.append(id)
        return result16.ClearChargingProfile(status="Accepted")


class Cp201(Recorder, Cp201Base):
    def __init__(self, cp_id: str, ws, stack_level: int | None = 5) -> None:
        super().__init__(cp_id, ws, response_timeout=10)
        self.setup_recorder(stack_level)

    @on(Action201.set_charging_profile)
    async def on_set_profile(self, evse_id: int, charging_profile: dict, **_):
        p = charging_profile
        s = p["charging_schedule"][0]
        got = Got(time.monotonic(), evse_id, p["charging_profile_purpose"], p["stack_level"],
                  p["charging_profile_kind"],
                  float(s["charging_schedule_period"][0]["limit"]), s.get("start_schedule"),
                  s.get("duration"), p.get("transaction_id"), p["id"])
        return result201.SetChargingProfile(status=await self._answer(got))

    @on(Action201.get_variables)
    def on_get_variables(self, get_variable_data: list, **_):
        d = get_variable_data[0]
        if self.stack_level is None:
            return result201.GetVariables(get_variable_result=[
                {"attribute_status": "UnknownVariable", **d}])
        return result201.GetVariables(get_variable_result=[
            {"attribute_status": "Accepted", "attribute_value": str(self.stack_level), **d}])

    @on(Action201.set_variables)
    def on_set_variables(self, set_variable_data: list, **_):
        for d in set_variable_data:
            self.configured[f"{d['component']['name']}.{d['variable']['name']}"] = (
                d["attribute_value"])
        return result201.SetVariables(set_variable_result=[
            {"attribute_status": "Accepted", "component": d["component"],
             "variable": d["variable"]} for d in set_variable_data])

    @on(Action201.clear_charging_profile)
    def on_clear(self, charging_profile_id: int | None = None, **_):
        self.cleared.append(charging_profile_id)
        return result201.ClearChargingProfile(status="Accepted")


class Client:
    """A connected test charge point and its receive loop."""

    def __init__(self, cp, ws) -> None:
        self.cp, self.ws = cp, ws
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.cp.start()

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.task, return_exceptions=True)

    @property
    def closed(self) -> bool:
        return self.task.done()


async def connect(port: int, cp_id: str, version: str = "1.6", **kw) -> Client:
    sub = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/{cp_id}", subprotocols=[sub])
    assert ws.subprotocol == sub
    cls = Cp16 if version == "1.6" else Cp201
    return Client(cls(cp_id, ws, **kw), ws)


class Site:
    """A Csms on a free port with one OcppCharger (more with `charger()`)."""

    def __init__(self, **spec_changes) -> None:
        self.port = free_port()
        self.csms = Csms("127.0.0.1", self.port)
        self.chargers: list[OcppCharger] = []
        self.clients: list[Client] = []
        self.spec = replace(SPEC, listen_port=self.port, **spec_changes)

    def charger(self, device_id: str = "ev1", **options) -> OcppCharger:
        spec = replace(self.spec, charge_point_id=options.pop("cp_id", self.spec.charge_point_id))
        options = {"response_timeout_s": 5.0, "retry_s": 0.2, "boot_wait_s": 10.0} | options
        charger = OcppCharger(device_id, spec, self.csms, **options)
        self.chargers.append(charger)
        return charger

    async def client(self, version: str = "1.6", cp_id: str | None = None, **kw) -> Client:
        c = await connect(self.port, cp_id or self.spec.charge_point_id, version, **kw)
        self.clients.append(c)
        return c

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        for charger in self.chargers:
            await charger.close()
        await self.csms.close()

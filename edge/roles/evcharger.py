"""EV chargers over OCPP (有序充电): controllable consumers that share the site's headroom
by priority, never below their minimum current unless paused, and plan their energy
against each car's departure."""

from __future__ import annotations

import math
from datetime import time
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from drivers.base import CHARGER_STATUS
from drivers.spec import OcppSpec
from edge.config.base import DeviceBase, PositiveKw
from edge.roles.evsession import Charging, EvRequest, EvStates, apply_request, observe_session
from edge.roles.evshare import PHASES, Circuits, Want, economic_minimums, share
from edge.roles.role import Demand, Part, Role, Room, rounded, total

CAR_LIMITED_A = 2.0  # a car drawing this far below its settled offer has shown its limit
CAR_FOLLOWS_A = 1.0  # ... and one drawing this close to it may take more
RESPOND_S = 5.0  # a car follows a new limit within 5 s (IEC 61851-1)
SETTLE_S = 2 * RESPOND_S  # no raise until the last change has settled at the PCC
SLACK_H = 0.1  # a car needing its full power until this close to leaving is charged flat out


class EvChargerDevice(DeviceBase):
    """One OCPP charge point (1.6J or 2.0.1) that connects to the daemon's CSMS as
    ws://<ocpp.host>:<ocpp.port>/<charge_point_id>."""

    role: Literal["ev_charger"]
    protocol: Literal["ocpp"] = "ocpp"
    charge_point_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,48}$",
                                 description="the identity the charger connects with")
    connectors: int = Field(1, ge=1, le=4, description="connectors (EVSEs) on the station; "
                            "the limit applies to each")
    max_current_a: float = Field(gt=0, le=1000, description="per phase; installed at boot as "
                                 "the station's cap")
    min_current_a: float = Field(6.0, gt=0, le=100, description="IEC 61851 floor: below it "
                                 "the charger is paused (0 A), never set in between")
    phases: Literal[1, 3] = 3
    phase: Literal["L1", "L2", "L3"] = Field("L1", description="1-phase chargers: the phase "
                                               "they load (for their circuit)")
    voltage_v: float = Field(230.0, gt=0, le=1000, description="phase voltage")
    circuit: str | None = Field(None, description="a name in ocpp.circuits whose limit it "
                                "shares with the other chargers on it")
    priority: int = Field(0, ge=0, le=1000, description="higher is served first, paused last")
    safe_current_a: float | None = Field(
        None, ge=0, description="what the charger falls back to when the controller goes "
        "quiet (its fail-safe profile); default min_current_a, 0 pauses")
    revert_s: int = Field(300, ge=30, le=86400, description="our limit lapses after this "
                          "unless refreshed; the fail-safe current then applies")
    deadband_a: float = Field(1.0, ge=0, le=32, description="a limit closer than this to the "
                              "one in force is not sent")
    min_interval_s: float = Field(10.0, ge=0, le=3600, description="raises are sent at most "
                                  "this often; cuts go at once")
    enable_delay_s: float = Field(60.0, ge=0, le=3600, description="room for the minimum "
                                  "current must last this long before a paused car resumes")
    disable_delay_s: float = Field(180.0, ge=0, le=3600, description="economic room must be "
                                   "gone this long before a car is paused (limits act at once)")
    car_capacity_kwh: PositiveKw = Field(60.0, description="battery of a car that does not "
                                         "say, to turn its SoC into energy needed")
    target_soc_pct: float = Field(80.0, gt=0, le=100, description="what a session charges to")
    default_energy_kwh: PositiveKw = Field(20.0, description="energy a session needs when "
                                           "the car reports no SoC and no command says")
    default_departure: time | None = Field(
        None, description="local HH:MM a car leaves when no command says; none: "
        "default_dwell_h after it arrived")
    default_dwell_h: float = Field(8.0, gt=0, le=72)

    @model_validator(mode="after")
    def _currents(self) -> EvChargerDevice:
        if self.min_current_a > self.max_current_a:
            raise ValueError("min_current_a must not exceed max_current_a")
        if self.safe_current_a is not None and self.safe_current_a > self.max_current_a:
            raise ValueError("safe_current_a must not exceed max_current_a")
        if self.safe_current_a is not None and 0 < self.safe_current_a < self.min_current_a:
            raise ValueError("safe_current_a must be 0 (pause) or at least min_current_a")
        return self

    @property
    def fail_safe_a(self) -> float:
        return self.min_current_a if self.safe_current_a is None else self.safe_current_a

    def kw(self, amps: float, connectors: int = 1) -> float:
        """AC power at `amps` per phase on `connectors` charging connectors."""
        return amps * self.voltage_v * self.phases * connectors / 1000

    @property
    def max_kw(self) -> float:
        return self.kw(self.max_current_a, self.connectors)


def _states(mem) -> EvStates:
    return mem.roles["ev_charger"]


def kw_per_a(d: EvChargerDevice, image, c: Charging | None = None) -> float:
    """kW per ampere of limit: the phases the car draws on (a 1-phase car on a 3-phase
    charger), as seen while it charges and remembered for its session; else the charger's."""
    phases = d.phases
    amps, kw = image.value(d.id, "current_a"), image.value(d.id, "power_kw")
    if amps > 1.0 and kw > 0.0:
        # From power over current, not from which phases report a current: some chargers
        # send one unphased current, which would read as a 1-phase car.
        per_phase_kw = d.voltage_v * amps * d.connectors / 1000
        phases = min(max(round(kw / per_phase_kw), 1), d.phases)
        if c is not None and c.session is not None:
            c.session.phases = phases
    elif c is not None and c.session is not None and c.session.phases:
        phases = c.session.phases
    return d.kw(1.0, d.connectors) * phases / d.phases


def enabled(d: EvChargerDevice, c: Charging, economic: bool, must: bool, now_s: float) -> bool:
    """The economic room's verdict after the delays. A running car is paused once that room
    has been gone for disable_delay_s. A paused car resumes once the room for its minimum has
    stood enable_delay_s and its pause (for whatever reason: a hard limit cuts at once) is
    as old; at once when it was never paused in this session."""
    if must:
        c.want_since_s = c.short_since_s = None
        return True
    if c.running:
        if economic:
            c.short_since_s = None
            return True
        if c.short_since_s is None:
            c.short_since_s = now_s
        return now_s - c.short_since_s < d.disable_delay_s
    if not economic:
        c.want_since_s = None
        return False
    if c.want_since_s is None:
        c.want_since_s = now_s
    if not math.isfinite(c.since_s):
        return True
    return min(now_s - c.want_since_s, now_s - c.since_s) >= d.enable_delay_s


def drawn_kw(d: EvChargerDevice, image, c: Charging, now_s: float, hold: bool = True) -> float:
    """What the car draws now, for the site without it. Meter values come every few seconds
    to a minute, the PCC meter every cycle: a car just cut would still read its old draw and
    show room that is not there, and one just resumed its old zero, whose ramp would then
    count as the building's and cut it again. So a car counts at the limit its charger
    accepted (or its own maximum, once it has shown one), and for a few seconds after a
    cut at the limit before it, while it ramps down (after that, a grid still over the limit
    is real and cut further); a car not charging, or whose charger
    has taken no limit yet, at what it reported."""
    kw = image.value(d.id, "power_kw")
    if not math.isfinite(kw):
        kw = 0.0  # charging before its first meter value: the PCC has it in the building
    offered = image.value(d.id, "offered_a")
    if c.session is None or not math.isfinite(offered):
        return kw
    amps = offered if c.car_a is None else min(offered, c.car_a)
    if hold and now_s - c.changed_at_s < RESPOND_S:
        amps = max(amps, c.cut_from_a)
    return amps * kw_per_a(d, image, c)


def learn_car_limit(d: EvChargerDevice, image, c: Charging) -> None:
    """A car drawing well below its offer on a meter value taken after it had time to
    follow the offer has shown its own limit (a battery near full, a 1-phase or 16 A car):
    it counts at that limit (plus a margin it may show it would take) until it draws close
    to its offer again. Learned before anything is decided, so the room it leaves is
    handed out in the same cycle in which the site stops counting it as drawn."""
    offered, drawn = image.value(d.id, "offered_a"), image.value(d.id, "current_a")
    if not (c.running and math.isfinite(offered) and math.isfinite(drawn)
            and offered >= d.min_current_a):
        return
    if drawn >= offered - CAR_FOLLOWS_A:
        c.car_a = None
    elif drawn < offered - CAR_LIMITED_A and image.value(d.id, "meter_lag_s") >= RESPOND_S:
        c.car_a = max(drawn + CAR_LIMITED_A, d.min_current_a)


class EvCharger(Role):
    name = "ev_charger"
    model = EvChargerDevice
    writes = True
    decision_key = "ev_a"
    setpoint_unit = "A"
    allocates = True

    def summary(self, d: EvChargerDevice) -> str:
        return (f"OCPP {d.charge_point_id}, {d.connectors}×{d.phases}-phase "
                f"{d.min_current_a:g}-{d.max_current_a:g} A ({d.max_kw:g} kW), "
                f"priority {d.priority}" + (f", circuit {d.circuit}" if d.circuit else ""))

    def config_problems(self, devs: list[EvChargerDevice], config) -> list[str]:
        problems = []
        ids = [d.charge_point_id for d in devs]
        if dup := sorted({i for i in ids if ids.count(i) > 1}):
            problems.append(f"charge_point_id must be unique; repeated: {', '.join(dup)}")
        for d in devs:
            if d.circuit is not None and d.circuit not in config.ocpp.circuits:
                known = ", ".join(sorted(config.ocpp.circuits)) or "none defined"
                problems.append(f"device {d.id}: circuit {d.circuit!r} is not in "
                                f"ocpp.circuits ({known}); add it there with its max_current_a")
        return problems

    def driver_options(self, dev: EvChargerDevice, config) -> dict:
        return {"ocpp": OcppSpec(
            charge_point_id=dev.charge_point_id, listen_host=config.ocpp.host,
            listen_port=config.ocpp.port, connectors=dev.connectors, phases=dev.phases,
            voltage_v=dev.voltage_v, max_current_a=dev.max_current_a,
            safe_current_a=dev.fail_safe_a, heartbeat_s=config.ocpp.heartbeat_s,
            meter_interval_s=config.ocpp.meter_interval_s,
            deadband_a=dev.deadband_a, min_interval_s=dev.min_interval_s)}

    def balance_term(self, dev) -> str:
        return "ev"  # apart from the building's load: the plan has the sessions as demands

    # -- control --------------------------------------------------------------------------
    def new_state(self, devs, config) -> EvStates:
        return EvStates({d.id: Charging() for d in devs}, ZoneInfo(config.site.timezone))

    def observe(self, devs, image, mem, now_s) -> None:
        st = _states(mem)
        for d in devs:
            if not image.good(d.id):
                continue
            c = st.by_id[d.id]
            before = c.session
            observe_session(d, image, c, st.tz)
            if c.session is not before and (before is None or c.session is None
                                            or before.number != c.session.number):
                c.running, c.since_s, c.want_since_s, c.short_since_s, c.car_a = (
                    False, -math.inf, None, None, None)
            learn_car_limit(d, image, c)

    def drawn_kw(self, devs, image, mem, now_s, hold: bool = True) -> float:
        st = _states(mem)
        return sum(drawn_kw(d, image, st.by_id[d.id], now_s, hold) for d in devs
                   if image.good(d.id))

    def allocate(self, devs, image, mem, now_s, config, room: Room):
        st, out, wants = _states(mem), {}, []
        circuits = Circuits({n: [c.max_current_a] * 3 for n, c in config.ocpp.circuits.items()})
        for d in devs:
            c = st.by_id[d.id]
            if not image.good(d.id):
                # Unreachable: it holds our last limit, then lapses to its fail-safe. The
                # limit stays what it was: a new one would reach it when it reconnects,
                # before the room for it is known.
                last = c.limit_a
                out[d.id] = d.fail_safe_a if last is None else last
                circuits.take(_want_stub(d), max(d.fail_safe_a, last or 0.0))
                continue
            if c.session is None:
                out[d.id] = c.limit_a = 0.0  # no car: nothing starts before it has room
                continue
            if (req := room.requests.get(d.id)) is not None:
                apply_request(c, req, image.value(d.id, "session_kwh"))
            wants.append(self._want(d, image, mem, c, room, now_s))
        by_id = {d.id: d for d in devs}
        verdict = economic_minimums(wants, room.surplus_kw)
        for w in wants:
            w.wants_min = enabled(by_id[w.id], st.by_id[w.id], verdict[w.id], w.must, now_s)
        if any(now_s - st.by_id[d.id].changed_at_s < SETTLE_S for d in devs):
            # Cars are still following the last change: the PCC does not show it yet, so
            # nothing is raised until it does (cuts go on).
            for w in wants:
                now_a = mem.written[w.id].value or 0.0
                w.max_a = min(w.max_a, now_a)
                w.wants_min = w.wants_min and now_a >= w.min_a
        import_kw = room.import_kw
        settling = now_s < st.site_until_s and math.isfinite(st.site_kw)
        if settling and math.isfinite(room.site_kw):
            import_kw = max(import_kw - max(st.site_kw - room.site_kw, 0.0), 0.0)
        amps = share(wants, import_kw, room.surplus_kw, circuits)
        changed = False
        kw = 0.0
        for w in wants:
            c, a = st.by_id[w.id], amps[w.id]
            if c.running != (a > 0):
                c.running, c.since_s = a > 0, now_s
            before = mem.written[w.id].value or 0.0
            if abs(a - before) >= by_id[w.id].deadband_a or (a > 0) != (before > 0):
                c.changed_at_s, c.cut_from_a = now_s, (before if a < before else 0.0)
                changed = True
            kw += a * w.kw_per_a
            out[w.id] = c.limit_a = a
        if changed:
            if not settling:
                st.site_kw = room.site_kw
            st.site_until_s = now_s + SETTLE_S
        return out, kw

    def _want(self, d: EvChargerDevice, image, mem, c: Charging, room: Room,
              now_s: float) -> Want:
        per_a = kw_per_a(d, image, c)
        s = c.session
        remaining = s.remaining_kwh(image.value(d.id, "session_kwh"))
        hours = s.hours_left(image.ts)
        full_kw = d.max_current_a * per_a
        must = remaining > 0 and remaining / full_kw >= hours - SLACK_H
        max_a = d.max_current_a if c.car_a is None else c.car_a
        if must or room.planned_kw is None:
            target = math.inf
        else:
            target = room.planned_kw.get(d.id, 0.0)
        return Want(d.id, d.priority, per_a, d.min_current_a, max_a, target, must, hours,
                    d.circuit, _phases(d))

    def session_request(self, d: EvChargerDevice, image, at, departure,
                        energy_kwh) -> EvRequest:
        """For the car plugged in now (its session number), else the next one to come."""
        if image is None or not image.good(d.id):
            raise ValueError(f"charger {d.id} has no good reading, so the session the command "
                             "is for is unknown; send it again once the charger is back")
        number = image.value(d.id, "session")
        if image.value(d.id, "connected") < 0.5 or not math.isfinite(number):
            number = 0.0
        return EvRequest(d.id, at, float(number), departure, energy_kwh)

    def setpoints(self, devs, image, mem, config, kernel_out) -> dict[str, float]:
        return {}  # allocate() sets them

    def safe(self, devs, image, mem, now_s, config, final) -> dict[str, float]:
        return {d.id: d.fail_safe_a for d in devs}

    def deadband(self, configured_kw: float, dev=None) -> float:
        return 0.0  # amperes, not kW: the charger's own writer applies deadband_a

    def write(self, driver, value: float, revert_s: int):
        return driver.write_current(value, revert_s)

    def write_phase(self, dev, value, mem) -> int:
        """Cuts make room before anyone else adds load; raises go last."""
        last = mem.written[dev.id].value
        if last is None or last == value:
            return 1
        return 0 if value < last else 2

    def demands(self, devs, image, mem) -> list[Demand]:
        out = []
        for d in devs:
            c = _states(mem).by_id[d.id]
            if c.session is None or not image.good(d.id):
                continue
            remaining = c.session.remaining_kwh(image.value(d.id, "session_kwh"))
            if remaining > 0:
                out.append(Demand(d.id, remaining, c.session.departure,
                                  d.max_current_a * kw_per_a(d, image, c)))
        return out

    # -- reporting --------------------------------------------------------------------------
    def telemetry(self, devs, image) -> dict:
        chargers = {}
        for d in devs:
            if not image.good(d.id):
                chargers[d.id] = {"status": "Offline"}
                continue
            soc = image.value(d.id, "soc_pct")
            chargers[d.id] = {
                "status": CHARGER_STATUS[int(image.value(d.id, "status"))],
                "kw": rounded(image.value(d.id, "power_kw")),
                "a": rounded(image.value(d.id, "current_a"), 1),
                "offered_a": rounded(image.value(d.id, "offered_a"), 1),
                "soc_pct": rounded(soc, 1),
                "session_kwh": rounded(image.value(d.id, "session_kwh")),
            }
        charging = total(image, devs, "charging")
        return {"ev_kw": rounded(total(image, devs, "power_kw")),
                "ev_charging": None if charging is None else round(charging),
                "ev_chargers": chargers}

    def capability(self, d: EvChargerDevice, image) -> Part | None:
        """It can be paused down to nothing and, with a car plugged in, raised to its
        maximum; how long a pause may last is the plan's business (departures)."""
        if not image.good(d.id):
            return None
        p = image.value(d.id, "power_kw")
        p = -p if math.isfinite(p) else 0.0
        low = -d.max_current_a * kw_per_a(d, image) if image.value(d.id, "connected") else p
        return Part(d.id, "consumption", p, 0.0, min(low, p))


def _phases(d: EvChargerDevice) -> tuple[int, ...]:
    return (PHASES.index(d.phase),) if d.phases == 1 else (0, 1, 2)


def _want_stub(d: EvChargerDevice) -> Want:
    """Just enough of a Want to book an unreachable charger's current on its circuit."""
    return Want(d.id, d.priority, 1.0, 0.0, 0.0, 0.0, False, 0.0, d.circuit, _phases(d))

"""Switchable loads (HVAC, water heaters, chargers on a contactor): shed by priority when the
batteries cannot hold the import limit, restored when there is room, within minimum on/off
times; a contactor's feedback may lag its command."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from edge.config.base import DeviceBase, PositiveKw
from edge.control import kernel as layout
from edge.roles.role import Memory, Part, Role, rounded, total

log = logging.getLogger("edge.cycle")

FEEDBACK_POLLS = 3  # fresh polls a load may read against its command before it counts
SETTLE_POLLS = 2  # fresh polls confirming a load switch before the cycle decides anew


class FlexLoadDevice(DeviceBase):
    """A switchable load or load group (HVAC, water heaters, EV chargers on a contactor):
    shed when the batteries cannot hold the import limit, restored when there is room."""

    role: Literal["load"]
    protocol: Literal["modbus-tcp", "modbus-rtu"] = "modbus-tcp"
    rated_kw: PositiveKw = Field(description="what it draws when on")
    priority: int = Field(0, ge=0, le=1000, description="lower sheds first, restores last")
    critical: bool = Field(False, description="never shed while supply lasts (an island "
                           "keeps it running; the batteries hold a reserve for it)")
    min_on_s: float = Field(60.0, ge=0, le=86400, description="never shed sooner after a start")
    min_off_s: float = Field(60.0, ge=0, le=86400, description="never restored sooner after a stop")
    restore_margin_kw: float | None = Field(
        None, ge=0, description="room beyond rated_kw a restore needs, so site noise does not "
        "shed it again at once; default 10 % of rated_kw")
    safe_state: Literal["on", "off"] = Field(
        "on", description="state on lost communication, a lost PCC meter or shutdown")
    revert_s: int = Field(60, ge=5, le=3600, description="the relay returns to its default after this")


@dataclass(slots=True)
class Switching:
    """A load's on/off state as last seen or commanded, and since when (sim s). A state
    first seen counts from then: after a restart its real age is unknown, and a
    compressor's minimum on/off time outranks a faster first shed."""

    on: bool | None = None
    since_s: float = 0.0
    disagree: int = 0  # consecutive fresh polls reading the other state than commanded
    settle: int = SETTLE_POLLS  # fresh polls that confirmed the last switch

    def switched(self, on: bool, now_s: float) -> None:
        if self.on != on:
            self.on, self.since_s = on, now_s


@dataclass(slots=True)
class LoadStates:
    by_id: dict[str, Switching]

    def clone(self) -> LoadStates:
        return LoadStates({k: Switching(s.on, s.since_s, s.disagree, s.settle)
                           for k, s in self.by_id.items()})


def _states(mem: Memory) -> dict[str, Switching]:
    return mem.roles["load"].by_id


def held_on(load: FlexLoadDevice, sw: Switching) -> bool:
    """An unreachable load keeps its last state: its own revert timer is the fallback (it
    returns to its default, the configured safe_state). Commanding the safe state early
    would switch it, whenever a write got through, without the batteries knowing."""
    return load.safe_state == "on" if sw.on is None else sw.on


def part_at(device_id: str, power_kw: float) -> Part:
    """A switchable load drawing `power_kw`, which can be shed to nothing."""
    p = -max(power_kw, 0.0)
    return Part(device_id, "consumption", p, 0.0, p)


class FlexLoad(Role):
    name = "load"
    model = FlexLoadDevice
    block = "loads"
    writes = True
    decision_key = "load_on"
    setpoint_unit = "(1 on, 0 off)"

    def summary(self, d: FlexLoadDevice) -> str:
        return (f"{d.rated_kw:g} kW, {'critical' if d.critical else f'priority {d.priority}'}, min on/off "
                f"{d.min_on_s:g}/{d.min_off_s:g} s, safe {d.safe_state}")

    def new_state(self, devs, config) -> LoadStates:
        return LoadStates({d.id: Switching() for d in devs})

    def observe(self, devs, image, mem, now_s) -> None:
        """Track each load's on/off state and since when. The command counts until
        FEEDBACK_POLLS fresh polls read otherwise; then the device did not follow (or
        restarted into its default): its state counts and the command is re-sent."""
        states = _states(mem)
        for load in devs:
            if not image.good(load.id):
                continue
            on = image.value(load.id, "on") >= 0.5
            w, sw = mem.written[load.id], states[load.id]
            fresh = not image.devices[load.id].failed_polls
            if w.value is None or (w.value >= 0.5) == on:
                sw.disagree = 0
                sw.settle += int(fresh)
            else:
                sw.disagree += int(fresh)
                if sw.disagree < FEEDBACK_POLLS:
                    on = w.value >= 0.5
                else:
                    log.warning("load %s: commanded %s but reads %s; re-commanding", load.id,
                                "on" if w.value >= 0.5 else "off", "on" if on else "off")
                    w.value, sw.disagree, sw.settle = None, 0, SETTLE_POLLS
            sw.switched(on, now_s)

    def settling(self, devs, image, mem) -> bool:
        """Right after a switch one reading may predate it and another follow it (devices
        are polled concurrently, not at one instant): deciding on such a mix would back the
        battery off under a load about to draw, or shed a second load for power already
        gone. A load that cannot be read holds no one up."""
        states = _states(mem)
        return any(states[d.id].settle < SETTLE_POLLS for d in devs if image.good(d.id))

    def rows(self, devs, image, mem, now_s, config, out: np.ndarray) -> None:
        states = _states(mem)
        for i, d in enumerate(devs):
            sw = states[d.id]
            margin = 0.1 * d.rated_kw if d.restore_margin_kw is None else d.restore_margin_kw
            # A critical load is never due for shedding: its minimum on-time never ends.
            min_on = math.inf if d.critical else d.min_on_s
            if image.good(d.id) and sw.on is not None:
                out[i] = (image.value(d.id, "power_kw"), d.rated_kw, float(sw.on), d.priority,
                          now_s - sw.since_s, min_on, d.min_off_s, margin, 1.0)
            else:
                out[i] = (0.0, d.rated_kw, float(held_on(d, sw)), d.priority, 0.0,
                          min_on, d.min_off_s, margin, 0.0)
        assert out.shape[1] == layout.NL

    def setpoints(self, devs, image, mem, config, kernel_out) -> dict[str, float]:
        states = _states(mem)
        return {d.id: 1.0 if d.critical else float(kernel_out[i] > 0.5) if image.good(d.id)
                else float(held_on(d, states[d.id])) for i, d in enumerate(devs)}

    def island_setpoints(self, devs, image, mem, now_s, config, plan) -> dict[str, float]:
        return {d.id: float(plan.load_on.get(d.id, False)) for d in devs}

    def safe(self, devs, image, mem, now_s, config, final) -> dict[str, float]:
        """The configured safe state, once the load's minimum on/off time allows the change
        (until then it stays as it is; its relay's revert timer is the backstop)."""
        states, out = _states(mem), {}
        for d in devs:
            sw, safe = states[d.id], d.safe_state == "on"
            if sw.on is None or sw.on == safe:
                out[d.id] = float(safe)
                continue
            held = now_s - sw.since_s
            out[d.id] = float(safe if held >= (d.min_on_s if sw.on else d.min_off_s) else sw.on)
        return out

    def view(self, setpoints: dict[str, float]) -> dict[str, bool]:
        return {k: v >= 0.5 for k, v in setpoints.items()}

    def deadband(self, configured_kw: float, dev=None) -> float:
        return 0.0

    def write(self, driver, value: float, revert_s: int):
        return driver.write_on(value >= 0.5, revert_s)

    def write_phase(self, dev, value, mem) -> int:
        """Make room before adding load: a shed goes out before the batteries may back off
        by what it frees, a restore only after they have been told to cover it."""
        on = _states(mem)[dev.id].on
        if on is None or on == (value >= 0.5):
            return 1  # a re-write before the revert timer: no change
        return 2 if value >= 0.5 else 0

    def wrote(self, dev, value, mem, now_s) -> None:
        sw = _states(mem)[dev.id]
        if sw.on != (value >= 0.5):
            log.info("load %s switched %s", dev.id, "on" if value >= 0.5 else "off (shed)")
            sw.switched(value >= 0.5, now_s)
            sw.settle = 0

    def telemetry(self, devs, image) -> dict:
        on = total(image, devs, "on")
        # Switchable loads: what they draw, and how many run (the rest are shed).
        return {"flex_load_kw": rounded(total(image, devs, "power_kw")),
                "flex_loads_on": None if on is None else round(on)}

    def capability(self, d: FlexLoadDevice, image) -> Part | None:
        return part_at(d.id, image.value(d.id, "power_kw")) if image.good(d.id) else None

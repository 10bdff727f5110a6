"""HVAC (a chiller, heat pump or AHU group) as a comfort-bounded flexible load: its electric
power follows the plan, gives way to DR and import caps, and never leaves the comfort band
for them (the band always wins). It comes back from a shed ramped and staggered, so the
rebound stays below the peak the shed avoided. A zone sensor that cannot be trusted hands
the unit back to its own thermostat (the safe state): one stuck while the unit runs
(`observe`), or one reading what no zone can (`implausible`: the image marks it STALE)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import time
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from drivers.modbus.regmap import MapError, load_map
from edge.config.base import DeviceBase, PositiveKw, _Model
from edge.roles.role import Part, Role, Room, rounded, total
from edge.roles.zone import MIN_BAND_K, Rc, cop_at, in_period

log = logging.getLogger("edge.cycle")

THERMOSTAT = -1.0  # the setpoint that hands the unit back to its own thermostat
GUARD_K = 0.3  # the band's edge the controller keeps off, for one cycle's drift
LOOKAHEAD_H = 0.25  # a shed that would reach the band within this ends now
STUCK_DELTA_K = 1e-6  # a working sensor's reading jitters by more than this
ZONE_C = (-30.0, 60.0)  # a zone reading outside this is a broken sensor, not a room
OUTDOOR_C = (-50.0, 70.0)  # the condenser's sensor may sit in the sun
JUMP_K = 0.5  # a zone reading may move this much at once: the sensor's noise and resolution
OFFSET_STEP_K = 0.1  # offsets are written in these steps (the maps' register resolution)
OFFSET_DEADBAND_K = 0.15  # re-written once it moves 0.2 K: one step is the sensor's jitter


class ComfortPeriod(_Model):
    """The band in force from `start` to `end` (local time; end before start wraps)."""

    start: time = Field(description="local HH:MM")
    end: time = Field(description="local HH:MM; 00:00 is midnight")
    min_c: float = Field(ge=5, le=40, description="lowest zone temperature allowed, °C")
    max_c: float = Field(ge=5, le=40, description="highest zone temperature allowed, °C")


class ZoneModel(_Model):
    """The zone's RC model until the site's own history fits one (edge/plan/learn.py)."""

    r_k_per_kw: float = Field(2.0, gt=0, le=100,
                              description="thermal resistance to outdoors, K/kW")
    c_kwh_per_k: float = Field(10.0, gt=0, le=10000, description="thermal capacitance, kWh/K")
    gains_kw: float = Field(5.0, ge=0, le=10000,
                            description="mean sun + internal gains, kW thermal")
    identify: bool = Field(True, description="fit R, C and gains from the zone's own history "
                           "(least squares, from 2 days on) and plan with the fit when its "
                           "error is within max_rms_k")
    max_rms_k: float = Field(0.3, gt=0, le=5, description="largest one-step RMS error, K, a "
                             "fitted model may have to replace the configured one")
    refit_h: float = Field(24.0, ge=0.25, le=720, description="hours between two fits")


class HvacDevice(DeviceBase):
    """A chiller, heat pump or AHU group with a settable electric power and a zone
    temperature. Its register map says how it is driven: a capacity command in %, SG-Ready
    states, or a setpoint offset in K on its own thermostat (then the role writes offsets)."""

    role: Literal["hvac"]
    protocol: Literal["modbus-tcp", "modbus-rtu"] = "modbus-tcp"
    mode: Literal["cooling", "heating"] = "cooling"
    rated_kw: PositiveKw = Field(description="electric power at full capacity")
    min_kw: float = Field(0.0, ge=0, description="least electric power while running "
                          "(the compressor's minimum stage)")
    cop: float = Field(3.0, gt=0.5, le=10, description="rated COP at cop_ref_c outdoors")
    cop_ref_c: float = Field(35.0, ge=-30, le=50, description="outdoor °C the rated COP holds at")
    cop_slope_per_k: float = Field(0.02, ge=0, le=0.1, description="share of the COP lost per K "
                                   "of outdoor temperature against the HVAC")
    comfort: list[ComfortPeriod] = Field(default_factory=list, description="bands by time of "
                                         "day; outside them the setback band holds")
    setback_min_c: float = Field(16.0, ge=5, le=40, description="band outside comfort periods")
    setback_max_c: float = Field(30.0, ge=5, le=40, description="band outside comfort periods")
    model: ZoneModel = Field(default_factory=ZoneModel)
    min_on_s: float = Field(300.0, ge=0, le=86400, description="never stopped sooner after a start")
    min_off_s: float = Field(300.0, ge=0, le=86400, description="never started sooner after a stop")
    recovery_pct_per_min: float = Field(10.0, gt=0, le=100, description="after a cap, power "
                                        "comes back at most this share of rated_kw per minute")
    stagger_s: float = Field(120.0, ge=0, le=3600, description="after a cap, each unit starts "
                             "its recovery this long after the one before it")
    stuck_s: float = Field(1800.0, ge=60, le=86400, description="a zone reading unchanged this "
                           "long while the unit runs is a stuck sensor")
    revert_s: int = Field(60, ge=5, le=3600, description="the unit returns to its own "
                          "thermostat when not commanded for this long")
    max_offset_k: float = Field(3.0, gt=0, le=10, description="offset-controlled units (a "
                                "map with offset_k): the largest setpoint offset written, K, "
                                "either way")
    max_zone_rate_k_per_min: float = Field(1.0, gt=0, le=60, description="a zone reading "
                                           "moving faster than this (beyond 0.5 K of sensor "
                                           "noise) is a sensor fault: the unit turns STALE and "
                                           "runs on its own thermostat")

    @model_validator(mode="after")
    def _bands(self) -> HvacDevice:
        bands = [(f"comfort[{i}]", p.min_c, p.max_c) for i, p in enumerate(self.comfort)]
        bands.append(("setback_min_c/setback_max_c", self.setback_min_c, self.setback_max_c))
        for where, lo, hi in bands:
            if lo >= hi:
                raise ValueError(f"{where}: min {lo:g} °C is not below max {hi:g} °C; swap them")
            if hi - lo < MIN_BAND_K:
                raise ValueError(f"{where}: the band {lo:g}-{hi:g} °C is narrower than the "
                                 f"{MIN_BAND_K:g} K the controller can hold; widen it")
        # At its design point, flat out, where would the model's zone settle?
        m = self.model
        full = self.sign * self.cop * self.rated_kw
        settles = self.cop_ref_c + m.r_k_per_kw * (m.gains_kw - full)
        for where, lo, hi in bands[:-1]:
            if (settles > hi) if self.sign > 0 else (settles < lo):
                edge = f"{where}.{'max_c' if self.sign > 0 else 'min_c'}"
                raise ValueError(
                    f"{edge}: at {self.cop_ref_c:g} °C outdoors and rated_kw the zone settles "
                    f"at {settles:.1f} °C, outside the band the model can hold; widen the band, "
                    "or check rated_kw, cop and model")
        if self.min_kw > self.rated_kw:
            raise ValueError("min_kw must not exceed rated_kw")
        return self

    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "cooling" else -1.0

    @property
    def offset_control(self) -> bool:
        """Its map takes a setpoint offset (offset_k): the role writes K, not kW."""
        return self.map is not None and _has_point(self.map, "offset_k")

    @property
    def own(self) -> float:
        """The setpoint that leaves the unit on its own thermostat."""
        return 0.0 if self.offset_control else THERMOSTAT

    def rc(self) -> Rc:
        return Rc(self.model.r_k_per_kw, self.model.c_kwh_per_k, self.sign)

    def cop_at(self, t_out: float) -> float:
        return cop_at(self.cop, self.cop_ref_c, self.cop_slope_per_k, t_out, self.sign)

    def plan_band(self, local: time) -> tuple[float, float]:
        """The band the planner keeps: the cycle holds GUARD_K inside the comfort band, so
        a plan that rode its very edge would be overruled by the cycle at the peak."""
        lo, hi = self.band(local)
        return lo + GUARD_K, hi - GUARD_K

    def band(self, local: time) -> tuple[float, float]:
        m = local.hour * 60 + local.minute
        for p in self.comfort:
            if in_period(m, p.start, p.end):
                return p.min_c, p.max_c
        return self.setback_min_c, self.setback_max_c


def _has_point(map_name: str, key: str) -> bool:
    try:
        return load_map(map_name).point(key) is not None
    except MapError:  # reported where the maps are checked
        return False


def offset_k(d: HvacDevice, kw: float, z: float, t_out: float, own_c: float,
             band: tuple[float, float]) -> float:
    """The setpoint offset that has the unit's own thermostat aim where `kw` would take the
    zone within LOOKAHEAD_H (the model's step), kept inside the band the cycle holds and
    within max_offset_k. A shed asks for a warmer zone (cooling), so the thermostat backs
    off; re-aimed every cycle from the zone now, it follows the power the role decided,
    as closely as the unit's own control allows."""
    target = d.rc().step(z, LOOKAHEAD_H, t_out, d.model.gains_kw, d.cop_at(t_out) * kw)
    target = min(max(target, band[0] + GUARD_K), band[1] - GUARD_K)
    off = min(max(target - own_c, -d.max_offset_k), d.max_offset_k)
    return round(round(off / OFFSET_STEP_K) * OFFSET_STEP_K, 3) + 0.0


@dataclass(slots=True)
class Unit:
    """One unit as the controller last left it (sim s)."""

    kw: float | None = None  # last setpoint (THERMOSTAT: its own)
    on_since_s: float = -math.inf
    off_since_s: float = -math.inf
    capped_until_s: float = -math.inf  # when the last cap on it ended
    zone_c: float = math.nan
    zone_since_s: float = 0.0
    stuck: bool = False
    recovering: bool = False  # coming back from a cap, ramped


@dataclass(slots=True)
class HvacStates:
    by_id: dict[str, Unit] = field(default_factory=dict)

    def clone(self) -> HvacStates:
        return HvacStates({k: Unit(u.kw, u.on_since_s, u.off_since_s, u.capped_until_s,
                                   u.zone_c, u.zone_since_s, u.stuck,
                                   u.recovering)
                           for k, u in self.by_id.items()})


def _units(mem) -> dict[str, Unit]:
    return mem.roles["hvac"].by_id


def hold_kw(d: HvacDevice, zone_c: float, target_c: float, t_out: float, hours: float) -> float:
    """Electric kW that brings the zone from `zone_c` to `target_c` over `hours` (the plant
    at a steady level), within 0..rated."""
    rc, cop = d.rc(), d.cop_at(t_out)
    a = math.exp(-hours / rc.tau_h)
    eq = (target_c - a * zone_c) / (1 - a)  # the equilibrium that gets there in time
    q = (t_out + rc.r_k_per_kw * d.model.gains_kw - eq) / rc.r_k_per_kw * d.sign
    return min(max(q / cop, 0.0), d.rated_kw)


class Hvac(Role):
    name = "hvac"
    model = HvacDevice
    writes = True
    allocates = True
    decision_key = "hvac_kw"
    setpoint_unit = "kW"

    def setpoint_text(self, d: HvacDevice, value: float) -> str:
        """Each unit's setpoint in its own terms: a setpoint offset in K, or a power in kW,
        and the value that hands it to its own thermostat named as such."""
        if value == d.own:
            return "its own thermostat"
        return f"an offset of {value:+.1f} K" if d.offset_control else f"{value:.2f} kW"

    def summary(self, d: HvacDevice) -> str:
        return (f"{d.rated_kw:g} kW {d.mode}, COP {d.cop:g}, R {d.model.r_k_per_kw:g} K/kW, "
                f"C {d.model.c_kwh_per_k:g} kWh/K, {len(d.comfort)} comfort period(s)")

    def balance_term(self, d) -> str:
        return "load"

    def new_state(self, devs, config) -> HvacStates:
        return HvacStates({d.id: Unit() for d in devs})

    def observe(self, devs, image, mem, now_s) -> None:
        """A zone reading that does not move while the unit runs is a stuck sensor: nothing
        the plan or a DR event decides may rest on it."""
        for d in devs:
            u = _units(mem)[d.id]
            if not image.good(d.id):
                continue
            z, p = image.value(d.id, "zone_temp_c"), image.value(d.id, "power_kw")
            if not abs(z - u.zone_c) < STUCK_DELTA_K or p < 0.1 * d.rated_kw:
                u.zone_c, u.zone_since_s = z, now_s
            stuck = now_s - u.zone_since_s >= d.stuck_s
            if stuck and not u.stuck:
                log.warning("hvac %s: zone sensor reads %.2f °C unchanged for %.0f s while the "
                            "unit runs; it runs on its own thermostat until the reading moves",
                            d.id, z, now_s - u.zone_since_s)
            u.stuck = stuck

    def implausible(self, d: HvacDevice, values, last, dt_s) -> str | None:
        """Out of range, or a zone jump faster than `max_zone_rate_k_per_min` since the last
        plausible reading (the allowance grows with the time since: a sensor that really
        moved, e.g. a replaced one, is believed again after a while)."""
        for key, (lo, hi) in (("zone_temp_c", ZONE_C), ("outdoor_temp_c", OUTDOOR_C)):
            v = values.get(key)
            if v is not None and not lo <= v <= hi:
                return f"{key} reads {v:g} °C, outside {lo:g}..{hi:g} °C; check the sensor"
        z, before = values.get("zone_temp_c"), (last or {}).get("zone_temp_c")
        if z is not None and before is not None:
            jump, allowed = abs(z - before), JUMP_K + d.max_zone_rate_k_per_min * dt_s / 60
            if jump > allowed:
                return (f"zone_temp_c moved {jump:.1f} K in {dt_s:.0f} s, faster than "
                        f"{d.max_zone_rate_k_per_min:g} K/min a zone can; check the sensor")
        return None

    def trusted(self, d: HvacDevice, image, mem) -> bool:
        return image.good(d.id) and not _units(mem)[d.id].stuck

    def drawn_kw(self, devs, image, mem, now_s, hold: bool = True) -> float:
        out = 0.0
        for d in devs:
            if image.good(d.id):
                kw = image.value(d.id, "power_kw")
                last = _units(mem)[d.id].kw
                if hold and last is not None and last >= 0:
                    kw = max(kw, last)
                out += kw
        return out

    def allocate(self, devs, image, mem, now_s, config, room: Room):
        """Each unit's power: the plan's (or, without one, what holds the band's warm third),
        cut to the import room, raised again to whatever keeps the band within the next
        quarter hour, and ramped up after a cap."""
        units, out, added = _units(mem), {}, 0.0
        local = image.ts.astimezone(ZoneInfo(config.site.timezone)).time()
        left = room.import_kw
        order = sorted(devs, key=lambda d: d.id)
        for i, d in enumerate(order):
            u = units[d.id]
            if not self.trusted(d, image, mem):
                u.kw, out[d.id] = THERMOSTAT, d.own
                kw = max(image.value(d.id, "power_kw"), 0.0) if image.good(d.id) else 0.0
                left -= kw
                added += kw
                continue
            z, t_out = image.value(d.id, "zone_temp_c"), image.value(d.id, "outdoor_temp_c")
            lo, hi = d.band(local)
            edge = hi - GUARD_K if d.sign > 0 else lo + GUARD_K
            planned = (room.planned_kw or {}).get(d.id)
            want = planned if planned is not None else hold_kw(
                d, z, (2 * hi + lo) / 3 if d.sign > 0 else (hi + 2 * lo) / 3, t_out, 0.5)
            keep = hold_kw(d, z, edge, t_out, LOOKAHEAD_H)  # the band wins
            drawing = max(image.value(d.id, "power_kw"), 0.0)
            cap = max(left, 0.0)  # the room excludes what these units draw now
            capped = want > cap + 1e-6
            kw = max(min(want, cap), keep)
            if capped:
                u.capped_until_s, u.recovering = now_s, True
            elif u.recovering:
                # Units come back one after another, each at its ramp, so the rebound
                # stays below the peak the cap avoided.
                base = u.kw if u.kw is not None and u.kw >= 0 else drawing
                ramp = d.rated_kw * d.recovery_pct_per_min / 100 * image.dt_s / 60
                started = now_s - u.capped_until_s >= i * d.stagger_s
                back = base + (ramp if started else 0.0)
                if back >= kw:
                    u.recovering = False
                else:
                    kw = max(back, keep)
            kw = self._stages(d, u, kw, now_s)
            left -= kw
            added += kw
            out[d.id] = u.kw = kw
            if d.offset_control:
                out[d.id] = offset_k(d, kw, z, t_out, image.value(d.id, "thermostat_c"),
                                     (lo, hi))
        return out, added

    @staticmethod
    def _stages(d: HvacDevice, u: Unit, kw: float, now_s: float) -> float:
        """Minimum stage and minimum on/off times (the compressor's protection wins)."""
        on = u.kw is not None and u.kw > 0
        if kw > 0 and kw < d.min_kw:
            kw = d.min_kw if on or kw >= d.min_kw / 2 else 0.0
        if on and kw <= 0 and now_s - u.on_since_s < d.min_on_s:
            kw = max(d.min_kw, 1e-3)
        if not on and kw > 0 and now_s - u.off_since_s < d.min_off_s:
            kw = 0.0
        if kw > 0 and not on:
            u.on_since_s = now_s
        if kw <= 0 and on:
            u.off_since_s = now_s
        return min(kw, d.rated_kw)

    def safe(self, devs, image, mem, now_s, config, final) -> dict[str, float]:
        return {d.id: d.own for d in devs}

    def deadband(self, configured_kw: float, dev=None) -> float:
        return OFFSET_DEADBAND_K if dev is not None and dev.offset_control else configured_kw

    def write(self, driver, value: float, revert_s: int):
        if getattr(driver, "takes_offset", False):
            return driver.write_offset(value, revert_s)
        return driver.write_hvac(None if value < 0 else value, revert_s)

    def telemetry(self, devs, image) -> dict:
        zones = total(image, devs, "zone_temp_c")
        return {"hvac_kw": rounded(total(image, devs, "power_kw")),
                "zone_temp_c": None if zones is None or not devs else round(zones / len(devs), 2)}

    def capability(self, d: HvacDevice, image) -> Part | None:
        """What a shed gives and how long the band lets it last (`up_h`): the zone coasts
        towards its equilibrium without the plant; the flex message counts it only for
        windows shorter than that."""
        if not image.good(d.id):
            return None
        p = max(image.value(d.id, "power_kw"), 0.0)
        return Part(d.id, "thermal", -p, 0.0, -d.rated_kw, up_h=coast_h(d, image))


def coast_h(d: HvacDevice, image) -> float:
    """Hours until the zone, unconditioned, reaches the tightest band's edge (the hour of
    day is not known here, so no band is assumed looser than the tightest)."""
    z, t_out = image.value(d.id, "zone_temp_c"), image.value(d.id, "outdoor_temp_c")
    his = [p.max_c for p in d.comfort] + [d.setback_max_c]
    los = [p.min_c for p in d.comfort] + [d.setback_min_c]
    limit = min(his) - GUARD_K if d.sign > 0 else max(los) + GUARD_K
    return d.rc().hours_to(z, limit, t_out, d.model.gains_kw)

"""The DC bus as the controller sees it (docs/domain.md §1): its voltage from the converters'
readings, an alarm when it stays outside nominal ± band, and (with `restore_v`) the
secondary control that shifts the converters' droop reference so the bus sits at nominal.

Only fresh readings count: a missed poll bridged by the last value repeats an old voltage
and a stale converter tells nothing, so neither raises nor clears an alarm. An excursion is
raised after `alarm_after_cycles` consecutive fresh readings out of band (one WARNING per
excursion, however long it lasts) and cleared by the first fresh reading back in band.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from drivers.base import Quality
from edge.image.image import ProcessImage

if TYPE_CHECKING:
    from edge.config import Config
    from edge.roles.dcdc import DcConverterDevice

log = logging.getLogger(__name__)

ALARM = "dc_bus_out_of_band"


def band_v(conv: DcConverterDevice) -> tuple[float, float]:
    half = conv.bus_nominal_v * conv.band_pct / 100
    return conv.bus_nominal_v - half, conv.bus_nominal_v + half


def _fresh(image: ProcessImage, conv_id: str) -> dict[str, float] | None:
    """The converter's values read in this cycle's poll, or None."""
    state = image.devices[conv_id]
    if state.quality is not Quality.GOOD or state.failed_polls or state.reading is None:
        return None
    return state.reading.values


def bus_v(config: Config, image: ProcessImage) -> float | None:
    """The DC bus voltage: the mean over the GOOD converters (in parallel they measure one
    bus, so one converter's reading stands for it); None without a GOOD converter."""
    values = [image.value(d.id, "bus_v") for d in config.devices
              if d.role == "dcdc" and image.good(d.id)]
    return sum(values) / len(values) if values else None


@dataclass(slots=True)
class _Excursion:
    cycles: int = 0  # consecutive fresh readings out of band
    raised: bool = False
    worst_v: float = math.nan


class DcBusMonitor:
    """Called once per cycle with the new image; returns the alarms standing after it."""

    def __init__(self, config: Config) -> None:
        self.converters = [d for d in config.devices if d.role == "dcdc"]
        self._state = {d.id: _Excursion() for d in self.converters}
        self._nameplate_seen: set[str] = set()

    def clone(self) -> DcBusMonitor:
        other = copy.copy(self)
        other._state = {k: replace(e) for k, e in self._state.items()}
        other._nameplate_seen = set(self._nameplate_seen)
        return other

    def alarms(self) -> tuple[str, ...]:
        return tuple(f"{ALARM}:{c.id}" for c in self.converters if self._state[c.id].raised)

    def observe(self, image: ProcessImage) -> tuple[str, ...]:
        for conv in self.converters:
            values = _fresh(image, conv.id)
            if values is None:
                continue
            if conv.id not in self._nameplate_seen:
                self._check_nominal(conv, values.get("nominal_v"))
            v = values.get("bus_v")
            if v is not None and math.isfinite(v):
                self._see(conv, v)
        return self.alarms()

    def _check_nominal(self, conv: DcConverterDevice, device_v: float | None) -> None:
        """Say once when the converter's own nameplate names another bus: the band (and the
        alarm) would be about the wrong voltage."""
        self._nameplate_seen.add(conv.id)
        if device_v and abs(device_v - conv.bus_nominal_v) > 0.01 * conv.bus_nominal_v:
            log.warning("device %s: config bus_nominal_v %g V but the converter reports a %g V "
                        "bus; the alarm band follows the config - fix bus_nominal_v",
                        conv.id, conv.bus_nominal_v, device_v)

    def _see(self, conv: DcConverterDevice, v: float) -> None:
        e = self._state[conv.id]
        lo, hi = band_v(conv)
        if lo <= v <= hi:
            if e.raised:
                log.info("DC bus at %s back in band: %.1f V (worst %.1f V)", conv.id, v, e.worst_v)
            e.cycles, e.raised, e.worst_v = 0, False, math.nan
            return
        e.cycles += 1
        nominal = conv.bus_nominal_v
        if math.isnan(e.worst_v) or abs(v - nominal) > abs(e.worst_v - nominal):
            e.worst_v = v
        if not e.raised and e.cycles >= conv.alarm_after_cycles:
            e.raised = True
            log.warning("DC bus at %s out of band: %.1f V outside %.1f-%.1f V (%g V ± %g %%) "
                        "for %d cycles", conv.id, v, lo, hi, nominal, conv.band_pct, e.cycles)


RESTORE_GAIN = 0.5  # share of the bus error removed per cycle: the droop is algebraic, so
# the bus follows v_ref within a poll; with that poll's delay the loop still settles (~5 %
# overshoot)


class DcBusRestore:
    """Secondary control of the droop (docs/domain.md §1: shift the converters' reference rather
    than fight their droop with power setpoints). The droop lets the bus sag by slope × load;
    each cycle moves one common shift of v_ref (every converter on the bus restores, so
    parallel converters keep sharing load) by half the bus error, from the reference the
    converters report (a refused write or a revert timer is not integrated on), within
    nominal ± max_shift_pct, the converters' own v_ref range and v_ref_ramp_v_per_s.

    - Out of band the bus is not sagging but faulty or overloaded: the shift holds (chasing
      a fault would hide it, dropping the shift would deepen an undervoltage); the alarm
      stands.
    - A missed poll (a bridged reading) holds the shift; a STALE converter has gone to its
      own reference, so the others ramp back to nominal rather than carry its share.
    - The safe state ramps the shift to nominal; on the way down (`nominal`) the converters
      get their nominal reference at once, as their own revert timers would."""

    def __init__(self, config: Config) -> None:
        self.converters = [d for d in config.devices if d.role == "dcdc" and d.restore_v]
        self.shift_v = 0.0

    def clone(self) -> DcBusRestore:
        return copy.copy(self)  # its state is one float; the converters are config

    def nominal(self) -> dict[str, float]:
        self.shift_v = 0.0
        return {c.id: c.bus_nominal_v for c in self.converters}

    def relax(self, dt_s: float) -> dict[str, float]:
        """One safe-state step: the shift ramps towards 0."""
        if not self.converters:
            return {}
        self.shift_v = self._ramp(0.0, dt_s)
        return self._refs()

    def step(self, image: ProcessImage) -> dict[str, float]:
        if not self.converters:
            return {}
        states = [image.devices[c.id] for c in self.converters]
        if any(st.quality is not Quality.GOOD for st in states):
            return self.relax(image.dt_s)
        fresh = [_fresh(image, c.id) for c in self.converters]
        if any(f is None for f in fresh):
            return self._refs()  # a missed poll: hold
        volts = [f.get("bus_v") for f in fresh]
        if all(v is not None and math.isfinite(v) for v in volts):
            self.shift_v = self._next(sum(volts) / len(volts), fresh, image)
        return self._refs()

    def _refs(self) -> dict[str, float]:
        return {c.id: c.bus_nominal_v + self.shift_v for c in self.converters}

    def _ramp(self, target: float, dt_s: float) -> float:
        step = min(c.v_ref_ramp_v_per_s for c in self.converters) * max(dt_s, 0.0)
        return min(max(target, self.shift_v - step), self.shift_v + step)

    def _next(self, bus: float, fresh: list[dict[str, float]], image: ProcessImage) -> float:
        first = self.converters[0]
        nominal = first.bus_nominal_v
        lo, hi = band_v(first)
        if not lo <= bus <= hi:
            return self.shift_v
        held = [f.get("v_ref") for f in fresh]
        if all(v is not None and math.isfinite(v) for v in held):
            self.shift_v = sum(held) / len(held) - nominal  # what the converters really hold
        target = self.shift_v + RESTORE_GAIN * (nominal - bus)
        for c, values in zip(self.converters, fresh, strict=True):
            most = c.bus_nominal_v * c.max_shift_pct / 100
            target = min(max(target, -most), most)
            stale = image.devices[c.id].stale_keys
            v_min, v_max = values.get("v_ref_min_v"), values.get("v_ref_max_v")
            if v_min is not None and "v_ref_min_v" not in stale:
                target = max(target, v_min - c.bus_nominal_v)
            if v_max is not None and "v_ref_max_v" not in stale:
                target = min(target, v_max - c.bus_nominal_v)
        return self._ramp(target, image.dt_s)

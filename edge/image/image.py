"""The process image: every device value copied once per cycle, with its age and quality.
Control reads only this snapshot, never a device, so one decision sees one moment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from drivers.base import Quality, Reading


class StaleValue(LookupError):
    """A control function asked for a value that is not GOOD; it must not act on it."""


@dataclass(frozen=True, slots=True)
class DeviceState:
    reading: Reading | None
    quality: Quality
    failed_polls: int  # consecutive
    # Slow-class values (nameplates, energy counters, rotated DL/T 645 reads) whose own read
    # time is too old: STALE even while the device's fast values are fresh.
    stale_keys: frozenset[str] = frozenset()

    def value_quality(self, key: str) -> Quality:
        if self.quality is not Quality.GOOD:
            return self.quality
        return Quality.STALE if key in self.stale_keys else Quality.GOOD


@dataclass(frozen=True, slots=True)
class ProcessImage:
    ts: datetime  # cycle time (UTC; simulated under HIL)
    dt_s: float  # (simulated) seconds since the previous cycle
    devices: dict[str, DeviceState]

    def good(self, device_id: str) -> bool:
        return self.devices[device_id].quality is Quality.GOOD

    def value(self, device_id: str, key: str) -> float:
        """A GOOD value, or StaleValue: the device is not GOOD, or this (slow) value was
        last read too long ago."""
        state = self.devices[device_id]
        q = state.value_quality(key)
        if q is not Quality.GOOD or state.reading is None:
            raise StaleValue(f"{device_id}.{key} is {q.value}")
        return state.reading.values[key]

    def last(self, device_id: str, key: str) -> float | None:
        """Last known value whatever its quality: for reporting, never for control."""
        reading = self.devices[device_id].reading
        return None if reading is None else reading.values.get(key)

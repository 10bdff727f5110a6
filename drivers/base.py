"""What the control code may know about a device: small role interfaces and timestamped,
quality-tagged readings. Control never imports a vendor or protocol module."""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class Quality(enum.Enum):
    GOOD = "good"
    STALE = "stale"  # last good value is too old to act on
    INVALID = "invalid"  # never read, or the device answered nonsense


@dataclass(frozen=True, slots=True)
class Reading:
    """One poll of one device. `values` are in kW, kWh, % (sign conventions of docs/domain.md §2)."""

    device_id: str
    values: dict[str, float]
    monotonic: float = field(default_factory=time.monotonic)  # wall clock, for staleness
    # When each slow-class value was last read (monotonic); a key absent here was read at
    # `monotonic`. Slow points (nameplates, energy counters) are polled less often and
    # carried forward with their own time, so their age is never mistaken for fresh.
    stamps: dict[str, float] = field(default_factory=dict)

    def age_s(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.monotonic

    def value_age_s(self, key: str, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.stamps.get(key, self.monotonic)


class DeviceError(Exception):
    """A device did not answer, answered with an exception, or broke its contract."""


_urgent: ContextVar[bool] = ContextVar("urgent", default=False)


@contextlib.contextmanager
def urgent() -> Iterator[None]:
    """Requests made inside (and in tasks started inside) go out even while their unit or
    connection backs off: the safe state written on the way down must not be refused for a
    silence a moment ago, often only the request the stop itself cancelled."""
    token = _urgent.set(True)
    try:
        yield
    finally:
        _urgent.reset(token)


def is_urgent() -> bool:
    return _urgent.get()


@runtime_checkable
class Device(Protocol):
    """What the poller needs of every driver. A driver may also offer `send_deferred()`:
    writes its poll started but left to the end of the round (SunSpec heartbeats), so they
    never delay the replies of slower devices; the poller calls it once all polls are in.
    A controllable one may offer `refused_write() -> str | None`: why writes it sent
    without a read-back were not taken, as its polls since found (drivers.modbus.pending);
    the write phase counts them as failed writes (edge/setpoints/writer.py)."""

    id: str

    async def connect(self) -> None: ...

    async def poll(self) -> Reading: ...

    async def close(self) -> None: ...

    def describe(self) -> dict:
        """What the device told us about itself: protocol, manufacturer, models ..."""
        ...


@runtime_checkable
class Meter(Device, Protocol):
    """values: power_kw (+import for a grid meter), import_kwh, export_kwh."""


@runtime_checkable
class Battery(Device, Protocol):
    """values: power_kw (+discharge/-charge), soc_pct."""

    async def write_power(self, kw: float, revert_s: int) -> None: ...


@runtime_checkable
class PvInverter(Device, Protocol):
    """values: power_kw (>= 0), limit_kw (active output limit, rated when none)."""

    async def write_limit(self, kw: float, revert_s: int) -> None: ...


@runtime_checkable
class FlexLoad(Device, Protocol):
    """values: power_kw (>= 0), on (1.0 runs / 0.0 shed). `write_on` switches it; the device
    returns to its own default when not re-written within `revert_s`."""

    async def write_on(self, on: bool, revert_s: int) -> None: ...


@runtime_checkable
class Hvac(Device, Protocol):
    """values: power_kw (>= 0), rated_kw, zone_temp_c, outdoor_temp_c. `write_hvac(kw)` sets
    its electric power (None: back to its own thermostat, where it also returns when not
    re-written within `revert_s`)."""

    async def write_hvac(self, kw: float | None, revert_s: int) -> None: ...


@runtime_checkable
class ThermalStorage(Device, Protocol):
    """values: power_kw (+ charging, − discharging), tank_temp_c. `write_power` sets it; the
    tank goes idle when not re-written within `revert_s`."""

    async def write_power(self, kw: float, revert_s: int) -> None: ...


@runtime_checkable
class DcConverter(Device, Protocol):
    """values: bus_v (V, the DC bus it feeds), power_kw (+ into the bus, − out of it), v_ref
    (V, its droop reference: bus_v = v_ref − slope × power). `write_v_ref` shifts that
    reference rather than fighting the droop with power setpoints (docs/domain.md §1); the
    converter returns to its own default when not re-written within `revert_s`. A converter
    whose reference is read-only raises DeviceError there."""

    async def write_v_ref(self, v: float, revert_s: int) -> None: ...


@runtime_checkable
class Breaker(Device, Protocol):
    """A PCC breaker with a synchronism check. values: closed (1.0 / 0.0, its auxiliary
    contact), grid_v, grid_hz (grid side), bus_v, bus_hz (site side), phase_deg (grid
    minus site). `write_switch` commands it; it stays where it was put (no revert)."""

    async def write_switch(self, close: bool) -> None: ...


@runtime_checkable
class EvCharger(Device, Protocol):
    """An EV charger (OCPP). values: power_kw (>= 0, what the car draws), current_a (the
    highest phase current), l1_a, l2_a, l3_a, energy_kwh (the charger's register), soc_pct
    (NaN unless the car tells), connected (1.0 a car is plugged in), charging (1.0 a
    transaction runs), session_kwh (energy of the running transaction, 0 without one),
    session_start_s (its start, Unix s; NaN without one), session (a number that changes
    with each new transaction, 0 without one), offered_a (the limit in force as the charger
    accepted it; NaN before the first), meter_lag_s (how long after that limit came into
    force the last meter value was taken; negative when it predates it, NaN without
    either), status (index into CHARGER_STATUS).

    `write_current` never waits for the charger: it hands the latest limit (A per phase,
    per connector; 0 pauses) to the charger's own writer, which sends it when the deadband
    and minimum interval allow and refreshes it before `revert_s` runs out, after which the
    charger falls back to its fail-safe current."""

    async def write_current(self, amps: float, revert_s: int) -> None: ...


# OCPP connector states, 1.6 names (2.0.1's map onto them); `status` is the index.
CHARGER_STATUS = ("Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV",
                  "Finishing", "Reserved", "Unavailable", "Faulted", "Offline")

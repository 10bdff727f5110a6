"""What the site can deliver: how far its devices can move the PCC power, each kind of device
by one function, so the OpenADR opt decision, the MQTT DR assessment, the dispatch reach
check, the flex message and live M&V all count the same kW and kWh.

A device's push is its effect on the PCC power: + lowers it (battery discharge, PV output),
− raises it (battery charge, a load's draw). Up means a lower PCC power (import less /
export more), down a higher one, as in the flex message. Batteries move both ways within
their ratings and the energy in their SoC window; PV that produces can be curtailed (down);
a switchable load (role `load`) that draws can be shed (up): the cycle sheds loads and
curtails PV to hold a grid bound, so both count for DR; a dispatch target is chased by the
batteries alone. A device that is not GOOD counts for nothing: the site must not promise
power it cannot see.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge.config import BatteryDevice, Config, FlexLoadDevice, PvDevice
from edge.image.image import ProcessImage

MIN_HOURS = 1 / 60  # a shorter window would let a battery's energy count as unlimited power


@dataclass(frozen=True, slots=True)
class Part:
    """One device's reach on the PCC power (kW, kWh; push signs as in the module doc)."""

    id: str
    role: str
    push_kw: float  # now
    max_kw: float  # the most push it can reach
    min_kw: float  # the least
    up_kwh: float = math.inf  # energy behind a push above 0 (a battery above soc_min)
    down_kwh: float = math.inf  # room behind a push below 0 (a battery below soc_max)
    soc_pct: float = math.nan

    @property
    def stores(self) -> bool:
        """Its energy runs out (a battery), unlike shedding a load or curtailing PV."""
        return math.isfinite(self.up_kwh) or math.isfinite(self.down_kwh)

    def up_kw(self, hours: float) -> float:
        """How far it can lower the PCC power from now and hold that for `hours`."""
        return max(min(self.max_kw, self.up_kwh / hours) - self.push_kw, 0.0)

    def down_kw(self, hours: float) -> float:
        """How far it can raise the PCC power from now and hold that for `hours`."""
        return max(self.push_kw - max(self.min_kw, -self.down_kwh / hours), 0.0)

    def energy(self, direction: str, hours: float) -> float:
        """The kWh behind a move up or down: a battery's whole store, else what holding the
        move for `hours` gives."""
        if direction == "up":
            return self.up_kwh if math.isfinite(self.up_kwh) else self.up_kw(hours) * hours
        return self.down_kwh if math.isfinite(self.down_kwh) else self.down_kw(hours) * hours


def battery_at(b: BatteryDevice, power_kw: float, soc_pct: float) -> Part:
    """A battery at this power (+ discharge) and SoC; its ratings count only while its SoC
    window leaves energy (resp. room) for them."""
    out, room = b.deliverable_kwh(soc_pct), b.absorbable_kwh(soc_pct)
    return Part(b.id, "battery", power_kw, b.max_discharge_kw if out > 0 else 0.0,
                -b.max_charge_kw if room > 0 else 0.0, out, room, soc_pct)


def battery(b: BatteryDevice, image: ProcessImage) -> Part | None:
    if not image.good(b.id):
        return None
    return battery_at(b, image.value(b.id, "power_kw"), image.value(b.id, "soc_pct"))


def pv_at(device_id: str, power_kw: float) -> Part:
    """PV producing `power_kw`, which can be curtailed to nothing."""
    p = max(power_kw, 0.0)
    return Part(device_id, "pv", p, p, 0.0)


def pv(d: PvDevice, image: ProcessImage) -> Part | None:
    return pv_at(d.id, image.value(d.id, "power_kw")) if image.good(d.id) else None


def load_at(device_id: str, power_kw: float) -> Part:
    """A switchable load drawing `power_kw`, which can be shed to nothing."""
    p = -max(power_kw, 0.0)
    return Part(device_id, "load", p, 0.0, p)


def load(d: FlexLoadDevice, image: ProcessImage) -> Part | None:
    return load_at(d.id, image.value(d.id, "power_kw")) if image.good(d.id) else None


ROLES: dict[str, Callable[..., Part | None]] = {"battery": battery, "load": load, "pv": pv}


@dataclass(frozen=True, slots=True)
class Capability:
    """What the site can add to a PCC-power change from now, held over `hours`."""

    hours: float
    up_kw: float
    down_kw: float
    up_kwh: float
    down_kwh: float
    parts: tuple[Part, ...]
    unreadable: tuple[str, ...] = ()

    def of(self, role: str) -> list[Part]:
        return [p for p in self.parts if p.role == role]

    @property
    def detail(self) -> str:
        """Each device's part in words (for opt decisions and logs)."""
        words = [f"{i} not readable" for i in self.unreadable]
        for p in self.of("battery"):
            words.append(f"{p.id} SoC {p.soc_pct:.0f}% -{p.up_kw(self.hours):.1f}/"
                         f"+{p.down_kw(self.hours):.1f} kW")
        for role, what in (("pv", "curtailable PV"), ("load", "switchable loads")):
            kw = sum(p.up_kw(self.hours) + p.down_kw(self.hours) for p in self.of(role))
            if kw:
                words.append(f"{what} {kw:.1f} kW")
        return ", ".join(words) or "no controllable device"


def total(parts: Iterable[Part], hours: float, unreadable: Iterable[str] = ()) -> Capability:
    parts, hours = tuple(parts), max(hours, MIN_HOURS)
    return Capability(hours, sum(p.up_kw(hours) for p in parts),
                      sum(p.down_kw(hours) for p in parts),
                      sum(p.energy("up", hours) for p in parts),
                      sum(p.energy("down", hours) for p in parts), parts, tuple(unreadable))


def site_capability(config: Config, image: ProcessImage, hours: float) -> Capability:
    """Every battery, PV inverter and switchable load of the site, from the process image."""
    parts, unreadable = [], []
    for d in config.devices:
        of_role = ROLES.get(d.role)
        if of_role is None:
            continue
        part = of_role(d, image)
        if part is not None:
            parts.append(part)
        elif d.role == "battery":
            unreadable.append(d.id)
    return total(parts, hours, unreadable)

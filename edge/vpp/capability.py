"""What the site can deliver: how far its devices can move the PCC power, summed from what
each device's role says (`Role.capability`, edge/roles/), so the OpenADR opt decision, the
MQTT DR assessment, the dispatch reach check, the flex message and live M&V all count the
same kW and kWh.

Up means a lower PCC power (import less / export more), down a higher one, as in the flex
message. Batteries move both ways within their ratings and the energy in their SoC window;
PV that produces can be curtailed (down); a switchable load that draws can be shed (up):
the cycle sheds loads and curtails PV to hold a grid bound, so both count for DR; a
dispatch target is chased by the batteries alone. An EV charger can be paused (up) and,
with a car, raised to its maximum (down); a device with energy due by a deadline (an EV
session, the decision's `demands`) counts its pause only for windows within its slack:
hours to the deadline minus the hours its energy takes at full power. A device that is not
GOOD counts for nothing: the site must not promise power it cannot see.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from edge.config import Config
from edge.image.image import ProcessImage
from edge.roles import Part, role_of
from edge.roles.role import Demand

MIN_HOURS = 1 / 60  # a shorter window would let a battery's energy count as unlimited power


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

    def of(self, kind: str) -> list[Part]:
        """The parts of one kind: storage, generation, consumption or thermal (Part.kind)."""
        return [p for p in self.parts if p.kind == kind]

    @property
    def detail(self) -> str:
        """Each device's part in words (for opt decisions and logs)."""
        words = [f"{i} not readable" for i in self.unreadable]
        for p in self.of("storage"):
            words.append(f"{p.id} SoC {p.soc_pct:.0f}% -{p.up_kw(self.hours):.1f}/"
                         f"+{p.down_kw(self.hours):.1f} kW")
        for kind, what in (("generation", "curtailable PV"), ("consumption", "switchable loads"),
                           ("thermal", "HVAC and thermal storage")):
            kw = sum(p.up_kw(self.hours) + p.down_kw(self.hours) for p in self.of(kind))
            if kw:
                words.append(f"{what} {kw:.1f} kW")
        return ", ".join(words) or "no controllable device"


def total(parts: Iterable[Part], hours: float, unreadable: Iterable[str] = ()) -> Capability:
    parts, hours = tuple(parts), max(hours, MIN_HOURS)
    return Capability(hours, sum(p.up_kw(hours) for p in parts),
                      sum(p.down_kw(hours) for p in parts),
                      sum(p.energy("up", hours) for p in parts),
                      sum(p.energy("down", hours) for p in parts), parts, tuple(unreadable))


def slack_h(demands: Iterable[Demand], now: datetime) -> dict[str, float]:
    """Per device with energy due: how long it may draw nothing and still deliver it by
    its deadline at full power (the least over its demands; negative: already late)."""
    out: dict[str, float] = {}
    for d in demands:
        left_h = (d.deadline - now).total_seconds() / 3600
        s = left_h - d.energy_kwh / d.max_kw if d.max_kw > 0 else -math.inf
        out[d.id] = min(out.get(d.id, math.inf), s)
    return out


def site_capability(config: Config, image: ProcessImage, hours: float,
                    demands: Iterable[Demand] = ()) -> Capability:
    """What every device of the site can add (each role says, edge/roles/), from the image;
    `demands` (the last decision's) bound how long a device with energy due may pause."""
    slack = slack_h(demands, image.ts)
    parts, unreadable = [], []
    for d in config.devices:
        role = role_of(d)
        part = role.capability(d, image)
        if part is not None:
            if d.id in slack:
                part = replace(part, up_h=min(part.up_h, slack[d.id]))
            parts.append(part)
        elif role.stores_energy:
            unreadable.append(d.id)
    return total(parts, hours, unreadable)

"""EV charging sessions as the controller keeps them: when the car came, when it leaves and
how much energy it still needs, from the car's SoC when it tells, a command when one says,
else the charger's defaults. The planner schedules these energies against their
departures; the allocation charges a car flat out once its slack is gone."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from edge.image.image import ProcessImage

if TYPE_CHECKING:
    from edge.roles.evcharger import EvChargerDevice

log = logging.getLogger("edge.cycle")


@dataclass(frozen=True, slots=True)
class EvRequest:
    """What a command said about a charger's session: its departure and/or the energy it
    still needs from the moment of the command. `session` 0 means the next session that
    starts after `at`."""

    device_id: str
    at: datetime
    session: float = 0.0
    departure: datetime | None = None
    energy_kwh: float | None = None


@dataclass(slots=True)
class Session:
    number: float  # the driver's session number
    arrived: datetime
    departure: datetime
    needed_kwh: float  # the session's energy in all (delivered + still needed)
    source: str  # where needed_kwh came from: "soc", "default" or "command"
    phases: int = 0  # the phases the car has drawn on (0: not seen charging yet)

    def remaining_kwh(self, delivered_kwh: float) -> float:
        return max(self.needed_kwh - delivered_kwh, 0.0)

    def hours_left(self, now: datetime) -> float:
        return max((self.departure - now).total_seconds() / 3600, 0.0)


@dataclass(slots=True)
class Charging:
    """One charger's state between cycles: its session, whether it runs (≥ its minimum
    current) or is paused, and since when the economic room has stood for or against it."""

    session: Session | None = None
    running: bool = False
    since_s: float = -math.inf
    want_since_s: float | None = None  # the room for its minimum has been there since
    short_since_s: float | None = None  # the economic room has been short since
    request_at: datetime | None = None  # the last command applied: each applies once
    car_a: float | None = None  # what the car has shown it takes (None: it follows its offer)
    changed_at_s: float = -math.inf  # its limit last changed (by more than the deadband)
    cut_from_a: float = 0.0  # the limit before that change, when it was a cut
    limit_a: float | None = None  # the last limit decided for it (kept while unreachable)

    def clone(self) -> Charging:
        s = None if self.session is None else replace(self.session)
        return Charging(s, self.running, self.since_s, self.want_since_s, self.short_since_s,
                        self.request_at, self.car_a, self.changed_at_s, self.cut_from_a,
                        self.limit_a)


@dataclass(slots=True)
class EvStates:
    by_id: dict[str, Charging]
    tz: ZoneInfo  # the site's: default departures are local times
    # The site without the cars as it stood, settled, before the last change of their limits,
    # and until when it is kept: while cars follow a change, the estimate of the site from
    # their limits is off by their ramps, and the larger of the two is the safe one.
    site_kw: float = math.nan
    site_until_s: float = -math.inf

    def clone(self) -> EvStates:
        return EvStates({k: c.clone() for k, c in self.by_id.items()}, self.tz, self.site_kw,
                        self.site_until_s)


def default_departure(dev: EvChargerDevice, arrived: datetime, tz: ZoneInfo) -> datetime:
    """The charger's configured local departure time next after the arrival, else the
    arrival plus the default dwell."""
    if dev.default_departure is None:
        return arrived + timedelta(hours=dev.default_dwell_h)
    local = arrived.astimezone(tz)
    at = local.replace(hour=dev.default_departure.hour, minute=dev.default_departure.minute,
                       second=0, microsecond=0)
    if at <= local:
        at += timedelta(days=1)
    return at.astimezone(arrived.tzinfo)


def needed_from_car(dev: EvChargerDevice, image: ProcessImage) -> float | None:
    """The session's energy in all from the car's SoC, when it reports one."""
    soc = image.value(dev.id, "soc_pct")
    if not math.isfinite(soc):
        return None
    delivered = image.value(dev.id, "session_kwh")
    return delivered + max(dev.target_soc_pct - soc, 0.0) / 100 * dev.car_capacity_kwh


def observe_session(dev: EvChargerDevice, image: ProcessImage, state: Charging,
                    tz: ZoneInfo) -> None:
    """Start, follow and end the session from the charger's reading. A restart of the
    daemon mid-session starts it anew from what the charger reports (its energy so far
    counts as delivered)."""
    number = image.value(dev.id, "session")
    if number == 0 or image.value(dev.id, "connected") < 0.5:
        if state.session is not None:
            log.info("charger %s: session ended", dev.id)
        state.session = None
        return
    s = state.session
    if s is None or s.number != number:
        arrived = _started(image, dev.id)
        state.session = s = Session(number, arrived, default_departure(dev, arrived, tz),
                                    dev.default_energy_kwh, "default")
        log.info("charger %s: session started, leaves %s", dev.id, s.departure.isoformat())
    if s.source != "command" and (needed := needed_from_car(dev, image)) is not None:
        s.needed_kwh, s.source = needed, "soc"


def apply_request(c: Charging, req: EvRequest, delivered_kwh: float) -> None:
    """A command's departure and energy win over the car's and the defaults, for the one
    session it names (or the first to start after it)."""
    s = c.session
    if s is None or c.request_at == req.at:
        return
    if req.session not in (0.0, s.number) or (req.session == 0.0 and s.arrived < req.at):
        return
    c.request_at = req.at
    if req.departure is not None:
        s.departure = req.departure
    if req.energy_kwh is not None:
        s.needed_kwh, s.source = delivered_kwh + req.energy_kwh, "command"


def _started(image: ProcessImage, dev_id: str) -> datetime:
    start = image.value(dev_id, "session_start_s")
    if math.isfinite(start) and start > 0:
        return datetime.fromtimestamp(start, image.ts.tzinfo)
    return image.ts

"""The grid state machine of a microgrid: one handler per state, each reading one
observation and returning the next state with the reason (docs/island-mode.md).

    on_grid --grid out of band for detect_s, or the breaker opened or tripped--> islanding
    islanding --breaker confirmed open, batteries forming, bus live--> island
               (a PCS that transferred on its own already forms: island at once)
    island --grid in band for return_s--> resync
    resync --V, f and phase within the window: close; closed confirmed--> on_grid
    island/islanding --the bus died or no battery can supply--> black_start
    black_start --a battery re-energised the bus--> island
    black_start --grid back and the bus dead: close onto the dead bus--> on_grid

The handlers set what the cycle must command (breaker position, grid-forming); they
never close the breaker onto a live bus out of sync: a close is only given while the
synchronism check holds (or the bus is dead), and withdrawn the moment it does not, until
the breaker confirms it closed. No I/O and no clock: the observation brings the time, and a
handler that must look again before the next regular cycle says when (`next_look_s`): the
instant `detect_s` runs out, and every `transfer_poll_s` during the changeover.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from edge.island.params import IslandParams
from edge.island.report import IslandEvent

log = logging.getLogger("edge.island")

ON_GRID, ISLANDING, ISLAND, RESYNC, BLACK_START = (
    "on_grid", "islanding", "island", "resync", "black_start")
STATES = (ON_GRID, ISLANDING, ISLAND, RESYNC, BLACK_START)


@dataclass(frozen=True, slots=True)
class Observation:
    """One cycle's view of the PCC and the island. Voltages line to neutral."""

    t_s: float
    readable: bool  # the breaker answered this cycle
    closed: bool  # its position feedback
    tripped: bool
    grid_v: float
    grid_hz: float
    bus_v: float
    bus_hz: float
    phase_deg: float
    forming: bool  # every grid-forming battery reports that it forms the grid
    supply: bool  # a grid-forming battery has energy above its minimum
    can_start: bool  # ... and enough of it to restart an island
    soc_pct: float = math.nan
    critical_kw: float = 0.0  # what the critical loads need
    critical_served_kw: float = 0.0  # ... and what of it is supplied
    shed_kw: float = 0.0  # non-critical loads switched off by the island
    flex_on: bool = False  # a non-critical load still reads on (no island may form yet)
    any_on: bool = False  # any load still reads on (no black start yet)
    batteries_read: bool = True  # every grid-forming battery answered this cycle
    auto_transfer: bool = False  # every grid-forming PCS transfers to island on its own


@dataclass(slots=True)
class Transition:
    t_s: float
    source: str
    target: str
    reason: str


@dataclass(slots=True)
class GridMachine:
    """The machine's state and what it commands. `confirm_s`: how long the breaker may take
    to show a commanded position before it is alarmed."""

    params: IslandParams
    confirm_s: float
    state: str = ON_GRID
    since_s: float = 0.0
    close: bool = True  # the breaker command
    cmd_at_s: float = -math.inf
    forming: bool = False  # the grid-forming batteries are to form the grid
    out_since_s: float | None = None  # grid side out of band since
    in_since_s: float | None = None  # grid side in band since
    no_confirm: bool = False  # the breaker did not follow its command in time
    resync_late: bool = False
    transitions: list[Transition] = field(default_factory=list)
    event: IslandEvent | None = None  # the island event in progress
    events: list[IslandEvent] = field(default_factory=list)  # finished ones, newest last
    last_t_s: float | None = None
    form_at_s: float = -math.inf  # the batteries were told to form (islanding)
    next_look_s: float | None = None  # the state in force wants its next look by then

    def clone(self) -> GridMachine:
        return replace(self, transitions=list(self.transitions),
                       event=None if self.event is None else self.event.clone(),
                       events=list(self.events))

    @property
    def islanded(self) -> bool:
        return self.state != ON_GRID

    def alarms(self, breaker_id: str) -> tuple[str, ...]:
        out = []
        if self.islanded:
            out.append(f"islanded:{self.state}")
        if self.no_confirm:
            out.append(f"breaker_no_confirm:{breaker_id}:{'close' if self.close else 'open'}")
        if self.resync_late:
            out.append(f"resync_timeout:{breaker_id}")
        return tuple(out)

    # -- commands ------------------------------------------------------------------------
    def command(self, close: bool, t_s: float) -> None:
        if close != self.close:
            self.close, self.cmd_at_s = close, t_s

    # -- one step ------------------------------------------------------------------------
    def step(self, o: Observation) -> str:
        """Advance by one observation; return the state now in force. A state entered runs
        its handler at once, so its commands go out in the same cycle."""
        self._track(o)
        seen = {self.state}
        while True:
            self.next_look_s = None  # only the state in force asks for a look
            target, reason = HANDLERS[self.state](self, o)
            if target == self.state:
                break
            self._enter(target, reason, o)
            if target in seen:
                break  # one observation never cycles through a state twice
            seen.add(target)
        return self.state

    def _track(self, o: Observation) -> None:
        p = self.params
        dt = 0.0 if self.last_t_s is None else max(o.t_s - self.last_t_s, 0.0)
        self.last_t_s = o.t_s
        if o.readable:
            if p.in_band(o.grid_v, o.grid_hz):
                self.out_since_s = None
                self.in_since_s = o.t_s if self.in_since_s is None else self.in_since_s
            else:
                self.in_since_s = None
                self.out_since_s = o.t_s if self.out_since_s is None else self.out_since_s
            late = o.t_s - self.cmd_at_s > self.confirm_s
            if o.closed == self.close:
                self.no_confirm = False
            elif late and not self.no_confirm and not (o.tripped and not o.closed):
                # (a trip that opened it against the close command is no failure)
                self.no_confirm = True
                log.warning("breaker did not confirm %s within %.3g s of the command; check "
                            "its drive and auxiliary contact", "closing" if self.close
                            else "opening", self.confirm_s)
        if self.event is not None:
            self.event.observe(o, dt)

    def _enter(self, target: str, reason: str, o: Observation) -> None:
        log.warning("grid state %s -> %s: %s", self.state, target, reason)
        self.transitions.append(Transition(o.t_s, self.state, target, reason))
        del self.transitions[:-50]
        if target == ISLANDING and self.event is None:
            self.event = IslandEvent(start_s=o.t_s, min_soc_pct=o.soc_pct)
        if target == ISLAND and self.event is not None and self.event.stable_s is None:
            self.event.stable_s = o.t_s
        if target == ON_GRID and self.event is not None:
            self.event.end_s = o.t_s
            self.events.append(self.event)
            del self.events[:-20]
            log.warning("island event: %s", self.event.summary())
            self.event = None
        if target != RESYNC:
            self.resync_late = False
        self.state, self.since_s = target, o.t_s

    def look_at(self, t_s: float) -> None:
        """Ask for the next look at t_s, sooner than the next regular cycle if that is later."""
        self.next_look_s = t_s if self.next_look_s is None else min(self.next_look_s, t_s)

    def hurry(self, o: Observation, since_s: float) -> None:
        """Changeover: look every transfer_poll_s while the step begun at since_s can still
        complete (within confirm_s); past that it is stuck and alarmed, the cycle suffices."""
        if o.t_s - since_s <= self.confirm_s:
            self.look_at(o.t_s + self.params.transfer_poll_s)

    def grid_back(self, o: Observation) -> bool:
        return self.in_since_s is not None and o.t_s - self.in_since_s >= self.params.return_s

    def in_sync(self, o: Observation) -> bool:
        p = self.params
        dphi = (o.phase_deg + 180.0) % 360.0 - 180.0
        return (abs(o.grid_v - o.bus_v) <= p.sync_v_pct / 100 * p.nominal_v
                and abs(o.grid_hz - o.bus_hz) <= p.sync_hz and abs(dphi) <= p.sync_deg)


Handler = Callable[[GridMachine, Observation], tuple[str, str]]


def on_grid(m: GridMachine, o: Observation) -> tuple[str, str]:
    m.command(True, o.t_s)
    m.forming = False
    if not o.readable:
        return ON_GRID, ""
    if o.tripped:
        return ISLANDING, "the breaker tripped"
    if not o.closed and o.t_s - m.cmd_at_s > m.confirm_s:
        return ISLANDING, "the breaker is open"
    if m.out_since_s is not None and o.t_s - m.out_since_s >= m.params.detect_s:
        return ISLANDING, (f"grid at {o.grid_v:.0f} V {o.grid_hz:.2f} Hz, out of band for "
                           f"{o.t_s - m.out_since_s:.1f} s")
    if m.out_since_s is not None:
        m.look_at(m.out_since_s + m.params.detect_s)  # not the first cycle after it
    return ON_GRID, ""


def islanding(m: GridMachine, o: Observation) -> tuple[str, str]:
    """Open the PCC, then let the batteries form the grid; never form while it is closed.
    A PCS that transfers on its own has tripped the PCC and formed before the controller
    saw the loss: the island stands already, and it is told to go on forming (never to
    follow, which it could not without a grid)."""
    m.command(False, o.t_s)
    if not o.readable or o.closed:
        m.forming = False
        if o.readable and m.out_since_s is None and not o.tripped:
            return ON_GRID, "the grid came back before the breaker opened"
        m.hurry(o, m.cmd_at_s)
        return ISLANDING, ""
    if not o.supply:
        return BLACK_START, "no grid-forming battery has energy left"
    # It formed without having been told, or it tripped the breaker itself (its reading
    # may lag the breaker's by a poll, after the controller told it to form on).
    own = (o.auto_transfer and o.tripped) or (o.forming and not m.forming)
    # Commanded, form only once the shed loads read off; a PCS that transfers on its own
    # forms whatever the loads (its overload rating carries them until they are shed).
    if not m.forming and (o.auto_transfer or not o.flex_on):
        m.forming, m.form_at_s = True, o.t_s
    if o.forming and m.params.live(o.bus_v):
        if own:
            return ISLAND, (f"the PCS transferred on its own: island at {o.bus_v:.0f} V "
                            f"{o.bus_hz:.2f} Hz")
        return ISLAND, f"island formed at {o.bus_v:.0f} V {o.bus_hz:.2f} Hz"
    m.hurry(o, m.form_at_s if m.forming else m.cmd_at_s)
    return ISLANDING, ""


def island(m: GridMachine, o: Observation) -> tuple[str, str]:
    m.command(False, o.t_s)
    m.forming = True
    if not o.readable or not o.batteries_read:
        return ISLAND, ""  # a missed poll is no evidence of a collapse
    if not o.supply or not o.forming or not m.params.live(o.bus_v):
        return BLACK_START, (f"the island collapsed (bus {o.bus_v:.0f} V, forming "
                             f"{'yes' if o.forming else 'no'}, supply "
                             f"{'yes' if o.supply else 'none'})")
    if m.grid_back(o):
        return RESYNC, f"grid back in band for {o.t_s - m.in_since_s:.0f} s"
    return ISLAND, ""


def resync(m: GridMachine, o: Observation) -> tuple[str, str]:
    """Close only inside the window (the forming PCS synchronises itself to the grid side it
    measures), then hand back to grid-following."""
    m.forming = True
    if not o.readable or not o.batteries_read:
        m.command(False, o.t_s)  # no synchronism check without the relay's readings
        return RESYNC, ""
    if o.closed and m.close:
        return ON_GRID, "the breaker closed in sync"
    if m.out_since_s is not None:
        m.command(False, o.t_s)
        return ISLAND, "the grid left its band again"
    if not o.forming or not m.params.live(o.bus_v) or not o.supply:
        m.command(False, o.t_s)
        return BLACK_START, ("the island collapsed while resynchronising" if o.supply else
                             "no battery energy left while resynchronising")
    synced = m.in_sync(o)
    m.command(synced, o.t_s)
    if not synced and o.t_s - m.since_s > m.params.resync_timeout_s and not m.resync_late:
        m.resync_late = True
        log.warning("no synchronism after %.0f s: grid %.0f V %.2f Hz, island %.0f V %.2f Hz, "
                    "phase %.1f°", o.t_s - m.since_s, o.grid_v, o.grid_hz, o.bus_v, o.bus_hz,
                    o.phase_deg)
    return RESYNC, ""


def black_start(m: GridMachine, o: Observation) -> tuple[str, str]:
    """Every load off (the balance sheds them); close onto the dead bus when the grid is back,
    or re-energise it from a battery that has energy."""
    if not o.readable:
        m.command(False, o.t_s)
        m.forming = False
        return BLACK_START, ""
    if o.closed and m.close:
        return ON_GRID, "closed onto the dead bus: the grid supplies the site again"
    dead = not m.params.live(o.bus_v)
    if m.grid_back(o) and dead:
        m.forming = False
        m.command(True, o.t_s)
        return BLACK_START, ""
    m.command(False, o.t_s)
    if o.forming and not dead and o.batteries_read and o.supply:
        return ISLAND, f"bus re-energised at {o.bus_v:.0f} V {o.bus_hz:.2f} Hz"
    if o.batteries_read:
        m.forming = o.can_start and not o.any_on  # onto an empty bus only
    return BLACK_START, ""


HANDLERS: dict[str, Handler] = {ON_GRID: on_grid, ISLANDING: islanding, ISLAND: island,
                                RESYNC: resync, BLACK_START: black_start}

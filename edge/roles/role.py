"""A device role as one unit of code: everything the daemon knows about one kind of device
(PV inverter, battery, meter, switchable load, DC converter ...) behind one small interface.

The config union, the `check` summary, the cycle's kernel rows, safe state and writes, the
telemetry fields and the site balance are all built by asking each role; nothing else in
the control path branches on a concrete role. A new role is a subclass in its own module,
registered in edge/roles/__init__.py (see docs/adding-a-role.md).

Hooks receive the devices of their role in config order, the frozen process image and the
controller's memory; they never perform I/O. Defaults describe a role that is only read.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edge.config.base import DeviceBase
from edge.image.image import ProcessImage

if TYPE_CHECKING:
    from edge.config import Config


@dataclass(slots=True)
class Written:
    """The last setpoint that reached a device, and when (simulated s)."""

    value: float | None = None
    at_s: float = -math.inf
    failed: bool = False


@dataclass(slots=True)
class Memory:
    """What the controller carries from one cycle to the next: the setpoints that reached
    each device, each role's own state (load switching, DC bus excursions ...), the last
    decision and the instruction trouble last reported. `decide` works on a clone."""

    written: dict[str, Written]
    roles: dict[str, Any]
    last: Any = None  # the previous Decision
    trouble: tuple = (False, ())

    def clone(self) -> Memory:
        return Memory(
            {k: Written(w.value, w.at_s, w.failed) for k, w in self.written.items()},
            {k: (s.clone() if s is not None else None) for k, s in self.roles.items()},
            self.last, self.trouble)


@dataclass(frozen=True, slots=True)
class Part:
    """One device's reach on the PCC power. Its push is its effect on the PCC power: + lowers
    it (battery discharge, PV output), − raises it (battery charge, a load's draw). Up means
    a lower PCC power (import less / export more), down a higher one."""

    id: str
    # "storage" (a battery: its energy runs out), "generation" (curtailable), "consumption"
    # (sheddable), "thermal" (HVAC or a tank: held only as long as the band or tank allows)
    kind: str
    push_kw: float  # now
    max_kw: float  # the most push it can reach
    min_kw: float  # the least
    up_kwh: float = math.inf  # energy behind a push above 0 (a battery above soc_min)
    down_kwh: float = math.inf  # room behind a push below 0 (a battery below soc_max)
    soc_pct: float = math.nan
    # How long a push above now may be held: a paused EV must still make its departure
    # (edge/vpp/capability.py sets it from the decision's demands). Longer windows get none.
    up_h: float = math.inf

    @property
    def stores(self) -> bool:
        """Its energy runs out (a battery), unlike shedding a load or curtailing PV."""
        return math.isfinite(self.up_kwh) or math.isfinite(self.down_kwh)

    def up_kw(self, hours: float) -> float:
        """How far it can lower the PCC power from now and hold that for `hours`."""
        if hours > self.up_h:
            return 0.0
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


@dataclass(frozen=True, slots=True)
class Room:
    """What a role that shares the site's headroom (`allocates`) is given, once the kernel
    has settled everything else: the import it may still add under the hard limits (import
    limit, DR and dispatch caps; inf: none), the power the site would otherwise export or
    curtail, the plan's kW per device for now (None: no plan in force) and the standing
    requests about its devices (commands)."""

    ts: datetime
    import_kw: float
    surplus_kw: float
    planned_kw: dict[str, float] | None = None
    requests: dict[str, Any] = field(default_factory=dict)
    site_kw: float = math.nan  # the grid without these devices nor the batteries, this cycle
    # The grid the settlement expects without these devices (+ import); below 0 what the
    # site would export or curtail, probed upwards while PV is held back.
    grid_kw: float = math.nan

    def after(self, added_kw: float) -> Room:
        """The room a role leaves the next one once it has added `added_kw` of draw."""
        grid = self.grid_kw + added_kw
        return replace(self, import_kw=max(self.import_kw - added_kw, 0.0),
                       surplus_kw=max(-grid, 0.0), grid_kw=grid)


@dataclass(frozen=True, slots=True)
class Demand:
    """Energy a device must receive before a deadline, at up to `max_kw`: an EV session.
    The planner schedules it into the cheap hours; the decision reports the standing ones."""

    id: str  # the device
    energy_kwh: float  # still needed
    deadline: datetime
    max_kw: float


class Role:
    name: ClassVar[str]  # the YAML `role:` value
    model: ClassVar[type[DeviceBase]]  # its config model
    block: ClassVar[str | None] = None  # the kernel block its devices fill, if any
    writes: ClassVar[bool] = False  # has setpoints (and a revert timer on the device)
    decision_key: ClassVar[str | None] = None  # its setpoints' name on a Decision
    setpoint_unit: ClassVar[str] = "kW"  # what its setpoints are in, for messages
    generates: ClassVar[bool] = False  # PV generation the forecaster predicts
    # Shares the headroom the kernel leaves (EV chargers): `allocate` instead of a block.
    allocates: ClassVar[bool] = False

    def setpoint_text(self, dev: Any, value: float) -> str:
        """A setpoint of `dev` as a message shows it (its value in its unit)."""
        return f"{value:.2f} {self.setpoint_unit}"

    # -- configuration ------------------------------------------------------------------
    def summary(self, dev: Any) -> str:
        """Its part of a device's line in `pedf-edge check`."""
        return ""

    def site_problems(self, devs: list[Any]) -> list[str]:
        """Rules across the devices of this role (e.g. exactly one PCC meter)."""
        return []

    def config_problems(self, devs: list[Any], config: Config) -> list[str]:
        """Rules between the devices of this role and the rest of the config."""
        return []

    def driver_options(self, dev: Any, config: Config) -> dict[str, Any]:
        """Role-specific fields of the driver's DeviceSpec (drivers/spec.py)."""
        return {}

    # -- process image ------------------------------------------------------------------
    def nameplate_checks(self, dev: Any) -> list[tuple[str, float, str]]:
        """(setting, configured value, reading key) the device's own nameplate must cover."""
        return []

    def implausible(self, dev: Any, values: dict[str, float], last: dict[str, float] | None,
                    dt_s: float) -> str | None:
        """Why a reading cannot be physical (the image then marks the device STALE, so it
        gets its safe state), or None. `last`: its last plausible reading, `dt_s` simulated
        seconds before (None: none yet)."""
        return None

    def balance_term(self, dev: Any) -> str | None:
        """Which term of the site balance (grid, pv, bess, load, ev) its power_kw is."""
        return None

    # -- control ------------------------------------------------------------------------
    def controls(self, dev: Any) -> bool:
        """The device takes setpoints (and so must be re-written before its revert timer)."""
        return self.writes

    def new_state(self, devs: list[Any], config: Config) -> Any:
        """The role's own memory (an object with clone()), or None."""
        return None

    def observe(self, devs: list[Any], image: ProcessImage, mem: Memory, now_s: float) -> None:
        """Update the role's memory from a new image, before anything is decided."""

    def settling(self, devs: list[Any], image: ProcessImage, mem: Memory) -> bool:
        """True while readings may mix before and after a switch of this role's devices."""
        return False

    def idle_offset_kw(self, devs: list[Any], image: ProcessImage) -> float:
        """What the grid would change by with this role's devices idle (natural grid)."""
        return 0.0

    def rows(self, devs: list[Any], image: ProcessImage, mem: Memory, now_s: float,
             config: Config, out: np.ndarray) -> None:
        """Fill the kernel block `out` (one row per device)."""

    def drawn_kw(self, devs: list[Any], image: ProcessImage, mem: Memory,
                 now_s: float, hold: bool = True) -> float:
        """An allocating role: what its readable devices draw now (the kernel first settles
        the site without it). `hold`: devices that were just cut still count at what they
        drew before, for as long as they take to follow (so no room is shown twice);
        without it, every device counts at the limit in force, which is what the batteries
        settle against (they then bridge the devices' ramps at the PCC)."""
        return 0.0

    def allocate(self, devs: list[Any], image: ProcessImage, mem: Memory, now_s: float,
                 config: Config, room: Room) -> tuple[dict[str, float], float]:
        """An allocating role: its setpoints inside `room`, and the kW they will draw."""
        return {}, 0.0

    def demands(self, devs: list[Any], image: ProcessImage, mem: Memory) -> list[Demand]:
        """Energy its devices need by a deadline, for the planner."""
        return []

    def session_request(self, dev: Any, image: ProcessImage | None, at: datetime,
                        departure: datetime | None, energy_kwh: float | None) -> Any | None:
        """A platform command's departure and/or energy for the device's charging session,
        as the standing request the role applies (Room.requests). None: the role has no
        sessions. ValueError (the reason) when it cannot tell which session is meant."""
        return None

    def setpoints(self, devs: list[Any], image: ProcessImage, mem: Memory, config: Config,
                  kernel_out: np.ndarray | None) -> dict[str, float]:
        """This cycle's setpoints, clamped to each device's limits."""
        return {}

    def safe(self, devs: list[Any], image: ProcessImage, mem: Memory, now_s: float,
             config: Config, final: bool) -> dict[str, float]:
        """Each device's configured safe state (`final`: the daemon is stopping)."""
        return {}

    def alarms(self, devs: list[Any], mem: Memory) -> tuple[str, ...]:
        return ()

    # -- island operation (a microgrid's PCC breaker owns the grid state) -----------------
    def islanded(self, devs: list[Any], mem: Memory) -> bool:
        """The site is off the grid (or on its way off or back): decide in island mode."""
        return False

    def grid_state(self, devs: list[Any], mem: Memory) -> str | None:
        """on_grid, islanding, island, resync or black_start; None: no island operation."""
        return None

    def next_look_s(self, devs: list[Any], mem: Memory) -> float | None:
        """The simulated second the role must look again by, when that may come before the
        next regular cycle (a timer about to run out, a changeover under way); None: the
        cycle's own period is soon enough."""
        return None

    def island_plan(self, devs: list[Any], image: ProcessImage, mem: Memory, now_s: float,
                    config: Config) -> Any | None:
        """The island's balance this cycle (edge.island.balance.IslandPlan), or None."""
        return None

    def island_setpoints(self, devs: list[Any], image: ProcessImage, mem: Memory, now_s: float,
                         config: Config, plan: Any) -> dict[str, float]:
        """Its setpoints while islanded; by default its safe state."""
        return self.safe(devs, image, mem, now_s, config, False)

    def view(self, setpoints: dict[str, float]) -> dict:
        """Its setpoints as readers of a decision see them (e.g. on/off as bools)."""
        return setpoints

    # -- writes -------------------------------------------------------------------------
    def deadband(self, configured_kw: float, dev: Any = None) -> float:
        """How far a setpoint of `dev` must move to be written again."""
        return configured_kw

    def write(self, driver: Any, value: float, revert_s: int) -> Awaitable[None]:
        raise NotImplementedError(f"role {self.name} has no setpoint")

    def write_phase(self, dev: Any, value: float, mem: Memory) -> int:
        """0: before the others (making room), 1: with them, 2: after them."""
        return 1

    def wrote(self, dev: Any, value: float, mem: Memory, now_s: float) -> None:
        """A write reached the device."""

    # -- reporting ----------------------------------------------------------------------
    def telemetry(self, devs: list[Any], image: ProcessImage) -> dict[str, Any]:
        """The telemetry fields this role contributes (present even with no device)."""
        return {}

    stores_energy: ClassVar[bool] = False  # its reach runs out (a battery)

    def capability(self, dev: Any, image: ProcessImage) -> Part | None:
        """How far it can move the PCC power from now (None: not readable, so nothing may
        be promised on it); edge/vpp/capability.py sums the site."""
        return None


def total(image: ProcessImage, devs: list[Any], key: str, weight=lambda d: 1.0) -> float | None:
    """Sum over devices, or None if any is not GOOD: a partial sum would look like a real
    figure to whoever reads it."""
    if not all(image.good(d.id) for d in devs):
        return None
    out = sum(image.value(d.id, key) * weight(d) for d in devs)
    return out if math.isfinite(out) else None  # a device that does not know yet


def rounded(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, nd)

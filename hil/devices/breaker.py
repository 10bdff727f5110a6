"""Simulated PCC breaker with a synchronism-check relay, served through its register map
(drivers/maps/breaker_generic.yaml): a coil commands it, the position follows after its
operating time (`sim.operate_s`), or never on opening when `sim.fails_to_open`. A PCS that
transfers on its own trips it (`trip`): it opens after the same operating time and stays
open, `tripped` set, until a close is commanded anew. The grid beyond it can be taken away
and given back (`set_grid`, a scenario's `grid_outage`); the site side (`bus_*`) is set by
the site's island physics (hil/island.py)."""

from __future__ import annotations

from pymodbus.constants import ExcCodes

from drivers.modbus.regmap import RegisterMap
from hil.devices.base import Env
from hil.devices.mapped import MapSimDevice


class MapBreakerSim(MapSimDevice):
    role = "breaker"

    def __init__(self, cfg, site_max_kw: float, regmap: RegisterMap | None = None) -> None:
        super().__init__(cfg, site_max_kw, regmap)
        p = cfg.island
        self.nominal_v, self.nominal_hz = p.nominal_v, p.nominal_hz
        self.held["switch"] = 1.0
        self.closed = True
        self._cmd_at: float | None = None
        self.grid_up = True
        self.lost_at: float | None = None  # the grid beyond it went at (None: it is up)
        self.tripped = False  # a trip was given; cleared by the next close command
        self._trip_at: float | None = None
        self.bus_v, self.bus_hz, self.phase_deg = self.nominal_v, self.nominal_hz, 0.0
        self.operations: list[tuple[float, bool]] = []  # (sim s, closed) per operation
        self.closed_out_of_sync: list[float] = []  # sim s of any close onto a live, unsynced bus
        self.grid_changes: list[tuple[float, bool]] = []  # (sim s, grid up) per set_grid

    def set_grid(self, up: bool) -> None:
        """Take the grid away beyond the breaker, or give it back, now (the physics up to
        now had it as it was)."""
        t_s = self.sync() if self.sync is not None else self.t_s
        if up != self.grid_up:
            self.grid_changes.append((t_s, up))
            self.lost_at = None if up else t_s
        self.grid_up = up

    def trip(self, t_s: float) -> None:
        """A trip (a PCS's loss-of-mains protection): open `operate_s` after t_s, whatever
        the coil says, unless the mechanism is stuck."""
        if not self.tripped:
            self.tripped, self._trip_at = True, t_s

    def reset_trip(self) -> None:
        """The trip withdrawn before the breaker opened (the grid came back first)."""
        if self.closed:
            self.tripped, self._trip_at = False, None

    def set_fails_to_open(self, fails: bool) -> None:
        self.sim = self.sim.model_copy(update={"fails_to_open": fails})

    @property
    def grid_v(self) -> float:
        return self.nominal_v if self.grid_up else 0.0

    @property
    def grid_hz(self) -> float:
        return self.nominal_hz if self.grid_up else 0.0

    def validate_points(self, changes: dict[str, float]) -> ExcCodes | None:
        return None

    def on_points(self, changes: dict[str, float], before: dict[str, float]) -> None:
        if "switch" in changes and changes["switch"] != before.get("switch"):
            self._cmd_at = self.t_s
            if changes["switch"] >= 0.5:  # a close command resets a trip
                self.tripped, self._trip_at = False, None

    def _pending(self) -> tuple[float, bool] | None:
        """(when, closed after) of the operation under way: a trip, or a command (its
        operating time after the command); a tripped breaker does not close."""
        if self.closed and self._trip_at is not None and not self.sim.fails_to_open:
            return self._trip_at + self.sim.operate_s, False
        want = self.held["switch"] >= 0.5 and not self.tripped
        if self._cmd_at is None or want == self.closed or (not want and self.sim.fails_to_open):
            return None
        return self._cmd_at + self.sim.operate_s, want

    def due_s(self) -> float | None:
        """When the operation under way completes."""
        op = self._pending()
        return None if op is None else op[0]

    def open_by(self, t_s: float) -> bool:
        """It reads open at t_s, an opening that completes by then included (what a PCS
        watching its auxiliary contact sees at that instant)."""
        op = self._pending()
        if op is not None and t_s >= op[0] - 1e-9:
            return not op[1]
        return not self.closed

    def step(self, env: Env, dt_s: float) -> float:
        self.t_s = env.t_s
        op = self._pending()
        if op is not None and env.t_s >= op[0] - 1e-9:
            want = op[1]
            if want and self.grid_up and self.bus_v > 0.2 * self.nominal_v and not self.in_sync():
                self.closed_out_of_sync.append(env.t_s)
            self.closed = want
            self.operations.append((env.t_s, want))
        return 0.0

    def in_sync(self) -> bool:
        return (abs(self.grid_v - self.bus_v) <= 0.05 * self.nominal_v
                and abs(self.grid_hz - self.bus_hz) <= 0.2 and abs(self.phase_deg) <= 10.0)

    def point_values(self) -> dict[str, float]:
        return {"closed": float(self.closed), "tripped": float(self.tripped), "grid_v": self.grid_v,
                "grid_hz": self.grid_hz, "bus_v": self.bus_v, "bus_hz": self.bus_hz,
                "phase_deg": self.phase_deg}

    def state(self) -> dict[str, float | int | None]:
        return {"closed": int(self.closed), "grid_up": int(self.grid_up), "bus_v": self.bus_v,
                "bus_hz": self.bus_hz, "phase_deg": self.phase_deg}

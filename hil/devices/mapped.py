"""The simulators described by a register map (drivers/maps/*.yaml, protocol modbus-tcp or
modbus-rtu): the map-driven base, the battery PCS (with its BMS on a unit id of its own) and
the three-phase meter. The flexible load and the DC bus converter build on the same base
(hil/devices/flexload.py, dcbus.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData

from drivers.modbus.regmap import BIT_FUNCTIONS, RegisterMap, load_map
from edge.config import BatteryDevice, DeviceConfig, MeterDevice
from hil.devices.base import Env, Fault, SimulatedDevice, expired, overlaps
from hil.devices.roles import Metering, Storage

_FUNCTIONS = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 4: "input"}


class MapSimDevice(SimulatedDevice):
    """Base of the map-driven devices (modbus-tcp or modbus-rtu, `map:` in the config): the
    register image is the map's points, encoded from `point_values()` (engineering units,
    our sign convention) by the map's own codec, the one the driver decodes with. rw/w points
    hold what the client wrote and read back as written; unmapped addresses answer
    ILLEGAL_ADDRESS, unless the map lets reads bridge them (`max_gap`): then those between
    mapped ones read 0 and refuse writes, as a device that answers its whole range; r points
    reject writes (pymodbus enforces the per-register readonly flag). Holding and input registers, coils and discrete inputs are separate tables when the
map uses more than holding registers; bits live at addresses 0..15."""

    models = ()
    protocols: ClassVar[tuple[str, ...]] = ("modbus-tcp", "modbus-rtu")
    # Set by the site for the island's units (hil/island.py): brings the physics up to now
    # and returns the simulated second, so a request is served and timed at its own instant.
    sync: Callable[[], float] | None = None
    # Unmapped addresses between mapped ones answer (read 0); None: when the map's max_gap
    # says its devices do.
    answers_gaps: bool | None = None

    def __init__(self, cfg: DeviceConfig, site_max_kw: float,
                 regmap: RegisterMap | None = None) -> None:
        self._init_unit(cfg)  # not SimulatedDevice.__init__: that builds a SunSpec chain image
        self.map: RegisterMap = regmap or load_map(str(cfg.map))
        self.held: dict[str, float] = {p.key: 0.0 for p in self.map.points if p.writable}
        self._split = any(p.function != "holding" for p in self.map.points)
        for p in self.map.points:
            if p.function in BIT_FUNCTIONS and p.address > 15:
                raise ValueError(f"{self.map.name}: the simulator serves bits at 0..15 only "
                                 f"({p.key} is at {p.address})")

    @property
    def has_bits(self) -> bool:
        return any(p.function in BIT_FUNCTIONS for p in self.map.points)

    # -- behaviour (subclasses) ---------------------------------------------------------
    def point_values(self) -> dict[str, float]:
        """Measured values by map key; keys the device does not know read as 0."""
        raise NotImplementedError

    def validate_points(self, changes: dict[str, float]) -> ExcCodes | None:
        return None

    def on_points(self, changes: dict[str, float], before: dict[str, float]) -> None:
        """React to an accepted write; `self.held` already holds the new values."""

    # -- register image -----------------------------------------------------------------
    def _table(self, function: str) -> list:
        return [p for p in self.map.points if p.function == function or not self._split]

    def refresh(self, registers: list[int], start_address: int, function: str = "holding") -> None:
        values = {**self.point_values(), **self.held}
        if function in BIT_FUNCTIONS:  # one register holds bits 0..15, bit n = address n
            registers[0] = sum(1 << p.address for p in self._table(function)
                               if values.get(p.key, 0.0) >= 0.5)
            return
        for p in self._table(function):
            at = p.address - start_address
            registers[at : at + p.size] = self.map.encode(p, values.get(p.key, 0.0), clamp=True)

    def _blocks(self, function: str) -> list[SimData]:
        points = sorted(self._table(function), key=lambda p: p.address)
        if not points:
            return [SimData(address=0, datatype=DataType.INVALID)]
        regs = {}
        values = {**self.point_values(), **self.held}
        for p in points:
            for i, r in enumerate(self.map.encode(p, values.get(p.key, 0.0), clamp=True)):
                regs[p.address + i] = (r, p.access == "r")
        if self.map.max_gap > 0 if self.answers_gaps is None else self.answers_gaps:
            for addr in range(min(regs), max(regs)):
                regs.setdefault(addr, (0, True))
        blocks: list[SimData] = []
        run: list[int] = []
        for addr in sorted(regs):
            if run and (addr != run[-1] + 1 or regs[addr][1] != regs[run[0]][1]):
                blocks.append(self._simdata(run, regs))
                run = []
            run.append(addr)
        blocks.append(self._simdata(run, regs))
        return blocks

    @staticmethod
    def _simdata(run: list[int], regs: dict) -> SimData:
        return SimData(address=run[0], values=[regs[a][0] for a in run],
                       datatype=DataType.REGISTERS, readonly=regs[run[0]][1])

    def simdata(self):  # type: ignore[override]
        if not self._split:
            return self._blocks("holding")
        bits = [[SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]
                for _ in BIT_FUNCTIONS]
        return (*bits, self._blocks("holding"), self._blocks("input"))

    def write_coils(self, address: int, values: list[bool]) -> ExcCodes | None:
        return self._accept({p.key: 1.0 if values[p.address - address] else 0.0
                             for p in self._table("coil")
                             if p.writable and address <= p.address < address + len(values)})

    def write_points(self, changes: dict[str, float]) -> ExcCodes | None:
        """Decoded points written as a client's write would arrive (tests drive units so)."""
        if self.sync is not None:
            self.t_s = self.sync()
        return self._accept(changes)

    def _accept(self, touched: dict[str, float]) -> ExcCodes | None:
        """A write's decoded points: refused by the device, or held and reacted to."""
        if rc := self.validate_points(touched):
            return rc
        before = dict(self.held)
        self.held.update(touched)
        self.on_points(touched, before)
        return None

    def write_registers(self, address: int, values: list[int], registers: list[int],
                        start_address: int) -> ExcCodes | None:
        regs = list(registers)
        regs[address - start_address : address - start_address + len(values)] = values
        end = address + len(values)
        touched: dict[str, float] = {}
        for p in self._table("holding"):
            if p.writable and overlaps(p.address, p.size, address, end):
                at = p.address - start_address
                touched[p.key] = self.map.decode(p, regs[at : at + p.size])
        return self._accept(touched)

    async def action(self, function_code: int, start_address: int, address: int, count: int,
                     current_registers: list[int], set_values: list[int] | list[bool] | None
                     ) -> ExcCodes | None:
        if (rc := await self.gate(function_code)) is not None:
            return rc
        if self.sync is not None:
            self.t_s = self.sync()  # the write below is timed from now
        function = _FUNCTIONS.get(function_code, "holding") if self._split else "holding"
        if set_values is None:
            self.refresh(current_registers, start_address, function)
            return None
        if function == "coil":
            return self.write_coils(address, [bool(v) for v in set_values])
        return self.write_registers(address, [int(v) for v in set_values],
                                    current_registers, start_address)

    def read_points(self) -> dict[str, float]:
        """Decoded view of every readable point, as a client would see it (tests, logs)."""
        values = {**self.point_values(), **self.held}
        return {p.key: self.map.decode(p, self.map.encode(p, values.get(p.key, 0.0), clamp=True))
                for p in self.map.points if p.readable}


class MapBatteryPcs(Storage, MapSimDevice):
    """Battery PCS (+ relayed BMS values) through its map: command = `setpoint` kW
    (+ discharge) while `enable` holds its enabling value (always, when the map has no
    enable point). When `revert` > 0 s and neither setpoint nor enable was re-written for
    that long, the PCS falls back to standby (setpoint 0, enable 0). The BMS protects
    itself at the SoC bounds whatever the command.

    With `auto_transfer` 1 it transfers to island on its own (hil/island.py times it): once
    the grid beyond the closed PCC switch has been gone `sim.detect_ms`, it trips the switch,
    and forms the instant the switch reads open (it was synchronised with the grid: no
    `form_s`). A switch that does not open keeps it following (it never forms onto the dead
    grid). Having transferred, it forms until the switch is closed on a live grid and it is
    told to follow (`grid_mode` 0): without a grid there is nothing to follow, so an earlier
    `grid_mode` 0 is held, not obeyed."""

    role = "battery"
    cfg: BatteryDevice

    def __init__(self, cfg: BatteryDevice, site_max_kw: float,
                 regmap: RegisterMap | None = None) -> None:
        super().__init__(cfg, site_max_kw, regmap)
        self._init_storage(cfg)
        self._enable = self.map.point("enable")
        if "revert" in self.held:
            self.held["revert"] = float(cfg.revert_s)
        self._t_cmd: float | None = None
        self.charged_kwh = self.discharged_kwh = 0.0
        self._form_at: float | None = None  # told to form (grid_mode 0 -> 1) at
        self._formed = False
        self._own = False  # forms after transferring on its own
        self._trip_sent = False  # tripped the PCC switch, waiting for it to open
        self.over_s = 0.0  # forming beyond its rating for this long (hil/island.py)

    @property
    def forming(self) -> bool:
        """It forms the grid: after its own transfer, or grid_mode 1 for `sim.form_s`; the
        island's voltage source, the site sets its power (hil/island.py)."""
        return self._own or (self._formed and self.held.get("grid_mode", 0.0) >= 0.5)

    @property
    def auto(self) -> bool:
        return self.held.get("auto_transfer", 0.0) >= 0.5

    def transfer_due_s(self, cb) -> float | None:
        """When its loss-of-mains detection trips the PCC switch `cb` (auto transfer)."""
        if not self.auto or self._trip_sent or self.forming or cb.lost_at is None or not cb.closed:
            return None
        return cb.lost_at + self.sim.detect_ms / 1000

    def transfer(self, cb, t_s: float) -> None:
        """Its own transfer, at simulated second t_s: trip `cb` once the loss has lasted
        detect_ms, form the instant it reads open; withdraw the trip if the grid returns
        before it opened; follow again once closed on a live grid and told to."""
        due = self.transfer_due_s(cb)
        if due is not None and t_s >= due - 1e-9:
            cb.trip(due)
            self._trip_sent = True
        if self._trip_sent:
            if cb.open_by(t_s):
                self._trip_sent = False
                self._own = self.battery.soc_pct > self.battery.soc_min_pct
            elif cb.lost_at is None:
                cb.reset_trip()
                self._trip_sent = False
        if (self._own and cb.grid_up and not cb.open_by(t_s)
                and self.held.get("grid_mode", 0.0) < 0.5):
            self._own = False

    def drop_out(self) -> None:
        """The island collapsed: it trips out of grid-forming."""
        self.held["grid_mode"] = 0.0
        self._own = self._formed = False
        self.over_s = 0.0

    def due_s(self) -> float | None:
        """When it will have formed, while it is switching over."""
        if self._form_at is None or self._formed or self.held.get("grid_mode", 0.0) < 0.5:
            return None
        return self._form_at + self.sim.form_s

    @property
    def command_kw(self) -> float:
        if self._enable is not None and self.held["enable"] != self._enable.value:
            return 0.0
        return self.held.get("setpoint", 0.0)

    def validate_points(self, changes: dict[str, float]) -> ExcCodes | None:
        kw = changes.get("setpoint", 0.0)
        if not -self.cfg.max_charge_kw - 1e-6 <= kw <= self.cfg.max_discharge_kw + 1e-6:
            return ExcCodes.ILLEGAL_VALUE
        if self._enable is not None and changes.get("enable", 0.0) not in (0.0, self._enable.value):
            return ExcCodes.ILLEGAL_VALUE
        if changes.get("revert", 0.0) < 0 or changes.get("grid_mode", 0.0) not in (0.0, 1.0):
            return ExcCodes.ILLEGAL_VALUE
        if changes.get("auto_transfer", 0.0) not in (0.0, 1.0):
            return ExcCodes.ILLEGAL_VALUE
        return None

    def on_points(self, changes: dict[str, float], before: dict[str, float]) -> None:
        if {"setpoint", "enable", "grid_mode"} & changes.keys():
            self._t_cmd = self.t_s
        if changes.get("grid_mode", 0.0) >= 0.5 and before.get("grid_mode", 0.0) < 0.5:
            self._form_at, self._formed = self.t_s, self._own  # forming already: no form_s

    def step(self, env: Env, dt_s: float) -> float:
        self.t_s = env.t_s
        due = self.due_s()
        self._formed = self.held.get("grid_mode", 0.0) >= 0.5 and (
            self._formed or (due is not None and env.t_s >= due - 1e-9))
        if self.forming:
            return self.power_kw
        if due is not None and not self._formed:  # switching over: no power meanwhile
            self.power_kw = self.battery.step(0.0, dt_s)
            return self.power_kw
        if self.command_kw and expired(self._t_cmd, int(self.held.get("revert", 0)), env.t_s):
            self.held["setpoint"] = 0.0
            if self._enable is not None:
                self.held["enable"] = 0.0
        self.power_kw = self.battery.step(self.command_kw, dt_s)
        self.charged_kwh += max(-self.power_kw, 0.0) * dt_s / 3600
        self.discharged_kwh += max(self.power_kw, 0.0) * dt_s / 3600
        return self.power_kw

    def point_values(self) -> dict[str, float]:
        b, cfg = self.battery, self.cfg
        dc_v = 640.0 + 1.2 * b.soc_pct  # a 200-cell LFP string, roughly
        dc_a = self.power_kw * 1000 / dc_v
        running = abs(self.power_kw) > 1e-6
        return {
            "state": 2.0 if running else 1.0, "alarm_code": 0.0, "forming": float(self.forming),
            "power_kw": self.power_kw, "reactive_kvar": 0.0, "frequency_hz": 50.0,
            "dc_voltage_v": dc_v, "dc_current_a": dc_a, "soc_pct": b.soc_pct, "soh_pct": 100.0,
            "rated_kw": max(cfg.max_charge_kw, cfg.max_discharge_kw),
            "max_charge_kw": cfg.max_charge_kw, "max_discharge_kw": cfg.max_discharge_kw,
            "capacity_kwh": cfg.capacity_kwh, "charged_kwh": self.charged_kwh,
            "discharged_kwh": self.discharged_kwh,
            # BMS view (drivers/maps/bms_generic.yaml)
            "pack_voltage_v": dc_v, "pack_current_a": dc_a, "dc_power_kw": self.power_kw,
            "max_charge_current_a": cfg.max_charge_kw * 1000 / dc_v,
            "max_discharge_current_a": cfg.max_discharge_kw * 1000 / dc_v,
            "cell_voltage_max_v": dc_v / 200 + 0.005, "cell_voltage_min_v": dc_v / 200 - 0.005,
            "temperature_max_c": 27.5, "temperature_min_c": 24.0,
            "bms_state": 2.0 if running else 1.0, "alarm_bits": 0.0,
            "cycle_count": (self.charged_kwh + self.discharged_kwh) / 2 / cfg.capacity_kwh,
        }

    def bus_units(self) -> list[SimulatedDevice]:
        return [self, MapBmsView(self)] if self.cfg.bms is not None else [self]


class MapBmsView(MapSimDevice):
    """The BMS of a map-driven PCS on its own unit id (config `bms:`): the same battery seen
    through the BMS's register map. It goes silent, and fails, with its PCS."""

    role = "battery"

    def __init__(self, pcs: MapBatteryPcs) -> None:
        bms = pcs.cfg.bms
        assert bms is not None
        self.pcs = pcs
        cfg = pcs.cfg.model_copy(update={"unit_id": bms.unit_id, "map": bms.map})
        super().__init__(cfg, 0.0, load_map(bms.map))
        self.id = f"{pcs.id}.bms"

    @property  # type: ignore[override]
    def online(self) -> bool:
        return self.pcs.online

    @online.setter
    def online(self, value: bool) -> None:
        self.pcs.online = value

    @property  # type: ignore[override]
    def fault(self) -> Fault | None:
        return self.pcs.fault

    @fault.setter
    def fault(self, value: Fault | None) -> None:
        self.pcs.fault = value

    def point_values(self) -> dict[str, float]:
        return self.pcs.point_values()


class MapThreePhaseMeter(Metering, MapSimDevice):
    """Three-phase meter through its map; `measures: grid` balances the site (+ import),
    `measures: load` is the building load (its sim profile), as the SunSpec Meter."""

    role = "meter"
    cfg: MeterDevice

    def __init__(self, cfg: MeterDevice, site_max_kw: float,
                 regmap: RegisterMap | None = None) -> None:
        super().__init__(cfg, site_max_kw, regmap)
        self._init_metering(cfg)

    def point_values(self) -> dict[str, float]:
        v = 230.0
        amps = abs(self.power_kw) * 1000 / (3 * v)
        return {
            "voltage_l1_v": v, "voltage_l2_v": v, "voltage_l3_v": v,
            "current_l1_a": amps, "current_l2_a": amps, "current_l3_a": amps,
            "power_kw": self.power_kw, "reactive_kvar": 0.0, "power_factor": 1.0,
            "frequency_hz": 50.0, "import_kwh": self.import_kwh, "export_kwh": self.export_kwh,
        }

"""The simulated site: devices stepped on the shared clock, served on loopback Modbus TCP
(DL/T 645 meters through hil/dlt645_server.py, Modbus RTU units on serial buses), with a
KPI ledger for the real site and for the same site without its battery.

Physics runs in ≤1 s simulated sub-steps aligned on whole simulated seconds, so heartbeats,
revert timers and the per-minute samples fall on the same instants whatever the speed-up.
Balance: grid = load − pv − battery (+ import, battery + discharge).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from pymodbus.server import ModbusTcpServer

from edge.app.clock import Clock
from edge.config import Config, MeterDevice, TariffConfig
from hil.devices import Dlt645SimMeter, Env, Fault, MapSimDevice, SimulatedDevice, build
from hil.dlt645_server import MeterBus, meter_bus, meter_bus_key
from hil.flexload import MapFlexLoadSim  # noqa: F401 - registers the flexible-load simulator
from hil.physics import load_kw
from hil.serial_server import RTU_PROTOCOLS, RtuBus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sample:
    """Site state at one instant (kW, %); one is kept per simulated minute."""

    t: datetime
    load_kw: float
    pv_kw: float
    pv_available_kw: float
    bess_kw: float
    grid_kw: float
    soc_pct: float | None


@dataclass
class Ledger:
    """Energy and money of one site over the run. Demand is the 15-min mean of net import."""

    tariff: TariffConfig
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    pv_kwh: float = 0.0
    pv_available_kwh: float = 0.0
    load_kwh: float = 0.0
    charge_kwh: float = 0.0
    discharge_kwh: float = 0.0
    import_cost: float = 0.0
    export_revenue: float = 0.0
    max_import_kw: float = 0.0
    max_export_kw: float = 0.0
    peak_15min_import_kw: float = 0.0
    _interval: int | None = field(default=None, repr=False)
    _interval_kwh: float = field(default=0.0, repr=False)

    def add(self, t_utc: datetime, price: float, dt_s: float, load: float, pv: float,
            pv_available: float, bess: float, grid: float) -> None:
        h = dt_s / 3600
        imp, exp = max(grid, 0.0) * h, max(-grid, 0.0) * h
        self.import_kwh += imp
        self.export_kwh += exp
        self.pv_kwh += pv * h
        self.pv_available_kwh += pv_available * h
        self.load_kwh += load * h
        self.charge_kwh += max(-bess, 0.0) * h
        self.discharge_kwh += max(bess, 0.0) * h
        self.import_cost += imp * price
        self.export_revenue += exp * self.tariff.export_price
        self.max_import_kw = max(self.max_import_kw, grid)
        self.max_export_kw = max(self.max_export_kw, -grid)
        interval = int(t_utc.timestamp() // 900)
        if interval != self._interval:
            self._close_interval()
            self._interval = interval
        self._interval_kwh += grid * h

    def _close_interval(self) -> None:
        self.peak_15min_import_kw = max(self.peak_15min_import_kw, self._interval_kwh / 0.25)
        self._interval_kwh = 0.0

    def kpis(self) -> dict[str, float]:
        peak = max(self.peak_15min_import_kw, self._interval_kwh / 0.25)  # open interval counts
        energy_cost = self.import_cost - self.export_revenue
        demand_cost = peak * self.tariff.demand_charge_per_kw
        return {
            "import_kwh": self.import_kwh, "export_kwh": self.export_kwh, "pv_kwh": self.pv_kwh,
            "pv_available_kwh": self.pv_available_kwh,
            "pv_curtailed_kwh": self.pv_available_kwh - self.pv_kwh, "load_kwh": self.load_kwh,
            "charge_kwh": self.charge_kwh, "discharge_kwh": self.discharge_kwh,
            "import_cost": self.import_cost, "export_revenue": self.export_revenue,
            "energy_cost": energy_cost, "peak_15min_import_kw": peak, "demand_cost": demand_cost,
            "total_cost": energy_cost + demand_cost, "max_import_kw": self.max_import_kw,
            "max_export_kw": self.max_export_kw,
        }


@dataclass
class _Endpoint:
    """One listening socket (host, port) serving one or more unit ids."""

    host: str
    port: int
    devices: list[SimulatedDevice]
    server: ModbusTcpServer | None = None


class SimSite:
    """`truth` (a scenario's `hil.scenario.Truth`, optional) replaces the devices' sim
    profiles: its PV series is shared among the inverters by rating, its load among the
    load meters by `sim.day_kw` (or is the PCC meter's hidden load), and its prices make
    the bill. `on_substep(sample, dt_s)`, when set, sees every physics sub-step."""

    def __init__(
        self, config: Config, clock: Clock | None = None, speed: float | None = None,
        truth=None,
    ) -> None:
        self.config = config
        self.clock = clock or Clock(config.hil.start, speed or config.hil.speed)
        self.tz = ZoneInfo(config.site.timezone)
        self.truth = truth
        self.on_substep: Callable[[Sample, float], None] | None = None
        self._range_kw = self._meter_range_kw(config)
        if truth is not None:  # room for the scenario's load beyond what the profiles allow
            metered = [d for d in config.devices if d.role == "meter" and d.measures == "load"]
            allowed = sum(max(d.sim.base_kw * 1.2, d.sim.day_kw) * 1.05
                          for d in metered or [config.grid_meter])
            self._range_kw += max(0.0, float(truth.load_kw.max()) * 1.05 - allowed)
        self.devices: dict[str, SimulatedDevice] = {
            d.id: build(d, self._range_kw) for d in config.devices
        }
        loads = [d for d in config.devices if isinstance(d, MeterDevice) and d.measures == "load"]
        # Without a load submeter the building still consumes: the PCC meter's profile is the load.
        self._hidden_load = None if loads else config.grid_meter.sim
        pvs = [d for d in config.devices if d.role == "pv"]
        self._pv_share = {d.id: d.rated_kw / sum(p.rated_kw for p in pvs) for d in pvs}
        day = sum(d.sim.day_kw for d in loads)
        self._load_share = {d.id: d.sim.day_kw / day if day else 1 / len(loads) for d in loads}
        if not loads:
            self._load_share = {config.grid_meter.id: 1.0}
        self._endpoints: dict[tuple[str, int], _Endpoint] = {}
        self._buses: dict[str, RtuBus] = {}  # serial port -> the RTU units on that bus
        self._dlt645: dict[tuple, MeterBus] = {}  # gateway or serial port -> its meters
        for d in config.devices:
            dev = self.devices[d.id]
            units = dev.bus_units() if isinstance(dev, MapSimDevice) else [dev]  # PCS + BMS
            if d.protocol in RTU_PROTOCOLS and d.serial is not None:
                for unit in units:
                    self._buses.setdefault(d.serial.port, RtuBus(d.serial)).add(unit)
                continue
            if isinstance(dev, Dlt645SimMeter):
                self._dlt645.setdefault(meter_bus_key(d), meter_bus(d)).add(dev)
                continue
            ep = self._endpoints.setdefault((d.host, d.port), _Endpoint(d.host, d.port, []))
            for unit in units:
                ep.devices.append(unit)
                unit.on_drop = lambda ep=ep: self._drop_connections(ep)
        if clash := self._dlt645.keys() & self._endpoints.keys():
            host, port = sorted(clash)[0]
            raise ValueError(f"{host}:{port} serves both Modbus and DL/T 645 devices; one port "
                             "speaks one protocol: give them different ports")
        self.t_s = 0.0
        self.ledger = Ledger(config.tariff)
        self.ledger_nb = Ledger(config.tariff)  # counterfactual: same site, no battery
        self.samples: list[Sample] = []
        self.last = Sample(self.clock.start, 0.0, 0.0, 0.0, 0.0, 0.0, self._soc())
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _meter_range_kw(config: Config) -> float:
        """Upper bound of any meter reading, to choose the meters' W_SF."""
        total = 0.0
        loads = [d for d in config.devices if d.role == "meter" and d.measures == "load"]
        for d in config.devices:
            if d.role == "pv":
                total += d.rated_kw
            elif d.role == "battery":
                total += max(d.max_charge_kw, d.max_discharge_kw)
            elif d.role in ("load", "dcdc"):  # a DC bus converter draws up to its rating
                total += d.rated_kw
        # Only the profiles that really draw power count: the load meters', or the PCC
        # meter's when it stands in for the building load.
        for d in loads or [config.grid_meter]:
            total += max(d.sim.base_kw * 1.2, d.sim.day_kw) * 1.05  # ripple headroom
        return total

    # -- physics ------------------------------------------------------------------------
    def step_to(self, t_s: float) -> None:
        """Integrate up to simulated second `t_s`, in sub-steps that end on whole seconds."""
        while self.t_s < t_s - 1e-9:
            t_next = min(t_s, math.floor(self.t_s + 1e-9) + 1.0)
            self._substep(t_next - self.t_s)
            minute_before = math.floor(self.t_s / 60 + 1e-9)
            self.t_s = t_next
            if math.floor(self.t_s / 60 + 1e-9) > minute_before:
                self.samples.append(self.last)

    def _soc(self) -> float | None:
        bats = [d.battery for d in self.devices.values() if d.role == "battery"]
        cap = sum(b.capacity_kwh for b in bats)
        return sum(b.soc_pct * b.capacity_kwh for b in bats) / cap if bats else None

    def _substep(self, dt_s: float) -> None:
        t_utc = self.clock.start + timedelta(seconds=self.t_s)
        t_local = t_utc.astimezone(self.tz)
        site = self.config.site
        series = None
        if self.truth is not None:
            pv_t, load_t = self.truth.pv_at(t_utc), self.truth.load_at(t_utc)
            series = {k: f * pv_t for k, f in self._pv_share.items()}
            series.update({k: f * load_t for k, f in self._load_share.items()})
        env = Env(self.t_s, t_utc, t_local, site.latitude, site.longitude, series)
        pv = pv_av = bess = other = 0.0
        for d in self.devices.values():
            if d.balancing:
                continue
            kw = d.step(env, dt_s)
            if d.role == "pv":  # by role, so map-driven devices count like SunSpec ones
                pv += kw
                pv_av += d.available_kw
            elif d.role == "battery":
                bess += kw
            else:
                other += kw  # loads and future consumers: − consume
        load = -other
        if self._hidden_load is not None:
            s = self._hidden_load
            load += (series[self.config.grid_meter.id] if series is not None
                     else load_kw(s.profile, t_local, s.base_kw, s.day_kw))
        grid = load - pv - bess
        for d in self.devices.values():
            if d.balancing:
                d.measure(grid, dt_s)
        t_end = t_utc + timedelta(seconds=dt_s)
        price = (self.truth.price_at(t_utc) if self.truth is not None
                 else self.config.tariff.price_at(t_local.time()))
        self.ledger.add(t_utc, price, dt_s, load, pv, pv_av, bess, grid)
        pv_nb, limit = pv_av, self.config.control.export_limit_kw
        if limit is not None and load - pv_nb < -limit:
            pv_nb = max(0.0, load + limit)  # ideal curtailment to the export limit
        self.ledger_nb.add(t_utc, price, dt_s, load, pv_nb, pv_av, 0.0, load - pv_nb)
        self.last = Sample(t_end, load, pv, pv_av, bess, grid, self._soc())
        if self.on_substep is not None:
            self.on_substep(self.last, dt_s)

    async def _run(self) -> None:
        tick = max(0.005, min(0.05, self.clock.wall_s(1.0)))
        try:
            while True:
                self.step_to(self.clock.elapsed_s())
                await asyncio.sleep(tick)
        except Exception:  # CancelledError is a BaseException and passes through
            log.exception("site %s: HIL physics stopped", self.config.site.id)
            raise

    # -- serving ------------------------------------------------------------------------
    async def _listen(self, ep: _Endpoint) -> None:
        server = ModbusTcpServer([d.sim_device() for d in ep.devices], address=(ep.host, ep.port))
        ids = ", ".join(d.id for d in ep.devices)
        try:
            await server.serve_forever(background=True)  # returns once create_server is done
        except RuntimeError:
            raise OSError(
                f"HIL cannot listen on {ep.host}:{ep.port} for device(s) {ids}; "
                "is the port taken (another HIL, a real device server)? change `port` in the config"
            ) from None
        if not (server.transport and server.transport.is_serving()):
            raise OSError(f"HIL listener on {ep.host}:{ep.port} ({ids}) is not serving")
        ep.server = server
        log.info("HIL serving %s on %s:%d", ids, ep.host, ep.port)

    async def start(self) -> None:
        """Listen on every endpoint (listening when this returns), then run physics."""
        try:
            for ep in self._endpoints.values():
                await self._listen(ep)
            for bus in self._buses.values():
                await bus.start()
            for gateway in self._dlt645.values():
                await gateway.start()
        except OSError:
            await self.stop()
            raise
        self.step_to(self.clock.elapsed_s())
        self._task = asyncio.create_task(self._run(), name=f"hil-physics-{self.config.site.id}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for ep in self._endpoints.values():
            if ep.server:
                await ep.server.shutdown()
                ep.server = None
        for bus in self._buses.values():
            await bus.close()  # unplugs a virtual cable too
        for gateway in self._dlt645.values():
            await gateway.close()

    def _device(self, device_id: str) -> SimulatedDevice:
        try:
            return self.devices[device_id]
        except KeyError:
            known = ", ".join(self.devices)
            raise KeyError(f"no simulated device {device_id!r}; known: {known}") from None

    def _bus(self, dev: SimulatedDevice) -> RtuBus | None:
        serial = dev.cfg.serial
        return self._buses.get(serial.port) if serial and dev.cfg.protocol in RTU_PROTOCOLS else None

    def _gateway(self, dev: SimulatedDevice) -> MeterBus | None:
        return self._dlt645.get(meter_bus_key(dev.cfg)) if isinstance(
            dev, Dlt645SimMeter) else None

    def _endpoint(self, dev: SimulatedDevice) -> _Endpoint:
        return self._endpoints[(dev.cfg.host, dev.cfg.port)]

    async def stop_device(self, device_id: str) -> None:
        """Fault injection: the device stops answering. Its socket closes (connections drop,
        new ones are refused) once every unit on that endpoint is stopped; until then the
        endpoint answers that unit with GATEWAY_NO_RESPONSE, like a gateway with a dead
        slave. On an RTU bus the serial port closes once every unit on it is stopped (the
        bus goes silent). Physics and revert timers keep running."""
        dev = self._device(device_id)
        dev.online = False
        if bus := self._bus(dev):
            if not any(d.online for d in bus.devices):
                await bus.stop()
            return
        if gateway := self._gateway(dev):  # a stopped meter is silent; the last closes the port
            if not any(m.online for m in gateway.meters):
                await gateway.stop()
            return
        ep = self._endpoint(dev)
        if ep.server and not any(d.online for d in ep.devices):
            await ep.server.shutdown()
            ep.server = None

    async def start_device(self, device_id: str) -> None:
        dev = self._device(device_id)
        dev.online = True
        if bus := self._bus(dev):
            await bus.start()
            return
        if gateway := self._gateway(dev):
            await gateway.start()
            return
        ep = self._endpoint(dev)
        if ep.server is None:
            await self._listen(ep)

    def _tcp_endpoint(self, dev: SimulatedDevice, what: str) -> _Endpoint:
        if self._bus(dev) or self._gateway(dev):
            raise ValueError(f"device {dev.id}: {what} needs a Modbus TCP device")
        return self._endpoint(dev)

    @staticmethod
    def _drop_connections(ep: _Endpoint) -> None:
        """Close every client connection of the endpoint's server; it keeps listening."""
        if ep.server is None:
            return
        for handler in list(ep.server.active_connections.values()):
            handler.close()

    def inject(self, device_id: str, fault: Fault) -> None:
        """Fault injection on the wire (see `hil.devices.Fault`): slow answers, Modbus
        exception replies, or a dropped TCP connection on the next request. Replaces any
        fault already injected on that device; `clear` ends it. Physics keeps running."""
        dev = self._device(device_id)
        if fault.drop:
            self._tcp_endpoint(dev, "a dropped connection")
        if isinstance(dev, Dlt645SimMeter):
            raise ValueError(f"device {device_id}: fault injection needs a Modbus device")
        dev.fault = fault

    def clear(self, device_id: str) -> None:
        """End an injected fault: the device answers normally again."""
        self._device(device_id).fault = None

    async def restart_with(self, device_id: str, models: list[int] | tuple[int, ...],
                           keep_settings: bool = False) -> None:
        """Fault injection: the device restarts with another SunSpec model chain. Its server
        closes (client connections drop) and reopens on the same port with the new layout;
        other units on that endpoint restart with it, their chains unchanged. Unless
        `keep_settings`, the device comes back with its power-on control settings (limits
        disabled, as a real restart loses volatile setpoints); physics state is kept."""
        dev = self._device(device_id)
        ep = self._tcp_endpoint(dev, "a restart with another model chain")
        dev.check_chain(models)  # before the server goes down: a bad chain changes nothing
        if ep.server is not None:
            await ep.server.shutdown()
            ep.server = None
        if not keep_settings:
            fresh = build(dev.cfg, self._range_kw)
            dev.rw = {m: dict(v) for m, v in fresh.rw.items()}
        dev.rechain(models)
        if any(d.online for d in ep.devices):
            await self._listen(ep)

    # -- the site before the run ---------------------------------------------------------
    def history_kw(self, start: datetime, end: datetime, step_s: int = 900) -> dict[str, np.ndarray]:
        """Mean kW per `step_s` from `start` to `end` of this site's own physics with no
        battery at work and every switchable load in its default state: `pv_kw` available PV
        (clear sky × cloud factor, capped by rating), `load_kw` what the controller records
        as load (the load meters, or the whole consumption where the PCC meter stands in for
        them), `grid_kw` the balance (+ import). What a controller on this site would have
        metered on those days, so a run can start with a history to forecast from. Fresh
        copies of the devices from their sim profiles (not a scenario's series), sampled at
        the middle of every simulated minute: the running site is not touched."""
        if step_s <= 0 or (60 % step_s and step_s % 60):
            raise ValueError(f"step_s must divide a minute or be whole minutes, got {step_s}")
        sub = min(60, step_s)
        n = int((end - start).total_seconds() // step_s)
        per = step_s // sub
        devices = [build(d, self._range_kw) for d in self.config.devices]
        site, s = self.config.site, self._hidden_load
        pv, load, grid = (np.zeros(n * per) for _ in range(3))
        for i in range(n * per):
            t_utc = start + timedelta(seconds=(i + 0.5) * sub)
            t_local = t_utc.astimezone(self.tz)
            env = Env(i * sub, t_utc, t_local, site.latitude, site.longitude)
            used = metered = 0.0
            for d in devices:
                if d.balancing or d.role == "battery":
                    continue
                kw = d.step(env, sub)
                if d.role == "pv":
                    pv[i] += d.available_kw
                else:
                    used -= kw
                    metered -= kw if d.role == "meter" else 0.0
            if s is not None:
                used += load_kw(s.profile, t_local, s.base_kw, s.day_kw)
            load[i] = used if s is not None else metered
            grid[i] = used - pv[i]
        return {k: v.reshape(n, per).mean(axis=1) for k, v in
                (("pv_kw", pv), ("load_kw", load), ("grid_kw", grid))}

    # -- reporting ------------------------------------------------------------------------
    def state(self, device_id: str) -> dict[str, float | int | None]:
        """True device state (not via Modbus) for tests: power_kw, soc_pct, limit_kw ..."""
        dev = self._device(device_id)
        return {**dev.state(), "online": dev.online}

    def kpis(self) -> dict[str, object]:
        real, nb = self.ledger.kpis(), self.ledger_nb.kpis()
        return {
            "sim_hours": self.t_s / 3600,
            "currency": self.config.tariff.currency,
            "with_battery": real,
            "no_battery": nb,
            "savings": nb["total_cost"] - real["total_cost"],
        }

    def status_line(self) -> str:
        s = self.last
        soc = "-" if s.soc_pct is None else f"{s.soc_pct:.1f}%"
        k = self.ledger
        return (
            f"{s.t.astimezone(self.tz):%Y-%m-%d %H:%M} load {s.load_kw:.1f} pv {s.pv_kw:.1f}/"
            f"{s.pv_available_kw:.1f} bess {s.bess_kw:+.1f} soc {soc} grid {s.grid_kw:+.1f} kW | "
            f"imp {k.import_kwh:.1f} exp {k.export_kwh:.1f} kWh "
            f"cost {k.import_cost - k.export_revenue:.2f}"
        )


async def run_hil(config: Config, speed: float | None, stop: asyncio.Event) -> None:
    """Serve the simulated site until `stop` is set; one status line per simulated 15 min."""
    site = SimSite(config, speed=speed)
    await site.start()
    log.info("HIL %s started at %s, speed ×%g",
             config.site.id, site.clock.start.isoformat(), site.clock.speed)
    stopper = asyncio.create_task(stop.wait(), name="hil-stop-wait")
    try:
        next_t = (math.floor(site.t_s / 900) + 1) * 900
        while not stop.is_set():
            wait_s = max(0.0, site.clock.wall_s(next_t - site.clock.elapsed_s()))
            physics = site._task
            waits = {stopper, physics} if physics else {stopper}
            done, _ = await asyncio.wait(waits, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            if physics in done:
                physics.result()  # physics died: surface its exception
            if stopper in done:
                break
            site.step_to(next_t)
            log.info("%s", site.status_line())
            next_t += 900
    finally:
        stopper.cancel()
        await site.stop()
        log.info("HIL %s stopped; KPIs %s", config.site.id, site.kpis())

"""The simulated site: devices stepped on the shared clock, served on loopback Modbus TCP
(DL/T 645 meters through hil/serve/dlt645.py, Modbus RTU units on serial buses), with a
KPI ledger for the real site and for the same site without its battery.

Physics runs in ≤1 s simulated sub-steps aligned on whole simulated seconds, so heartbeats,
revert timers and the per-minute samples fall on the same instants whatever the speed-up; a
breaker operation or a PCS's forming ends a sub-step at its own instant (hil/island.py).
Balance: grid = load − pv − battery (+ import, battery + discharge).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from edge.app.clock import Clock
from edge.config import Config
from hil.config import SimParams, hil_of, sim_of
from hil.devices import build, simulator_for
from hil.devices.base import Env, Fault, SimulatedDevice
from hil.island import Pcc
from hil.ledger import Ledger, Sample
from hil.physics import headroom_kw, load_kw
from hil.serve import dlt645
from hil.serve.clients import Clients
from hil.serve.dlt645 import MeterBus, meter_bus, meter_bus_key
from hil.serve.rtu import RTU_PROTOCOLS, RtuBus
from hil.serve.tcp import Endpoint

log = logging.getLogger(__name__)


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
        hil = hil_of(config)
        self.clock = clock or Clock(hil.start, speed or hil.speed)
        self.tz = ZoneInfo(config.site.timezone)
        self.truth = truth
        self.on_substep: Callable[[Sample, float], None] | None = None
        kinds = {d.id: simulator_for(d) for d in config.devices}
        # The building-load profiles: the load meters', or the PCC meter's when it stands in
        # for them (without a load submeter the building still consumes).
        loads = {d.id: p for d in config.devices if (p := kinds[d.id].building_load(d)) is not None}
        self._hidden_load = None if loads else sim_of(config.grid_meter)
        profiles = list(loads.values()) or [self._hidden_load]
        self._range_kw = self._meter_range_kw(config, kinds, profiles)
        if truth is not None:  # room for the scenario's load beyond what the profiles allow
            allowed = sum(headroom_kw(p) for p in profiles)
            self._range_kw += max(0.0, float(truth.load_kw.max()) * 1.05 - allowed)
        self.devices: dict[str, SimulatedDevice] = {
            d.id: kinds[d.id](d, self._range_kw) for d in config.devices
        }
        pvs = {d.id: kinds[d.id].rating_kw(d) for d in config.devices
               if kinds[d.id].account == "pv"}
        self._pv_share = {k: kw / sum(pvs.values()) for k, kw in pvs.items()}
        self.pcc = Pcc(self.devices)
        self.pcc.attach(self.now_s)
        day = sum(p.day_kw for p in loads.values())
        self._load_share = {k: p.day_kw / day if day else 1 / len(loads) for k, p in loads.items()}
        if not loads:
            self._load_share = {config.grid_meter.id: 1.0}
        self._endpoints: dict[tuple[str, int], Endpoint] = {}
        self._buses: dict[str, RtuBus] = {}  # serial port -> the RTU units on that bus
        self._dlt645: dict[tuple, MeterBus] = {}  # gateway or serial port -> its meters
        self._clients = Clients()  # units that connect out (OCPP charge points)
        for d in config.devices:
            dev = self.devices[d.id]
            if dev.connects_out:
                self._clients.add(dev)
                continue
            units = dev.bus_units()  # a PCS with its BMS: two
            if d.protocol in RTU_PROTOCOLS and d.serial is not None:
                for unit in units:
                    self._buses.setdefault(d.serial.port, RtuBus(d.serial)).add(unit)
                continue
            if d.protocol in dlt645.PROTOCOLS:
                self._dlt645.setdefault(meter_bus_key(d), meter_bus(d)).add(dev)
                continue
            ep = self._endpoints.setdefault((d.host, d.port), Endpoint(d.host, d.port, []))
            for unit in units:
                ep.devices.append(unit)
                unit.on_drop = ep.drop_connections
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
    def _meter_range_kw(config: Config, kinds: dict[str, type[SimulatedDevice]],
                        profiles: list[SimParams]) -> float:
        """Upper bound of any meter reading, to choose the meters' W_SF: every unit's rating,
        and the building-load profiles that really draw power."""
        total = 0.0
        for d in config.devices:
            total += kinds[d.id].rating_kw(d)
        for p in profiles:
            total += headroom_kw(p)
        return total

    # -- physics ------------------------------------------------------------------------
    def step_to(self, t_s: float) -> None:
        """Integrate up to simulated second `t_s`, in sub-steps that end on whole seconds."""
        while self.t_s < t_s - 1e-9:
            self.pcc.act(self.t_s)
            t_next = min(t_s, math.floor(self.t_s + 1e-9) + 1.0, self.pcc.due_after(self.t_s))
            self._substep(t_next - self.t_s)
            minute_before = math.floor(self.t_s / 60 + 1e-9)
            self.t_s = t_next
            if math.floor(self.t_s / 60 + 1e-9) > minute_before:
                self.samples.append(self.last)

    def now_s(self) -> float:
        """The simulated second now, the physics brought up to it."""
        self.step_to(self.clock.elapsed_s())
        return self.t_s

    def _soc(self) -> float | None:
        bats = [b for d in self.devices.values() if (b := d.stored()) is not None]
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
        flows = {"pv": 0.0, "battery": 0.0, "load": 0.0}  # by ledger account; loads − consume
        pv_av = 0.0
        for d in self.devices.values():
            if d.balancing:
                continue
            flows[d.account] += d.step(env, dt_s)
            pv_av += d.available_kw
        pv, bess, load = flows["pv"], flows["battery"], -flows["load"]
        if self._hidden_load is not None:
            s = self._hidden_load
            load += (series[self.config.grid_meter.id] if series is not None
                     else load_kw(s.profile, t_local, s.base_kw, s.day_kw))
        pv, bess, load, grid = self.pcc.settle(pv, bess, load, dt_s)
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
    async def start(self) -> None:
        """Listen on every endpoint (listening when this returns), run physics, start clients."""
        try:
            for ep in self._endpoints.values():
                await ep.listen()
            for bus in self._buses.values():
                await bus.start()
            for gateway in self._dlt645.values():
                await gateway.start()
        except OSError:
            await self.stop()
            raise
        self.step_to(self.clock.elapsed_s())
        self._task = asyncio.create_task(self._run(), name=f"hil-physics-{self.config.site.id}")
        self._clients.start(self.config)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._clients.stop()
        for ep in self._endpoints.values():
            await ep.shutdown()
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
        return (self._dlt645.get(meter_bus_key(dev.cfg))
                if dev.cfg.protocol in dlt645.PROTOCOLS else None)

    def _endpoint(self, dev: SimulatedDevice) -> Endpoint:
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
        ep = self._endpoints.get((dev.cfg.host, dev.cfg.port))  # None: a unit that connects out
        if ep is not None and not any(d.online for d in ep.devices):
            await ep.shutdown()

    async def start_device(self, device_id: str) -> None:
        dev = self._device(device_id)
        dev.online = True
        if bus := self._bus(dev):
            await bus.start()
            return
        if gateway := self._gateway(dev):
            await gateway.start()
            return
        ep = self._endpoints.get((dev.cfg.host, dev.cfg.port))  # None: it reconnects itself
        if ep is not None and ep.server is None:
            await ep.listen()

    def _tcp_endpoint(self, dev: SimulatedDevice, what: str) -> Endpoint:
        if self._bus(dev) or self._gateway(dev):
            raise ValueError(f"device {dev.id}: {what} needs a Modbus TCP device")
        return self._endpoint(dev)

    def inject(self, device_id: str, fault: Fault) -> None:
        """Fault injection on the wire (see `hil.devices.base.Fault`): slow answers, Modbus
        exception replies, or a dropped TCP connection on the next request. Replaces any
        fault already injected on that device; `clear` ends it. Physics keeps running."""
        dev = self._device(device_id)
        if fault.drop:
            self._tcp_endpoint(dev, "a dropped connection")
        if self._gateway(dev) is not None:
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
        await ep.shutdown()
        if not keep_settings:
            fresh = build(dev.cfg, self._range_kw)
            dev.rw = {m: dict(v) for m, v in fresh.rw.items()}
        dev.rechain(models)
        if any(d.online for d in ep.devices):
            await ep.listen()

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
                if d.balancing or d.account == "battery":
                    continue
                kw = d.step(env, sub)
                if d.account == "pv":
                    pv[i] += d.available_kw
                else:
                    used -= kw
                    metered -= kw if d.building_load(d.cfg) is not None else 0.0
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
        return {"sim_hours": self.t_s / 3600, "currency": self.config.tariff.currency,
                "with_battery": real, "no_battery": nb,
                "savings": nb["total_cost"] - real["total_cost"], "island": self.pcc.kpis()}

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


async def run_hil(config: Config, clock: Clock, stop: asyncio.Event) -> None:
    """Serve the simulated site until `stop` is set; one status line per simulated 15 min."""
    site = SimSite(config, clock)
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

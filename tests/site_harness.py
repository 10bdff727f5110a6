"""A simulated building (HIL on loopback Modbus, in its own process) plus the controller,
on one simulated clock, for integration tests. Everything crosses real sockets: Modbus TCP
to the HIL devices, MQTT to a real broker, SQLite on disk."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
from pathlib import Path
from typing import Any

import yaml
from conftest import Subscriber, free_port, wait_for

from edge import config as config_mod
from edge.app.clock import Clock
from edge.app.daemon import Daemon
from edge.config import Config
from edge.plan.remote import PlannerWorker
from hil.process import SiteProcess

ROOT = Path(__file__).resolve().parents[1]


def site_dict(tmp_path: Path, broker_port: int, **control: Any) -> dict:
    """The demo site on free ports, with a private state dir and fast, exact control."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs/demo.yaml").read_text()))
    data.pop("planner", None)  # rule-based control; planner tests switch it on themselves
    for dev in data["devices"]:
        dev["port"] = free_port()
        dev["timeout_s"] = 0.5
        if dev["role"] in ("pv", "battery"):
            dev["ramp_kw_per_s"] = 1000  # devices follow a setpoint within one physics step
            dev["revert_s"] = 60
    data["control"].update({"deadband_kw": 0.1, **control})
    data["mqtt"].update({"port": broker_port, "telemetry_s": 5})
    data["storage"]["dir"] = str(tmp_path / "state")
    return data


def device(data: dict, device_id: str) -> dict:
    return next(d for d in data["devices"] if d["id"] == device_id)


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Running:
    def __init__(self, cfg: Config, site: SiteProcess, daemon: Daemon, sub: Subscriber) -> None:
        self.cfg, self.site, self.daemon, self.sub = cfg, site, daemon, sub
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(daemon.run(self._stop))

    async def stop_daemon(self) -> None:
        """Shut the controller down (it writes the safe state); the site keeps running."""
        self._stop.set()
        await asyncio.gather(self.task, return_exceptions=True)

    @property
    def clock(self) -> Clock:
        return self.site.clock

    def telemetry(self) -> list[dict]:
        return [d for topic, d in self.sub.documents() if topic.endswith("/telemetry")]

    async def until_sim(self, sim_s: float, timeout: float = 120.0) -> None:
        """Wait until the shared clock has reached `sim_s` simulated seconds."""
        await asyncio.wait_for(self._until(sim_s), timeout)

    async def _until(self, sim_s: float) -> None:
        while self.clock.elapsed_s() < sim_s:
            self.site.check()
            await asyncio.sleep(0.05)


# Wall-clock room every revert timer gets between re-writes. The HIL runs in its own
# process, so its physics and servers keep pace, but the controller shares the test's event
# loop: a 0.15 s stall of it on a loaded CI machine is 36 simulated seconds at x240, long
# enough for a 60 s timer to expire between two re-writes (they fall due after half of it).
# A real controller does not stall for half a minute, so the tests give the timers the room
# a real one has and measure control, not machine load.
STALL_ROOM_WALL_S = 1.0


def _revert_room(data: dict, speed: float) -> dict:
    margin = data["control"].get("rewrite_margin", 0.5)
    floor = math.ceil(speed * STALL_ROOM_WALL_S / (1.0 - margin))
    for dev in data["devices"]:
        if "revert_s" in dev and dev["revert_s"] < floor:
            dev["revert_s"] = floor
    return data


@contextlib.asynccontextmanager
async def running_site(data: dict, broker, speed: float, in_process_planner: bool = False):
    """`in_process_planner`: plan in the daemon's process, as demo and simulate do, for tests
    whose subject is how the cycle follows a plan round by round at a high speed-up."""
    cfg: Config = config_mod.parse(_revert_room(copy.deepcopy(data), speed))
    async with SiteProcess(cfg, speed) as site:
        daemon = Daemon(cfg, site.clock, in_process_planner=in_process_planner)
        # The platform listens to every topic of the site: msg_id is one sequence across them.
        sub = Subscriber(broker.host, broker.port, daemon.link.topic("+"), persistent=True)
        sub.subscribed.wait(10)
        run = Running(cfg, site, daemon, sub)
        try:
            await asyncio.wait_for(daemon.ready.wait(), 30)
            if isinstance(daemon.planner, PlannerWorker):
                # The worker's imports (pvlib, pandas, scipy, HiGHS) take 1-3 s of wall time:
                # minutes of simulated time at these speeds, seconds on a real site.
                await wait_for(lambda: daemon.planner.last is not None, 60,
                               "the planner worker's first plan")
            yield run
        finally:
            await run.stop_daemon()
            sub.close()
    if not run.task.cancelled() and run.task.exception():
        raise run.task.exception()

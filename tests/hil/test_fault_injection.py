"""Fault injection: what the field does to the real controller. The daemon's
ControlCycle, with the real drivers, runs against the HIL site on loopback Modbus TCP while
devices answer slowly, answer with Modbus exceptions, drop the connection, or restart with
another SunSpec model chain.

Simulated time is a manual clock shared by the site and the cycle: each `step` advances it
one control period, steps the physics, then runs one real cycle (poll -> decide -> write).
Nothing asserts timing: conditions are awaited, cycle after cycle, up to a generous timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
import yaml
from conftest import free_port
from fakes import ManualClock

from drivers.base import Quality
from edge.app.devices import build_devices
from edge.config import Config, parse
from edge.control import kernel as dispatch
from edge.cycle import ControlCycle, Decision
from hil.config import hil_of
from hil.devices.base import Fault
from hil.site import SimSite

ROOT = Path(__file__).resolve().parents[2]
KERNEL = dispatch.load_kernel()
NOON = "2026-06-22T12:00:00+08:00"  # PV producing, office load on, export limit 0


def site_config(tmp_path: Path) -> Config:
    """The demo site on free loopback ports, devices following setpoints within a step."""
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    for dev in data["devices"]:
        dev["port"] = free_port()
        dev["timeout_s"] = 0.5  # below the cycle's poll budget (0.8 s at 1 s cycles)
        if dev["role"] in ("pv", "battery"):
            dev["ramp_kw_per_s"] = 1000
            dev["revert_s"] = 20  # re-written every 10 s (rewrite_margin 0.5)
    data["control"]["deadband_kw"] = 0.1
    data["hil"]["start"] = NOON
    data["storage"]["dir"] = str(tmp_path / "state")
    return parse(data)


class Rig:
    def __init__(self, cfg: Config, site: SimSite, cycle: ControlCycle, clock: ManualClock) -> None:
        self.cfg, self.site, self.cycle, self.clock = cfg, site, cycle, clock
        self.errors: dict[str, list[str]] = {d.id: [] for d in cfg.devices}  # per failed poll
        self.qualities: dict[str, list[Quality]] = {d.id: [] for d in cfg.devices}

    async def step(self) -> Decision:
        self.clock.t += self.cfg.control.cycle_s
        self.site.step_to(self.clock.t)
        before = {i: h.errors for i, h in self.cycle.health.items()}
        decision = await self.cycle.step()
        for dev_id, h in self.cycle.health.items():
            if h.errors > before[dev_id]:
                self.errors[dev_id].append(h.last_error)
            self.qualities[dev_id].append(self.cycle.image.devices[dev_id].quality)
        return decision

    async def until(self, predicate, what: str, timeout: float = 30.0) -> None:
        """Step cycles until `predicate()` holds after one. Cycles are paced on the cycle's
        wall period as in `ControlCycle.run`, so the drivers' wall-clock timeouts and
        reconnect backoff relate to cycles as they do in the daemon."""
        deadline = time.monotonic() + timeout
        while True:
            started = time.monotonic()
            await self.step()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(max(0.0, self.cycle.period_wall_s - (time.monotonic() - started)))

    def quality(self, dev_id: str) -> Quality:
        return self.cycle.image.devices[dev_id].quality

    def reading(self, dev_id: str, key: str) -> float:
        return self.cycle.health[dev_id].reading.values[key]

    def pv_limit_landed(self) -> bool:
        """The PV inverter holds the limit the controller decided (0.1 % WMaxLimPct steps)."""
        held = self.site.state("pv1")["limit_kw"]
        want = self.cycle.decision.pv_limit_kw["pv1"]
        return held is not None and abs(held - want) <= self.cfg.control.deadband_kw + 0.15

    def all_good(self) -> bool:
        return all(s.quality is Quality.GOOD for s in self.cycle.image.devices.values())


@contextlib.asynccontextmanager
async def rig(tmp_path: Path):
    cfg = site_config(tmp_path)
    clock = ManualClock(hil_of(cfg).start)
    site = SimSite(cfg, clock)
    await site.start()
    devices = build_devices(cfg)
    cycle = ControlCycle(cfg, devices, KERNEL, clock)
    r = Rig(cfg, site, cycle, clock)
    try:
        await r.until(lambda: r.all_good() and r.pv_limit_landed(), "site under control")
        yield r
    finally:
        for d in devices.values():
            await d.close()
        await site.stop()


async def test_slow_pcc_meter_goes_stale_site_takes_safe_state_then_recovers(tmp_path):
    async with rig(tmp_path) as r:
        pv = next(p for p in r.cfg.devices if p.id == "pv1")
        r.site.inject("pcc", Fault(delay_s=2.0))  # beyond the client timeout and poll budget
        await r.until(lambda: r.quality("pcc") is Quality.STALE, "PCC meter stale")
        assert r.qualities["pcc"][-2:] == [Quality.GOOD, Quality.STALE]  # 2nd failed poll
        assert r.cycle.health["pcc"].failed_polls == r.cfg.control.stale_after_cycles
        assert r.cycle.decision.mode == "safe"
        # The safe state is written to the devices that still answer.
        assert r.site.state("pv1")["limit_kw"] == pytest.approx(r.cfg.pv_safe_kw(pv), abs=0.15)
        assert r.site.state("bess1")["command_kw"] == pytest.approx(0.0, abs=0.1)
        assert r.cycle.health["pcc"].errors >= 2

        r.site.clear("pcc")
        await r.until(lambda: r.quality("pcc") is Quality.GOOD and r.cycle.decision.mode != "safe",
                      "PCC meter good and control back")
        await r.until(r.pv_limit_landed, "PV limit follows control again")
        assert r.reading("pcc", "power_kw") == pytest.approx(r.site.state("pcc")["power_kw"],
                                                             abs=0.5)


@pytest.mark.parametrize("code, name", [(6, "DEVICE_BUSY"), (4, "DEVICE_FAILURE")])
async def test_modbus_exception_replies_stale_errors_counted_then_recover(tmp_path, code, name):
    async with rig(tmp_path) as r:
        errors_before = r.cycle.health["bess1"].errors
        r.site.inject("bess1", Fault(exception=code))
        await r.until(lambda: r.quality("bess1") is Quality.STALE, "battery stale")
        h = r.cycle.health["bess1"]
        assert h.errors - errors_before >= r.cfg.control.stale_after_cycles
        assert f"exception_code={code}" in h.last_error or name in h.last_error, h.last_error
        assert r.cycle.decision.bess_kw["bess1"] == 0.0  # safe_power_kw
        assert r.quality("pcc") is Quality.GOOD and r.cycle.decision.mode != "safe"

        r.site.clear("bess1")
        await r.until(lambda: r.quality("bess1") is Quality.GOOD, "battery good")
        assert r.reading("bess1", "soc_pct") == pytest.approx(r.site.state("bess1")["soc_pct"],
                                                              abs=0.1)
        await r.until(
            lambda: r.site.state("bess1")["command_kw"] == pytest.approx(
                r.cycle.decision.bess_kw["bess1"], abs=r.cfg.control.deadband_kw + 0.1),
            "battery follows control again")


async def test_dropped_connection_reconnects_and_values_good_again(tmp_path):
    async with rig(tmp_path) as r:
        meter = r.site.devices["pcc"]
        r.site.inject("pcc", Fault(drop=True))
        await r.until(lambda: meter.drops == 1, "the server dropped the connection")
        assert r.errors["pcc"], "the poll hit by the drop failed"
        assert r.site.devices["pcc"].fault is None  # one shot
        await r.until(lambda: r.cycle.health["pcc"].failed_polls == 0, "PCC read again")
        # A few failed polls at most: the request in flight, then the reconnect backoff.
        assert 1 <= len(r.errors["pcc"]) <= 3, r.errors["pcc"]
        assert r.quality("pcc") is Quality.GOOD
        assert r.reading("pcc", "power_kw") == pytest.approx(r.site.state("pcc")["power_kw"],
                                                             abs=0.5)
        await r.until(r.pv_limit_landed, "control carries on")


async def test_dropped_connection_while_busy_keeps_the_remaining_fault(tmp_path):
    async with rig(tmp_path) as r:
        r.site.inject("pcc", Fault(exception=6, drop=True))
        await r.until(lambda: r.quality("pcc") is Quality.STALE, "PCC stale")
        assert r.site.devices["pcc"].drops == 1
        assert r.site.devices["pcc"].fault == Fault(exception=6)
        assert r.cycle.decision.mode == "safe"
        r.site.clear("pcc")
        await r.until(lambda: r.quality("pcc") is Quality.GOOD, "PCC good")


async def test_pv_restart_with_moved_model_123_is_rediscovered_and_limit_rewritten(tmp_path):
    async with rig(tmp_path) as r:
        pv = r.cycle.devices["pv1"]
        old_123 = pv.sunspec.models[123]
        # Model 121 now sits before 123: 123 moves; the restart also loses the limit.
        await r.site.restart_with("pv1", [1, 103, 120, 121, 123])
        assert r.site.state("pv1")["limit_kw"] is None
        await r.until(lambda: 121 in pv.describe()["models"], "PV rediscovered")
        assert any("expected model 123, found 121" in e for e in r.errors["pv1"]), r.errors["pv1"]
        assert pv.sunspec.models[123] == old_123 + 2 + 30  # moved by model 121 (30 + header)
        await r.until(lambda: r.quality("pv1") is Quality.GOOD and r.pv_limit_landed(),
                      "PV limit written again after the restart")
        assert r.reading("pv1", "power_kw") == pytest.approx(r.site.state("pv1")["power_kw"],
                                                             abs=0.5)
        assert r.reading("pv1", "rated_kw") == pytest.approx(120.0)


async def test_battery_restart_with_802_moved_before_124_is_rediscovered(tmp_path):
    async with rig(tmp_path) as r:
        bess = r.cycle.devices["bess1"]
        old_124 = bess.sunspec.models[124]
        await r.site.restart_with("bess1", [1, 103, 802, 124])  # 124 moves behind 802
        await r.until(lambda: bess.sunspec.models.get(124, old_124) != old_124
                      and r.quality("bess1") is Quality.GOOD, "battery rediscovered")
        assert any("expected model 124, found 802" in e for e in r.errors["bess1"]), \
            r.errors["bess1"]
        assert bess.sunspec.models[124] == old_124 + 2 + 62  # moved by model 802 (62 + header)
        assert r.reading("bess1", "soc_pct") == pytest.approx(r.site.state("bess1")["soc_pct"],
                                                              abs=0.1)
        # The restart dropped the 124 setpoints (StorCtl_Mod 0); control writes them again.
        await r.until(
            lambda: r.site.state("bess1")["command_kw"] == pytest.approx(
                r.cycle.decision.bess_kw["bess1"], abs=r.cfg.control.deadband_kw + 0.1),
            "battery follows control after the restart")


async def test_battery_restart_losing_802_is_rediscovered(tmp_path):
    async with rig(tmp_path) as r:
        bess = r.cycle.devices["bess1"]
        await r.site.restart_with("bess1", [1, 103, 124])  # loses its BMS model
        await r.until(lambda: 802 not in bess.describe()["models"]
                      and r.quality("bess1") is Quality.GOOD, "battery rediscovered without 802",
                      timeout=10)
        assert r.reading("bess1", "soc_pct") == pytest.approx(r.site.state("bess1")["soc_pct"],
                                                              abs=0.1)  # from 124 ChaState


async def test_fault_api_rejects_what_it_cannot_do(tmp_path):
    cfg = site_config(tmp_path)
    site = SimSite(cfg, ManualClock(hil_of(cfg).start))
    with pytest.raises(ValueError):
        Fault(exception=9)  # not a Modbus exception code
    with pytest.raises(ValueError):
        Fault(delay_s=-1)
    with pytest.raises(KeyError):
        site.inject("nope", Fault(delay_s=1))
    with pytest.raises(ValueError):
        await site.restart_with("pv1", [103, 123])  # no model 1
    assert site.devices["pv1"].models == (1, 103, 120, 123)  # unchanged

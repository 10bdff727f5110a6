"""The control cycle (edge/cycle.py) against a tiny fake site: poll -> image -> control
functions -> compiled kernel -> writes with deadband, re-write before revert timers, and safe
state on stale devices, a lost grid meter, or a crash.

Fakes stand in for drivers here (unit tests only). Time is a manual Clock, so every ramp,
dt and revert timer is set by the test, never by the wall clock.
Signs: grid +import/-export, battery +discharge/-charge, PV >= 0 (docs/domain.md §2).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import pytest
from fakes import ManualClock

from drivers.base import DeviceError, Quality, Reading
from edge.config import parse
from edge.control import bounds as control
from edge.control import kernel as dispatch
from edge.cycle import ControlCycle, Decision

KERNEL = dispatch.load_kernel()  # no fallback: a missing build errors, never skips

BASE = {
    "site": {"id": "test-site"},
    "devices": [
        {"id": "pv1", "host": "127.0.0.1", "role": "pv", "port": 15021, "rated_kw": 120, "revert_s": 60,
         "safe_limit_pct": 25},
        {"id": "bess1", "host": "127.0.0.1", "role": "battery", "port": 15022, "capacity_kwh": 200,
         "max_charge_kw": 60, "max_discharge_kw": 60, "soc_min_pct": 10, "soc_max_pct": 95,
         "ramp_kw_per_s": 1000, "revert_s": 60, "safe_power_kw": 0},
        {"id": "pcc", "host": "127.0.0.1", "role": "meter", "measures": "grid", "port": 15023},
    ],
    "control": {"cycle_s": 1.0, "functions": ["self_consumption", "peak_shaving", "export_limit"],
                "import_limit_kw": 80, "export_limit_kw": 0, "deadband_kw": 0.5,
                "stale_after_cycles": 2, "rewrite_margin": 0.5},
    "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]},
}


@dataclass
class FakeSite:
    """Instant physics: the battery follows its setpoint, PV gives min(available, limit)."""

    load_kw: float = 30.0
    pv_avail_kw: float = 0.0
    soc_pct: float = 50.0
    bess_kw: float = 0.0
    pv_limit_kw: float = 120.0

    pv_kw = property(lambda self: min(self.pv_avail_kw, self.pv_limit_kw))
    grid_kw = property(lambda self: self.load_kw - self.pv_kw - self.bess_kw)


@dataclass
class FakeDevice:
    """Driver stand-in: poll reads the fake site, writes are recorded and applied."""

    id: str
    read: object  # () -> dict[str, float]
    apply: object = None  # (kw) -> None
    offline: bool = False  # every poll raises DeviceError
    write_errors: int = 0  # the next N writes raise DeviceError
    writes: list[tuple[float, int]] = field(default_factory=list)  # successful (kw, revert_s)
    attempts: int = 0

    async def connect(self) -> None: ...
    async def close(self) -> None: ...

    async def poll(self) -> Reading:
        if self.offline:
            raise DeviceError(f"{self.id}: no answer")
        return Reading(self.id, self.read())

    async def _write(self, kw: float, revert_s: int) -> None:
        self.attempts += 1
        if self.write_errors > 0:
            self.write_errors -= 1
            raise DeviceError(f"{self.id}: write rejected")
        self.writes.append((kw, revert_s))
        self.apply(kw)

    write_power = write_limit = _write


@dataclass
class Rig:
    cycle: ControlCycle
    site: FakeSite
    dev: dict[str, FakeDevice]
    clock: ManualClock

    async def step(self, dt_s: float = 1.0) -> Decision:
        self.clock.t += dt_s
        return await self.cycle.step()

    def clear_writes(self) -> None:
        for d in self.dev.values():
            d.writes.clear()


def make(bess: dict | None = None, **site: float) -> Rig:
    """A cycle over pv1 (120 kWp), bess1 (60 kW) and the PCC meter pcc; `bess` overrides
    battery settings, `site` sets FakeSite fields."""
    data = copy.deepcopy(BASE)
    data["devices"][1].update(bess or {})
    s = FakeSite(**site)
    devs = {
        "pv1": FakeDevice("pv1", lambda: {"power_kw": s.pv_kw, "limit_kw": s.pv_limit_kw},
                          lambda kw: setattr(s, "pv_limit_kw", kw)),
        "bess1": FakeDevice("bess1", lambda: {"power_kw": s.bess_kw, "soc_pct": s.soc_pct},
                            lambda kw: setattr(s, "bess_kw", kw)),
        "pcc": FakeDevice("pcc", lambda: {"power_kw": s.grid_kw}),
    }
    clock = ManualClock()
    return Rig(ControlCycle(parse(data), devs, KERNEL, clock), s, devs, clock)


async def test_self_consumption_discharges_battery_to_cover_import():
    rig = make(load_kw=30.0)  # grid +30 kW, battery at 0
    d = await rig.step()
    assert d.mode == "self_consumption+peak_shaving+export_limit"
    assert d.bounds.grid_target_kw == 0.0
    assert d.bess_kw["bess1"] == pytest.approx(30.0)
    assert rig.dev["bess1"].writes == [(pytest.approx(30.0), 60)]
    d = await rig.step()
    assert rig.site.grid_kw == pytest.approx(0.0)
    assert d.bess_kw["bess1"] == pytest.approx(30.0)
    assert d.status == 0


async def test_the_cycle_is_busy_while_a_step_runs_and_idle_after_it_even_a_failed_one():
    rig = make(load_kw=30.0)
    seen = []
    read = rig.dev["pcc"].read
    rig.dev["pcc"].read = lambda: (seen.append(rig.cycle.idle.is_set()), read())[1]
    assert rig.cycle.idle.is_set()
    await rig.step()
    assert seen == [False] and rig.cycle.idle.is_set()

    async def broken(*_, **__):
        raise RuntimeError("writer bug")

    rig.cycle.write = broken
    with pytest.raises(RuntimeError, match="writer bug"):
        await rig.step()
    assert seen == [False, False] and rig.cycle.idle.is_set()


async def test_discharge_is_clamped_to_battery_limit_and_import_stays():
    rig = make(load_kw=100.0)
    d = await rig.step()
    assert d.bess_kw["bess1"] == pytest.approx(60.0)  # max_discharge_kw
    assert d.expected_grid_kw == pytest.approx(40.0)
    assert d.status & dispatch.STATUS_TARGET_UNMET


async def test_export_limit_curtails_pv_when_battery_full():
    rig = make(load_kw=10.0, pv_avail_kw=50.0, soc_pct=95.0)  # grid -40 kW, battery at soc_max
    d = await rig.step()
    assert d.bounds.export_limit_kw == 0.0
    assert d.bess_kw["bess1"] == pytest.approx(0.0)  # cannot charge
    assert d.pv_limit_kw["pv1"] == pytest.approx(10.0)
    assert rig.dev["pv1"].writes == [(pytest.approx(10.0), 60)]
    assert rig.site.grid_kw == pytest.approx(0.0)
    d = await rig.step()
    assert d.pv_limit_kw["pv1"] == pytest.approx(10.0)  # no release while at the limit
    d = await make(load_kw=10.0, pv_avail_kw=50.0, soc_pct=50.0).step()  # room to charge:
    assert (d.bess_kw["bess1"], d.pv_limit_kw["pv1"]) == pytest.approx((-40.0, 120.0))


async def test_setpoint_not_rewritten_within_deadband():
    rig = make(load_kw=30.0)
    await rig.step()
    rig.clear_writes()
    rig.site.load_kw = 30.3  # 0.3 kW change < deadband 0.5
    d = await rig.step()
    assert d.bess_kw["bess1"] == pytest.approx(30.3)
    assert rig.dev["bess1"].writes == [] and rig.dev["pv1"].writes == []
    rig.site.load_kw = 31.0  # 1 kW from the written 30
    await rig.step()
    assert rig.dev["bess1"].writes == [(pytest.approx(31.0), 60)]


async def test_setpoint_rewritten_before_revert_timer_expires():
    rig = make(load_kw=30.0)  # revert_s 60, rewrite_margin 0.5 -> re-write after 30 s
    await rig.step()  # written at t=1
    rig.clear_writes()
    await rig.step(29.9)  # t=30.9: 29.9 s since the write
    assert rig.dev["bess1"].writes == [] and rig.dev["pv1"].writes == []
    await rig.step(0.1)  # t=31: 30 s since the write, well before the 60 s revert
    assert rig.dev["bess1"].writes == [(pytest.approx(30.0), 60)]
    assert rig.dev["pv1"].writes == [(pytest.approx(120.0), 60)]
    rig.clear_writes()
    await rig.step(1.0)  # timer restarted by the re-write
    assert rig.dev["bess1"].writes == []


async def test_failed_write_is_retried_next_cycle():
    rig = make(load_kw=30.0)
    rig.dev["bess1"].write_errors = 1
    d = await rig.step()
    assert d.bess_kw["bess1"] == pytest.approx(30.0)
    assert rig.dev["bess1"].attempts == 1 and rig.dev["bess1"].writes == []
    assert rig.cycle.health["bess1"].errors == 1
    assert rig.site.bess_kw == 0.0
    await rig.step()
    assert rig.dev["bess1"].attempts == 2
    assert rig.dev["bess1"].writes == [(pytest.approx(30.0), 60)]
    assert rig.site.bess_kw == pytest.approx(30.0)


async def test_battery_stale_after_configured_failed_polls_gets_safe_power_and_recovers():
    rig = make(load_kw=30.0, bess={"safe_power_kw": 5.0})
    await rig.step()
    await rig.step()  # settled: the last good reading shows the battery at 30 kW
    rig.dev["bess1"].offline = True
    d = await rig.step()  # 1 failed poll < stale_after_cycles=2: last reading still GOOD
    state = rig.cycle.image.devices["bess1"]
    assert state.quality is Quality.GOOD and state.failed_polls == 1
    assert d.bess_kw["bess1"] == pytest.approx(30.0)
    rig.site.load_kw = 50.0  # grid +20 kW: a controllable battery would cover it
    d = await rig.step()  # 2 failed polls: STALE
    assert rig.cycle.image.devices["bess1"].quality is Quality.STALE
    assert d.mode != "safe"  # the grid meter is fine; only this battery is held
    assert d.bess_kw["bess1"] == 5.0
    assert rig.dev["bess1"].writes[-1] == (5.0, 60)
    assert d.expected_grid_kw == pytest.approx(20.0)  # kernel left it untouched
    assert d.status & dispatch.STATUS_TARGET_UNMET
    rig.dev["bess1"].offline = False
    d = await rig.step()  # one good poll: GOOD again, controlled again
    assert rig.cycle.image.devices["bess1"].quality is Quality.GOOD
    assert d.bess_kw["bess1"] == pytest.approx(50.0)


async def test_grid_meter_lost_puts_site_in_safe_mode():
    rig = make(load_kw=60.0, pv_avail_kw=50.0)
    d = await rig.step()
    assert d.bess_kw["bess1"] == pytest.approx(10.0)
    rig.dev["pcc"].offline = True
    d = await rig.step()
    assert d.mode != "safe"  # one failed poll is tolerated
    rig.clear_writes()
    d = await rig.step()
    assert rig.cycle.image.devices["pcc"].quality is Quality.STALE
    assert d.mode == "safe"
    assert d.bess_kw == {"bess1": 0.0}
    assert d.pv_limit_kw == {"pv1": pytest.approx(30.0)}  # 25 % of 120 kW
    assert math.isnan(d.expected_grid_kw)
    assert rig.dev["bess1"].writes == [(0.0, 60)]
    assert rig.dev["pv1"].writes == [(pytest.approx(30.0), 60)]
    rig.dev["pcc"].offline = False
    d = await rig.step()
    assert d.mode == "self_consumption+peak_shaving+export_limit"


async def test_grid_meter_never_read_starts_in_safe_mode():
    rig = make(load_kw=30.0)
    rig.dev["pcc"].offline = True
    d = await rig.step()
    assert rig.cycle.image.devices["pcc"].quality is Quality.INVALID
    assert d.mode == "safe"


async def test_raising_control_function_keeps_its_static_limit_and_others_still_run(monkeypatch, caplog):
    def broken(image, bounds, cfg):
        raise ZeroDivisionError("bug in export_limit")

    monkeypatch.setitem(control.PRIORITY, "export_limit", broken)  # first in priority order
    rig = make(load_kw=100.0)
    d = await rig.step()
    assert d.failed_functions == ("export_limit",)
    assert d.mode == "self_consumption+peak_shaving"
    assert d.bounds.export_limit_kw == 0.0  # a failed limit function never lifts its limit
    assert d.bounds.import_limit_kw == 80.0  # peak_shaving still ran
    assert d.bounds.grid_target_kw == 0.0  # self_consumption still ran
    assert d.bess_kw["bess1"] == pytest.approx(60.0)
    assert "export_limit" in caplog.text
    d = await rig.step()  # and again the next cycle: nothing froze
    assert d.failed_functions == ("export_limit",)


async def test_crash_in_decide_applies_safe_state_and_next_cycle_continues(monkeypatch):
    rig = make(load_kw=30.0)
    await rig.step()
    real = rig.cycle.controller.decide
    calls = []

    def crash_once(image, book, memory, now_s):
        calls.append(image)
        if len(calls) == 1:
            raise RuntimeError("bug in decide")
        return real(image, book, memory, now_s)

    monkeypatch.setattr(rig.cycle.controller, "decide", crash_once)
    rig.clear_writes()
    d = await rig.step()
    assert d.mode == "safe" and rig.cycle.stats.crashes == 1
    assert rig.dev["bess1"].writes == [(0.0, 60)]
    assert rig.dev["pv1"].writes == [(pytest.approx(30.0), 60)]
    d = await rig.step()
    assert d.mode == "self_consumption+peak_shaving+export_limit"
    assert d.bess_kw["bess1"] == pytest.approx(30.0)
    assert rig.cycle.stats.cycles == 3


async def test_setpoints_respect_ramp_rate_between_cycles():
    rig = make(load_kw=45.0, bess={"ramp_kw_per_s": 10})
    rig.dev["bess1"].apply = lambda kw: None  # a slow battery: still reads 0 kW
    setpoints = [(await rig.step(1.0)).bess_kw["bess1"] for _ in range(5)]
    assert setpoints == pytest.approx([10.0, 20.0, 30.0, 40.0, 45.0])
    rig.site.load_kw = 0.0  # nothing to cover any more: stopping is never ramp-limited,
    d = await rig.step(0.5)  # or the battery would push its discharge into export
    assert d.bess_kw["bess1"] == 0.0


async def test_missed_pcc_poll_holds_setpoints_instead_of_counting_the_last_step_twice():
    rig = make(load_kw=30.0)
    await rig.step()  # battery 0 -> 30 kW; the PCC reading of this cycle predates that write
    assert rig.site.bess_kw == pytest.approx(30.0)
    rig.dev["pcc"].offline = True  # next poll fails: its last reading still says +30 kW import
    d = await rig.step()
    assert d.mode == "hold"
    assert d.bess_kw["bess1"] == pytest.approx(30.0)  # not 60 kW: no export spike
    rig.dev["pcc"].offline = False
    d = await rig.step()
    assert d.mode != "hold" and d.bess_kw["bess1"] == pytest.approx(30.0)


async def test_recovered_battery_ramps_from_its_reading_not_a_forgotten_setpoint():
    rig = make(load_kw=30.0, bess={"ramp_kw_per_s": 10})
    for _ in range(3):
        await rig.step(1.0)
    assert rig.site.bess_kw == pytest.approx(30.0)
    rig.dev["bess1"].offline = True
    for _ in range(3):
        await rig.step(1.0)  # stale: safe state; meanwhile its revert timer took it to 0 kW
    rig.site.bess_kw = 0.0
    rig.site.load_kw = 0.0  # and nothing to cover any more
    rig.dev["bess1"].offline = False
    d = await rig.step(1.0)
    assert d.bess_kw["bess1"] == pytest.approx(0.0)  # not forced to 20 kW into export


def test_pv_safe_level_defaults_to_zero_on_an_export_limited_site():
    data = copy.deepcopy(BASE)
    del data["devices"][0]["safe_limit_pct"]
    cfg = parse(data)
    assert cfg.pv_safe_kw(cfg.devices[0]) == 0.0
    data["control"]["export_limit_kw"] = None
    cfg = parse(data)
    assert cfg.pv_safe_kw(cfg.devices[0]) == 120.0


async def test_deadband_is_bypassed_while_a_limit_is_broken():
    rig = make(load_kw=30.0)  # zero-export site, deadband 0.5 kW
    await rig.step()
    rig.clear_writes()
    rig.site.load_kw = 29.7  # battery now pushes 0.3 kW into the grid: export above the limit
    d = await rig.step()
    assert d.bess_kw["bess1"] == pytest.approx(29.7)
    assert rig.dev["bess1"].writes == [(pytest.approx(29.7), 60)]
    rig.clear_writes()
    rig.site.load_kw = 30.0  # 0.3 kW import: inside the limits, within the deadband
    await rig.step()
    assert rig.dev["bess1"].writes == []


async def test_config_beyond_device_nameplate_is_reported_once(caplog):
    rig = make(load_kw=30.0)
    rig.dev["bess1"].read = lambda: {"power_kw": 0.0, "soc_pct": 50.0, "max_charge_kw": 40.0}
    await rig.step()
    await rig.step()
    warnings = [r for r in caplog.records if "exceeds the device's 40.0 kW" in r.getMessage()]
    assert len(warnings) == 1 and "bess1" in warnings[0].getMessage()


async def test_slow_value_not_refreshed_in_time_is_stale_while_fast_values_stay_good():
    """Every value carries its own quality: a nameplate read long ago is STALE and control
    cannot act on it, while the device's fresh power reading is still GOOD."""
    import time as _time

    from edge.image.image import StaleValue

    rig = make()
    old = _time.monotonic() - 10 * 300 * rig.cycle.period_wall_s
    rig.dev["bess1"].read = lambda: {"power_kw": 0.0, "soc_pct": 50.0, "max_charge_kw": 60.0}
    rig.dev["bess1"].poll = _stamped(rig.dev["bess1"], {"max_charge_kw": old})
    await rig.step()
    image = rig.cycle.image
    assert image.value("bess1", "power_kw") == 0.0
    assert image.devices["bess1"].value_quality("max_charge_kw") is Quality.STALE
    with pytest.raises(StaleValue, match="bess1.max_charge_kw is stale"):
        image.value("bess1", "max_charge_kw")


def _stamped(dev, stamps):
    async def poll():
        return Reading(dev.id, dev.read(), stamps=dict(stamps))
    return poll

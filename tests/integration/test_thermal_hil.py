"""The thermal office over Modbus, the HIL in its own process: the planner pre-cools the
zones before a DR event it has been told of, the cycle keeps import under the event's cap
while the zones stay in their comfort band, and the recovery after it stays below the peak
before it; each zone goes into the zone log its model is fitted on. A zone sensor that
freezes, or one that breaks and reads 85 °C, hands its unit back to its own thermostat."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import numpy as np
import yaml
from conftest import free_port, wait_for
from site_harness import running_site

from edge.control.instructions import Instruction
from edge.report.zonelog import ZoneLog

ROOT = Path(__file__).resolve().parents[2]
SPEED = 240.0
CAP_KW = 10.0
TOL_KW = 1.5  # a cycle spans ~5 simulated s at x240: load ripple and meter quantisation
CYCLE_SIM_S = 5.0


def office(tmp_path: Path, broker_port: int, start: str) -> dict:
    """configs/thermal_office.yaml on free ports, without the tank (its own device test
    covers it; here the chillers alone must carry the event)."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs/thermal_office.yaml").read_text()))
    data["devices"] = [d for d in data["devices"] if d["role"] != "thermal_storage"]
    for d in data["devices"]:
        d["port"], d["timeout_s"] = free_port(), 0.5
        if d["role"] == "hvac":
            d["revert_s"] = 60  # raised by the harness to what the speed-up needs
    data["mqtt"].update({"port": broker_port, "telemetry_s": 5})
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["hil"] = {"start": start}
    data["planner"] = {"enabled": True, "horizon_h": 6, "step_min": 15, "replan_min": 15}
    return data


def means_15(samples, t0, t1) -> list[float]:
    """15-min mean import of minute samples in [t0, t1)."""
    out = []
    while t0 < t1:
        block = [s.grid_kw for s in samples if t0 <= s.t < t0 + timedelta(minutes=15)]
        if block:
            out.append(float(np.mean(block)))
        t0 += timedelta(minutes=15)
    return out


async def test_precools_holds_the_band_meets_the_event_and_recovers_below_the_peak(
        tmp_path, mosquitto):
    data = office(tmp_path, mosquitto.port, "2026-07-01T11:45:00+08:00")
    async with running_site(data, mosquitto, SPEED, in_process_planner=True) as run:
        start = run.clock.now()
        ev_a, ev_b = start + timedelta(hours=1, minutes=15), start + timedelta(hours=2, minutes=45)
        run.daemon.cycle.book.put(Instruction("dr-heat", "grid_operator", ev_a, ev_b,
                                              grid_max_kw=CAP_KW))
        zones: list[tuple] = []
        while run.clock.elapsed_s() < 3.5 * 3600:
            await run.until_sim(run.clock.elapsed_s() + 60)
            zones.append((run.clock.now(), run.site.state("chiller1")["zone_c"],
                          run.site.state("chiller2")["zone_c"]))
        samples = list(run.site.samples)
        stats = run.daemon.planner.stats
        times, logged, _, kw = ZoneLog(run.daemon.history.db, create=False).series(
            "chiller1", start, run.clock.now())
    assert stats.failures == 0, stats
    # The daemon logged each zone per quarter hour for the model fit (edge/report/zonelog.py):
    # the reading at the interval's start is the simulated zone then, within the sensor's
    # jitter (±0.05 K) and the zone's drift in the minute between two samples here.
    true = {t: z for t, z, _ in zones}
    near = [(logged[k], true[min(true, key=lambda x: abs(x - t))])
            for k, t in enumerate(times) if np.isfinite(logged[k])]
    # An interval measured for less than 90 % of its length stores NaN means by design; at
    # x240 that is a stall of 0.4 s wall, which a loaded machine can cause: most, not all.
    inner = kw[1:-1]
    assert len(near) >= len(times) - 2 and np.isfinite(inner).sum() >= 0.75 * len(inner), (
        logged, kw)
    assert all(abs(a - b) < 0.25 for a, b in near), near
    assert stats.zones and all(z["source"] == "configured" for z in stats.zones), stats.zones
    first = [z for t, *zs in zones if t < start + timedelta(minutes=5) for z in zs]
    at_event = [z for t, *zs in zones if ev_a - timedelta(minutes=5) <= t < ev_a for z in zs]
    # Pre-cooled: coasting through 90 min without the plant needs the zones at about
    # 23.7 °C, well below where they were and below the band's warm third (24.7 °C), where
    # the rule without a plan holds them.
    assert max(at_event) < min(first) - 0.5 and max(at_event) < 24.2, (first, at_event)
    # The band held throughout (26 °C in office hours, 0.1 K for the cycle's drift).
    assert max(z for _, *zs in zones for z in zs) <= 26.1
    during = [s for s in samples if ev_a + timedelta(minutes=1) <= s.t < ev_b]
    assert during and max(s.grid_kw for s in during) <= CAP_KW + TOL_KW, [
        (str(s.t), round(s.grid_kw, 1), round(s.load_kw, 1), round(s.pv_kw, 1)) for s in during
        if s.grid_kw > CAP_KW + TOL_KW]
    before = means_15(samples, start + timedelta(minutes=15), ev_a)
    after = means_15(samples, ev_b, ev_b + timedelta(minutes=45))
    assert max(after) <= max(before), (before, after)


async def test_a_frozen_zone_sensor_hands_the_unit_to_its_own_thermostat(tmp_path, mosquitto):
    data = office(tmp_path, mosquitto.port, "2026-07-01T10:00:00+08:00")
    data.pop("planner")
    for d in data["devices"]:
        if d["role"] == "hvac":
            d["stuck_s"] = 120
    data["devices"][3]["sim"]["zone"]["stuck_at_h"] = 0.1  # chiller1's sensor, at 10:06
    async with running_site(data, mosquitto, SPEED) as run:
        await wait_for(lambda: run.site.state("chiller1")["external"] == 1, 30,
                       "chiller1 under control while its sensor moves")
        assert run.clock.elapsed_s() < 360  # before its sensor froze
        await wait_for(lambda: run.daemon.cycle.decision.setpoints["hvac"]["chiller1"] == -1.0,
                       60, "chiller1 handed to its own thermostat")
        # Not before the frozen reading was stuck_s old. The reading polled just before the
        # freeze may round to the same 0.01 °C register value as the frozen one, and the HIL's
        # clock runs in another process: up to two cycles (~5 simulated s each) earlier.
        assert run.clock.elapsed_s() >= 360 + 120 - 2 * CYCLE_SIM_S
        await wait_for(lambda: run.site.state("chiller1")["external"] == 0, 30,
                       "chiller1 on its own thermostat in the HIL")
        assert run.daemon.cycle.decision.setpoints["hvac"]["chiller2"] >= 0.0
        assert run.site.state("chiller2")["external"] == 1  # its neighbour stays controlled


async def test_a_broken_zone_sensor_makes_the_unit_stale_and_hands_it_to_its_own_thermostat(
        tmp_path, mosquitto):
    """The sensor reads 85 °C while the unit answers every poll: the image marks the unit
    STALE (not a lost link), and it runs on its own thermostat within a few cycles."""
    data = office(tmp_path, mosquitto.port, "2026-07-01T10:00:00+08:00")
    data.pop("planner")
    data["devices"][3]["sim"]["zone"]["broken_at_h"] = 0.1  # chiller1's sensor, at 10:06
    async with running_site(data, mosquitto, SPEED) as run:
        await wait_for(lambda: run.site.state("chiller1")["external"] == 1, 30,
                       "chiller1 under control while its sensor works")
        assert run.clock.elapsed_s() < 360
        await wait_for(lambda: run.daemon.cycle.decision.setpoints["hvac"]["chiller1"] == -1.0,
                       60, "chiller1 handed to its own thermostat")
        # STALE while its polls succeed (a loaded machine may also time out a poll or two, so
        # the two are awaited together rather than read at one instant).
        await wait_for(lambda: run.daemon.cycle.image.devices["chiller1"].quality.value == "stale"
                       and run.daemon.cycle.image.devices["chiller1"].failed_polls == 0, 30,
                       "chiller1 STALE with its link answering")
        # For the STALE image, not as a stuck sensor (that takes stuck_s, 30 min by default).
        assert not run.daemon.cycle.memory.roles["hvac"].by_id["chiller1"].stuck
        await wait_for(lambda: run.site.state("chiller1")["external"] == 0, 30,
                       "chiller1 on its own thermostat in the HIL")
        assert run.site.state("chiller2")["external"] == 1  # its neighbour stays controlled

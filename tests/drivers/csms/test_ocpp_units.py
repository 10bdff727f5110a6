"""Unit tests of the version-neutral parts: the writer's timing rules on a fake clock with
a fake charge point (the real one is in the flow tests), and the station's bookkeeping."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import pytest
from ocpp_clients import SPEC

from drivers.ocpp.point import CallFailed
from drivers.ocpp.station import CURRENT, ENERGY, POWER, Sample, Station, to_base
from drivers.ocpp.writer import Wanted, Writer


class FakePoint:
    def __init__(self) -> None:
        self.sent: list[tuple[str, float, int, int | None, object]] = []
        self.status = "Accepted"

    async def set_profile(self, purpose, amps, stack, duration=None, tx=None):
        self.sent.append((purpose, amps, stack, duration, tx))
        if isinstance(self.status, Exception):
            raise self.status
        return self.status


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


def writer(**spec_changes) -> tuple[Writer, FakePoint, Wanted, Clock]:
    station = Station("ev1", replace(SPEC, **spec_changes))
    station.stack_level = 4
    point, wanted, clock = FakePoint(), Wanted(), Clock()
    w = Writer(point, station, wanted, asyncio.Event(), retry_s=5.0,
               throttle=station._absurd, clock=clock)
    return w, point, wanted, clock


async def test_writer_timing_rules():
    w, point, wanted, clock = writer(deadband_a=1.0, min_interval_s=10.0)
    assert await w.step() is None and point.sent == []  # nothing wanted yet
    wanted.set(16, 100)
    assert await w.step() == 50  # sent; refresh after half of revert_s
    assert point.sent[-1] == ("default", 16, 4, 160, None)  # lasts revert_s from now

    clock.t += 1
    wanted.set(16.5, 100)  # deadband
    assert await w.step() == 49 and len(point.sent) == 1
    wanted.set(20, 100)  # raise, 1 s after the last change: waits out min_interval_s
    assert await w.step() == 9 and len(point.sent) == 1
    clock.t += 9
    await w.step()
    assert point.sent[-1][1] == 20

    clock.t += 1
    wanted.set(8, 100)  # cut: at once, though the last change was 1 s ago
    assert await w.step() == 50 and point.sent[-1][1] == 8
    clock.t += 50
    wanted.set(8.5, 100)  # within the deadband: the refresh re-sends the one in force
    await w.step()
    assert point.sent[-1][1] == 8 and len(point.sent) == 4

    wanted.set(0, 100)  # pause
    await w.step()
    assert point.sent[-1][1] == 0
    clock.t += 20
    wanted.set(0.5, 100)  # 0 -> 0.5 is within the deadband but a resume: it goes
    await w.step()
    assert point.sent[-1][1] == 0.5


async def test_writer_holds_a_failing_target_until_retry_or_a_new_value():
    w, point, wanted, clock = writer()
    point.status = CallFailed("no answer", answered=False)
    wanted.set(16, 100)
    assert await w.step() == 5.0 and len(point.sent) == 1
    clock.t += 1
    await w.step()
    assert len(point.sent) == 1  # held
    clock.t += 4
    await w.step()
    assert len(point.sent) == 2  # retried
    wanted.set(10, 100)
    await w.step()
    assert len(point.sent) == 3  # a new value ends the hold
    point.status = "Accepted"
    clock.t += 0.1
    wanted.set(10, 100)
    await w.step()
    assert w.station.offered_a == 10


async def test_writer_switches_to_tx_profiles_when_tx_default_is_refused():
    w, point, wanted, clock = writer()
    w.station.start_tx("42", 2, 0.0)
    point.status = "NotSupported"
    wanted.set(16, 100)
    assert await w.step() == 0 and w.station.tx_profiles
    point.status = "Accepted"
    await w.step()
    assert point.sent[-1][0] == "tx" and point.sent[-1][4].id == "42"
    w.station.start_tx("43", 1, 0.0)
    await w.step()
    assert {s[4].id for s in point.sent if s[0] == "tx"} == {"42", "43"}


def test_units_are_scaled_to_watts_and_watt_hours():
    assert to_base(POWER, 7.4, "kW") == 7400
    assert to_base(ENERGY, 12.5, "kWh") == 12500
    assert to_base(ENERGY, 3.0, "Wh", 3) == 3000
    assert to_base(CURRENT, 16.0, "A") == 16


def test_connector_zero_counts_only_when_no_connector_has_its_own_meter():
    st = Station("ev1", replace(SPEC, connectors=2))
    st.samples(0, [Sample(POWER, None, 9000.0), Sample(ENERGY, None, 100_000.0)])
    assert st.values()["power_kw"] == 9.0 and st.values()["energy_kwh"] == 100.0
    st.samples(1, [Sample(POWER, None, 4000.0), Sample(ENERGY, None, 30_000.0)])
    st.samples(2, [Sample(POWER, None, 3000.0), Sample(ENERGY, None, 40_000.0)])
    assert st.values()["power_kw"] == 7.0 and st.values()["energy_kwh"] == 70.0


def test_one_transaction_per_connector_and_unplugging_ends_it():
    st = Station("ev1", SPEC)
    first = st.start_tx("1", 1, 0.0)
    second = st.start_tx("2", 1, 0.0)  # started again without a stop
    assert list(st.txs) == ["2"] and second.number != first.number
    st.set_status(1, "Charging")
    assert st.values()["charging"] == 1.0
    st.set_status(1, "Available")
    v = st.values()
    assert (v["charging"], v["connected"], v["session"]) == (0.0, 0.0, 0.0)
    assert math.isnan(v["soc_pct"])


def test_the_busiest_connector_gives_the_status_unless_the_whole_charger_is_down():
    st = Station("ev1", replace(SPEC, connectors=2))
    st.set_status(1, "Available")
    st.set_status(2, "SuspendedEV")
    assert st.overall_status() == "SuspendedEV"
    st.set_status(0, "Faulted")
    assert st.overall_status() == "Faulted"
    st.set_status(0, "Bogus")  # not a status: ignored
    assert st.overall_status() == "Faulted"


@pytest.mark.parametrize("value", [math.nan, -1.0, math.inf, 1e7])
def test_absurd_power_is_dropped(value):
    st = Station("ev1", SPEC)
    st.samples(1, [Sample(POWER, None, 5000.0)])
    st.samples(1, [Sample(POWER, None, value)])
    assert st.values()["power_kw"] == 5.0


def test_meter_lag_tells_whether_a_meter_value_was_taken_after_the_limit_changed():
    now = [100.0]
    st = Station("ev1", SPEC, clock=lambda: now[0])
    assert math.isnan(st.values()["meter_lag_s"])
    st.samples(1, [Sample(CURRENT, "L1", 16.0)])
    now[0] = 110.0
    st.offer(10.0)
    assert st.values()["meter_lag_s"] == -10.0  # the car had not seen the limit yet
    now[0] = 125.0
    st.offer(10.0)  # the same limit again (a refresh) does not restart the wait
    st.samples(1, [Sample(CURRENT, "L1", 9.8)])
    assert st.values()["meter_lag_s"] == 15.0


def test_the_writer_sleeps_site_seconds_at_the_pace_the_site_clock_runs(monkeypatch):
    from drivers.ocpp import writer as writer_mod

    wall = [1000.0]
    monkeypatch.setattr(writer_mod.time, "monotonic", lambda: wall[0])
    site = [0.0]
    pace = writer_mod.Pace(lambda: site[0])
    assert pace.wall_s(150.0) == 150.0  # nothing measured yet: real time
    wall[0] += 2.0
    site[0] += 1440.0  # ×720
    assert pace.wall_s(150.0) == pytest.approx(150.0 / 720)
    site[0] += 0.0
    wall[0] += 1438.0  # the site clock stood still (a paused run): never slower than the wall
    assert pace.wall_s(10.0) == 10.0

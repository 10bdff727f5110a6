"""simulate's clock runs in real time through the window around a grid outage and at its
speed elsewhere; wall and simulated time map both ways across the windows."""

from __future__ import annotations

from datetime import datetime

import pytest

from tools.simulate import runclock
from tools.simulate.runclock import RunClock, outage_windows

START = datetime.fromisoformat("2026-07-01T00:00:00+08:00")


@pytest.fixture
def wall(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(runclock.time, "monotonic", lambda: now[0])
    return now


def test_the_clock_runs_in_real_time_through_an_outage_window_only(wall):
    clock = RunClock(START, 240.0, 86400.0, outage_windows([64800.0]))  # 64795 .. 64830
    clock.release()
    assert clock.speed == 240.0
    wall[0] += 64795.0 / 240  # the window opens
    assert clock.elapsed_s() == pytest.approx(64795.0) and clock.speed == 1.0
    wall[0] += 10.0
    assert clock.elapsed_s() == pytest.approx(64805.0)
    assert clock.wall_s(0.2) == pytest.approx(0.2)  # a transfer poll takes its own time
    assert clock.wall_s(30.0) == pytest.approx(25.0 + 5.0 / 240)  # out of the window after 25
    wall[0] += 25.0 + 240.0 / 240
    assert clock.elapsed_s() == pytest.approx(64830.0 + 240.0) and clock.speed == 240.0
    assert clock.real_time_s() == pytest.approx(35.0)


def test_without_windows_it_is_a_plain_accelerated_clock_standing_still_until_released(wall):
    clock = RunClock(START, 720.0, 3600.0)
    wall[0] += 5.0
    assert clock.elapsed_s() == 0.0
    clock.release()
    wall[0] += 1.0
    assert clock.elapsed_s() == pytest.approx(720.0) and clock.wall_s(720.0) == pytest.approx(1.0)
    wall[0] += 10.0
    assert clock.elapsed_s() == 3600.0 and clock.real_time_s() == 0.0

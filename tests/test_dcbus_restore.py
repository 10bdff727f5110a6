"""Secondary control of the DC bus droop (edge/dcbus.DcBusRestore) against a hand-made
droop converter: bus = v_ref − slope × load. The shift closes the sag, within its ramp, its
±max_shift_pct and the converter's own v_ref range; it holds without fresh readings and goes
back to nominal when the bus is out of band (a fault, not a sag)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drivers.base import Quality, Reading
from edge.config import parse
from edge.dcbus import DcBusRestore
from edge.image import DeviceState, ProcessImage

TS = datetime(2026, 6, 22, 4, tzinfo=UTC)
SLOPE = 0.375  # V/kW: 5 % of 375 V at 50 kW


def restorer(n: int = 1, **conv) -> DcBusRestore:
    devices = [{"id": "pcc", "role": "meter", "measures": "grid", "port": 1502}]
    devices += [{"id": f"dc{i + 1}", "role": "dcdc", "map": "dcdc_generic", "port": 1510 + i,
                 "rated_kw": 50, "bus_nominal_v": 375, "band_pct": 10, "restore_v": True,
                 "v_ref_ramp_v_per_s": 100, **conv} for i in range(n)]
    return DcBusRestore(parse({"site": {"id": "s"}, "devices": devices, "tariff": {
        "periods": [{"name": "f", "start": "00:00", "end": "00:00", "price": 1.0}]}}))


def image(bus: dict[str, float], quality=Quality.GOOD, failed_polls=0, dt_s=1.0,
          **extra) -> ProcessImage:
    devices = {d: DeviceState(Reading(d, {"bus_v": v, **extra}), quality, failed_polls)
               for d, v in bus.items()}
    return ProcessImage(TS, dt_s, devices)


def run(r: DcBusRestore, load_kw: float, cycles: int, fault_v: float = 0.0, **kw) -> float:
    """Close the loop through the droop for `cycles`; returns the last bus voltage."""
    v_ref = 375.0
    for _ in range(cycles):
        bus = v_ref - SLOPE * load_kw + fault_v
        v_ref = r.step(image({c.id: bus for c in r.converters}, **kw))["dc1"]
    return v_ref - SLOPE * load_kw + fault_v


def test_the_shift_closes_the_droop_sag_to_nominal():
    r = restorer()
    assert run(r, 20.0, 1) == pytest.approx(375 - 7.5 / 2)  # half the 7.5 V sag per cycle
    assert run(r, 20.0, 12) == pytest.approx(375.0, abs=0.01)
    assert r.shift_v == pytest.approx(7.5, abs=0.01)


def test_the_shift_is_held_within_max_shift_and_the_converters_own_range():
    r = restorer(max_shift_pct=1)  # 3.75 V at most
    assert run(r, 20.0, 20) == pytest.approx(375 - 7.5 + 3.75)
    r = restorer()
    r.step(image({"dc1": 367.5}, v_ref_min_v=370.0, v_ref_max_v=377.0))
    for _ in range(20):
        out = r.step(image({"dc1": 367.5}, v_ref_min_v=370.0, v_ref_max_v=377.0))
    assert out["dc1"] == pytest.approx(377.0)


def test_the_ramp_limits_each_cycles_move():
    r = restorer(v_ref_ramp_v_per_s=0.5)
    assert r.step(image({"dc1": 367.5}, dt_s=2.0))["dc1"] == pytest.approx(376.0)


def test_without_a_fresh_reading_from_every_converter_the_shift_holds():
    r = restorer(n=2)
    r.step(image({"dc1": 367.5, "dc2": 367.5}))
    held = r.shift_v
    assert held > 0
    stale = image({"dc1": 367.5, "dc2": 367.5})
    stale.devices["dc2"] = DeviceState(stale.devices["dc2"].reading, Quality.STALE, 3)
    assert r.step(stale) == {"dc1": 375 + held, "dc2": 375 + held}
    bridged = image({"dc1": 367.5, "dc2": 367.5}, failed_polls=1)  # last value repeated
    assert r.step(bridged)["dc1"] == 375 + held


def test_out_of_band_the_reference_returns_to_nominal_instead_of_chasing_a_fault():
    r = restorer()
    run(r, 20.0, 12)
    assert r.shift_v > 7
    assert run(r, 20.0, 1, fault_v=-60.0) < 337.5  # a fault, deeper than any droop
    assert r.shift_v == 0.0


def test_the_safe_state_is_the_nominal_reference():
    r = restorer()
    run(r, 20.0, 5)
    assert r.safe() == {"dc1": 375.0} and r.shift_v == 0.0


def test_converters_without_restore_v_are_left_alone():
    r = restorer(restore_v=False)
    assert r.converters == [] and r.step(image({"dc1": 367.5})) == {}

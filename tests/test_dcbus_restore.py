"""Secondary control of the DC bus droop (edge/roles/dcbus.DcBusRestore) against a hand-made
droop converter: bus = v_ref − slope × load, one poll behind. The shift closes the sag,
within its ramp, its ±max_shift_pct and the converter's own v_ref range; it integrates on
the reference the converter reports, holds on a missed poll and out of band, ramps back to
nominal when a converter is STALE or in the safe state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drivers.base import Quality, Reading
from edge.config import parse
from edge.image.image import DeviceState, ProcessImage
from edge.roles.dcbus import DcBusRestore

TS = datetime(2026, 6, 22, 4, tzinfo=UTC)
SLOPE = 0.375  # V/kW: 5 % of 375 V at 50 kW


def restorer(n: int = 1, **conv) -> DcBusRestore:
    devices = [{"id": "pcc", "host": "127.0.0.1", "role": "meter", "measures": "grid", "port": 1502}]
    devices += [{"id": f"dc{i + 1}", "host": "127.0.0.1", "role": "dcdc", "map": "dcdc_generic", "port": 1510 + i,
                 "rated_kw": 50, "bus_nominal_v": 375, "band_pct": 10, "restore_v": True,
                 "v_ref_ramp_v_per_s": 100, **conv} for i in range(n)]
    return DcBusRestore(parse({"site": {"id": "s"}, "devices": devices, "tariff": {
        "periods": [{"name": "f", "start": "00:00", "end": "00:00", "price": 1.0}]}}))


def image(bus: dict[str, float], quality=Quality.GOOD, failed_polls=0, dt_s=1.0,
          **extra) -> ProcessImage:
    devices = {d: DeviceState(Reading(d, {"bus_v": v, **extra}), quality, failed_polls)
               for d, v in bus.items()}
    return ProcessImage(TS, dt_s, devices)


class Droop:
    """The converter: it holds what was written (unless `refuse`) and reports it."""

    def __init__(self) -> None:
        self.v_ref, self.refuse = 375.0, False

    def bus(self, load_kw: float, fault_v: float = 0.0) -> float:
        return self.v_ref - SLOPE * load_kw + fault_v

    def write(self, v: float) -> None:
        if not self.refuse:
            self.v_ref = v


def run(r: DcBusRestore, load_kw: float, cycles: int, fault_v: float = 0.0,
        conv: Droop | None = None) -> float:
    """Close the loop through the droop for `cycles`; returns the last bus voltage."""
    conv = conv or Droop()
    for _ in range(cycles):
        bus = conv.bus(load_kw, fault_v)
        conv.write(r.step(image({c.id: bus for c in r.converters}, v_ref=conv.v_ref))["dc1"])
    return conv.bus(load_kw, fault_v)


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


def test_a_missed_poll_holds_the_shift():
    r = restorer(n=2)
    r.step(image({"dc1": 367.5, "dc2": 367.5}))
    held = r.shift_v
    assert held > 0
    bridged = image({"dc1": 367.5, "dc2": 367.5}, failed_polls=1)  # last value repeated
    assert r.step(bridged) == {"dc1": 375 + held, "dc2": 375 + held}


def test_out_of_band_the_shift_holds_neither_chasing_a_fault_nor_deepening_it():
    r, conv = restorer(), Droop()
    run(r, 20.0, 12, conv=conv)
    shift = r.shift_v
    assert shift > 7
    assert run(r, 20.0, 5, fault_v=-60.0, conv=conv) < 337.5  # a fault, deeper than any droop
    assert r.shift_v == shift


def test_refused_writes_are_not_integrated_on():
    """A converter that does not take the reference (refused writes, a revert timer) keeps
    reporting nominal: the shift does not wind up to its limit behind its back."""
    r, conv = restorer(v_ref_ramp_v_per_s=2), Droop()
    conv.refuse = True
    run(r, 20.0, 30, conv=conv)
    assert r.shift_v <= 2.0 + 1e-9  # one ramp step above what the converter holds


def test_a_stale_converter_or_the_safe_state_ramps_the_shift_back_to_nominal():
    r = restorer(n=2, v_ref_ramp_v_per_s=1)
    r.shift_v = 5.0
    stale = image({"dc1": 375.0, "dc2": 375.0})
    stale.devices["dc2"] = DeviceState(stale.devices["dc2"].reading, Quality.STALE, 3)
    assert r.step(stale) == {"dc1": 379.0, "dc2": 379.0}  # the other must not carry it
    assert r.relax(2.0) == {"dc1": 377.0, "dc2": 377.0}
    assert r.nominal() == {"dc1": 375.0, "dc2": 375.0} and r.shift_v == 0.0


def test_converters_without_restore_v_are_left_alone():
    r = restorer(restore_v=False)
    assert r.converters == [] and r.step(image({"dc1": 367.5})) == {}


def test_a_config_restoring_only_some_parallel_converters_is_refused():
    devices = [{"id": "pcc", "host": "127.0.0.1", "role": "meter", "measures": "grid", "port": 1502}]
    devices += [{"id": f"dc{i + 1}", "host": "127.0.0.1", "role": "dcdc", "map": "dcdc_generic", "port": 1510 + i,
                 "rated_kw": 50, "bus_nominal_v": 375, "restore_v": i == 0} for i in range(2)]
    with pytest.raises(Exception, match="restore_v is on for dc1 but off for dc2"):
        parse({"site": {"id": "s"}, "devices": devices, "tariff": {
            "periods": [{"name": "f", "start": "00:00", "end": "00:00", "price": 1.0}]}})

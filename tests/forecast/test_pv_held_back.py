"""Which PV readings show the sky and which only a limit: the rule the daemon feeds the PV
forecast with (edge.image.balance.pv_held_back)."""

from datetime import UTC, datetime

from drivers.base import Reading
from edge.config import PvDevice
from edge.image.balance import pv_held_back
from edge.image.image import DeviceState, ProcessImage, Quality

PV = PvDevice(id="pv1", role="pv", protocol="sunspec-tcp", host="127.0.0.1", port=1502,
              rated_kw=100.0)


def image(kw: float, quality: Quality = Quality.GOOD, **extra) -> ProcessImage:
    return ProcessImage(datetime(2026, 6, 22, 4, tzinfo=UTC), 1.0, {
        "pv1": DeviceState(Reading("pv1", {"power_kw": kw, **extra}), quality, 0)})


def test_output_at_its_limit_is_held_back():
    assert pv_held_back([PV], {"pv1": 40.0}, image(39.5))


def test_a_limit_above_the_output_holds_nothing_back():
    """Export-limited sites keep a limit all day; below it the inverter tracks its MPP."""
    assert not pv_held_back([PV], {"pv1": 60.0}, image(40.0))


def test_no_limit_or_full_rating_holds_nothing_back():
    assert not pv_held_back([PV], {"pv1": 100.0}, image(99.9))


def test_an_unknown_limit_or_unreadable_inverter_counts_as_held_back():
    """At start a revert timer may hold any level: the first readings only bound the sky."""
    assert pv_held_back([PV], {}, image(40.0))
    assert pv_held_back([PV], {"pv1": 40.0}, image(0.0, Quality.STALE))


def test_the_limit_the_inverter_reports_outranks_the_last_command():
    """A refused write or one skipped inside the deadband: the inverter's own limit counts."""
    assert pv_held_back([PV], {"pv1": 60.0}, image(39.8, limit_kw=40.0))
    assert not pv_held_back([PV], {"pv1": 40.0}, image(39.8, limit_kw=100.0))

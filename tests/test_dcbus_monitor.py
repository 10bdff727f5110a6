"""The DC bus alarm and voltage (edge/roles/dcbus.py) on hand-made process images: raised after
N consecutive fresh readings out of band, logged once per excursion, cleared by the first
fresh reading back in band; bridged or stale readings neither raise nor clear it; the bus
voltage is the mean of the GOOD converters and null without one."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from drivers.base import Quality, Reading
from edge.config import parse
from edge.image.image import DeviceState, ProcessImage
from edge.report import telemetry
from edge.roles.dcbus import DcBusMonitor, bus_v

TS = datetime(2026, 6, 22, 4, tzinfo=UTC)
ALARM = "dc_bus_out_of_band:dc1"


def config(converters: int = 1, after: int = 3):
    devices = [{"id": "pcc", "host": "127.0.0.1", "role": "meter", "measures": "grid", "port": 1502}]
    devices += [{"id": f"dc{i + 1}", "host": "127.0.0.1", "role": "dcdc", "map": "dcdc_generic", "port": 1510 + i,
                 "rated_kw": 50, "bus_nominal_v": 375, "band_pct": 10,
                 "alarm_after_cycles": after} for i in range(converters)]
    return parse({"site": {"id": "s"}, "devices": devices,
                  "tariff": {"periods": [{"name": "f", "start": "00:00", "end": "00:00",
                                          "price": 1.0}]}})


def image(volts: dict[str, float], quality=Quality.GOOD, failed_polls: int = 0) -> ProcessImage:
    devices = {"pcc": DeviceState(Reading("pcc", {"power_kw": 10.0, "import_kwh": 0.0,
                                                  "export_kwh": 0.0}), Quality.GOOD, 0)}
    for dev_id, v in volts.items():
        reading = Reading(dev_id, {"bus_v": v, "power_kw": 20.0, "v_ref": 375.0})
        devices[dev_id] = DeviceState(reading, quality, failed_polls)
    return ProcessImage(TS, 1.0, devices)


def test_alarm_needs_n_consecutive_cycles_out_of_band_and_clears_in_band(caplog):
    mon = DcBusMonitor(config(after=3))
    caplog.set_level(logging.INFO, logger="edge.roles.dcbus")
    assert mon.observe(image({"dc1": 330.0})) == ()
    assert mon.observe(image({"dc1": 330.0})) == ()
    assert mon.observe(image({"dc1": 370.0})) == ()  # back in band: the count starts over
    assert [mon.observe(image({"dc1": 420.0})) for _ in range(3)] == [(), (), (ALARM,)]
    for _ in range(10):  # a long excursion stays one alarm, logged once
        assert mon.observe(image({"dc1": 300.0 + _})) == (ALARM,)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dc1" in warnings[0].getMessage()
    assert "337.5-412.5 V" in warnings[0].getMessage()
    assert mon.observe(image({"dc1": 412.5})) == ()  # the band edge is inside
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "worst 300.0 V" in infos[0]


def test_bridged_and_stale_readings_neither_raise_nor_clear():
    mon = DcBusMonitor(config(after=2))
    mon.observe(image({"dc1": 330.0}))
    # A missed poll bridged by the old value is not a second cycle out of band ...
    assert mon.observe(image({"dc1": 330.0}, failed_polls=1)) == ()
    assert mon.observe(image({"dc1": 330.0})) == (ALARM,)
    # ... and neither a bridged nor a stale in-band value clears a raised alarm.
    assert mon.observe(image({"dc1": 375.0}, failed_polls=1)) == (ALARM,)
    assert mon.observe(image({"dc1": 375.0}, Quality.STALE, failed_polls=5)) == (ALARM,)
    assert mon.observe(image({"dc1": 375.0})) == ()


def test_each_converter_alarms_on_its_own_and_the_bus_voltage_is_the_mean_of_the_good_ones():
    cfg = config(converters=2, after=1)
    mon = DcBusMonitor(cfg)
    assert mon.observe(image({"dc1": 300.0, "dc2": 370.0})) == (ALARM,)
    assert bus_v(cfg, image({"dc1": 370.0, "dc2": 372.0})) == pytest.approx(371.0)
    half = image({"dc1": 370.0, "dc2": 372.0})
    half.devices["dc2"] = DeviceState(half.devices["dc2"].reading, Quality.STALE, 3)
    assert bus_v(cfg, half) == pytest.approx(370.0)
    half.devices["dc1"] = DeviceState(None, Quality.INVALID, 3)
    assert bus_v(cfg, half) is None


def test_telemetry_carries_dc_bus_v_and_alarms_and_null_without_a_converter():
    cfg = config()
    msg = telemetry.build(cfg, image({"dc1": 367.46}), None)
    assert msg["dc_bus_v"] == 367.5 and msg["alarms"] == []
    assert telemetry.build(config(converters=0), image({}), None)["dc_bus_v"] is None


def test_a_converter_reporting_another_bus_nominal_is_named_once(caplog):
    mon = DcBusMonitor(config())
    img = image({"dc1": 740.0})
    img.devices["dc1"].reading.values["nominal_v"] = 750.0
    for _ in range(3):
        mon.observe(img)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("reports a 750 V bus" in w for w in warnings) == 1

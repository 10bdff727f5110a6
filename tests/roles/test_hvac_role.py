"""The hvac and thermal_storage roles on hand-made process images through the real
`decide`: a DR cap sheds the HVAC until the comfort band would be reached (the band wins),
the recovery after the cap is ramped and staggered, a stuck zone sensor hands the unit to
its own thermostat, and so does an implausible one, through the process image (a fake
device behind the real poller); the config names a bad comfort band and its fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fakes import ManualClock

from drivers.base import Quality, Reading
from drivers.modbus.regmap import load_map
from edge.config import ConfigError, parse
from edge.control.decide import Controller
from edge.control.instructions import Instruction, InstructionBook
from edge.control.kernel import load_kernel
from edge.image.image import DeviceState, ProcessImage
from edge.image.poll import Poller
from edge.roles import ROLES, role_of
from edge.roles.hvac import THERMOSTAT, HvacDevice
from edge.setpoints.writer import Writer
from hil.devices.base import Env
from hil.devices.hvac import MapHvacSim

T0 = datetime(2026, 7, 1, 6, tzinfo=UTC)  # 14:00 in Shanghai


def site(**hvac) -> dict:
    return {
        "site": {"id": "s", "timezone": "Asia/Shanghai"},
        "devices": [
            {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1504},
            *({"id": f"ahu{i}", "host": "127.0.0.1", "role": "hvac", "port": 1510 + i,
               "map": "hvac_generic", "rated_kw": 20, "min_on_s": 0, "min_off_s": 0,
               "comfort": [{"start": "08:00", "end": "19:00", "min_c": 22, "max_c": 26}],
               "model": {"r_k_per_kw": 2.5, "c_kwh_per_k": 12, "gains_kw": 8}, **hvac}
              for i in (1, 2)),
            {"id": "tank", "host": "127.0.0.1", "role": "thermal_storage", "port": 1520,
             "map": "tes_generic", "capacity_kwh": 300, "max_charge_kw": 30,
             "max_discharge_kw": 30},
        ],
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]},
    }


SITE = parse(site())


def image(ts=T0, zone=24.0, hvac_kw=10.0, base_kw=30.0, quality=Quality.GOOD) -> ProcessImage:
    def state(dev, values, q=Quality.GOOD):
        return DeviceState(Reading(dev, values), q, 0)

    ahus = {f"ahu{i}": state(f"ahu{i}", {"power_kw": hvac_kw, "rated_kw": 20.0,
                                          "zone_temp_c": zone, "outdoor_temp_c": 35.0}, quality)
            for i in (1, 2)}
    return ProcessImage(ts, 1.0, {
        "pcc": state("pcc", {"power_kw": base_kw + 2 * hvac_kw}), **ahus,
        "tank": state("tank", {"power_kw": 0.0, "tank_temp_c": 8.0})})


def dr(until_h: float, cap_kw: float) -> InstructionBook:
    book = InstructionBook()
    book.put(Instruction(id="dr-1", source="grid_operator", start=T0 - timedelta(hours=1),
                         end=T0 + timedelta(hours=until_h), grid_max_kw=cap_kw))
    return book


@pytest.fixture
def ctl() -> Controller:
    return Controller(SITE, load_kernel())


def test_a_dr_cap_sheds_the_hvac_while_the_zone_has_room(ctl):
    d, _ = ctl.decide(image(zone=25.0), dr(2, 35.0), ctl.initial_memory(), 0.0)
    hvac = d.setpoints["hvac"]
    assert sum(hvac.values()) <= 35.0 - 30.0 + 1e-6  # the site's 30 kW leave 5 kW
    without, _ = ctl.decide(image(zone=25.0), None, ctl.initial_memory(), 0.0)
    assert sum(without.setpoints["hvac"].values()) > sum(hvac.values())


def test_the_band_wins_over_a_dr_cap_near_its_edge(ctl):
    d, _ = ctl.decide(image(zone=25.9), dr(2, 30.0), ctl.initial_memory(), 0.0)
    assert all(kw > 5.0 for kw in d.setpoints["hvac"].values())  # held inside the band


def test_recovery_after_a_cap_is_ramped_and_staggered(ctl):
    mem = ctl.initial_memory()
    d, mem = ctl.decide(image(zone=25.0, hvac_kw=0.0), dr(2, 30.0), mem, 0.0)
    assert sum(d.setpoints["hvac"].values()) == pytest.approx(0.0, abs=1e-6)
    steps = []
    for k in range(1, 200):
        d, mem = ctl.decide(image(T0 + timedelta(seconds=k), zone=25.0, hvac_kw=0.0), None,
                            mem, float(k))
        steps.append(d.setpoints["hvac"])
    ramp = 20.0 * 0.10 / 60  # 10 % of rated per minute, per 1-s cycle
    for a, b in zip(steps, steps[1:]):
        for dev in a:
            assert b[dev] - a[dev] <= ramp + 1e-9
    first = next(i for i, s in enumerate(steps) if s["ahu1"] > 0)
    second = next(i for i, s in enumerate(steps) if s["ahu2"] > 0)
    assert second - first >= 119  # the second unit starts stagger_s (120 s) later


def test_a_stuck_zone_sensor_hands_the_unit_to_its_own_thermostat(ctl):
    mem = ctl.initial_memory()
    for k in range(0, 1801, 60):
        d, mem = ctl.decide(image(T0 + timedelta(seconds=k), zone=24.0), None, mem, float(k))
    assert d.setpoints["hvac"] == {"ahu1": THERMOSTAT, "ahu2": THERMOSTAT}
    d, mem = ctl.decide(image(T0 + timedelta(seconds=1900), zone=24.3), None, mem, 1900.0)
    assert all(kw >= 0 for kw in d.setpoints["hvac"].values())  # moving again: controlled


def test_a_stale_hvac_is_in_its_own_thermostat(ctl):
    d, _ = ctl.decide(image(quality=Quality.STALE), None, ctl.initial_memory(), 0.0)
    assert d.setpoints["hvac"] == {"ahu1": THERMOSTAT, "ahu2": THERMOSTAT}


def test_capability_says_how_long_a_shed_can_last():
    dev = SITE.devices[1]
    part = ROLES["hvac"].capability(dev, image(zone=24.0, hvac_kw=10.0))
    assert part.push_kw == -10.0 and part.max_kw == 0.0
    rc = dev.rc()
    expect = rc.hours_to(24.0, 26.0 - 0.3, 35.0, 8.0)
    assert part.up_h == pytest.approx(expect) and 0.05 < part.up_h < 3
    assert part.up_kw(part.up_h * 0.9) == pytest.approx(10.0)
    assert part.up_kw(part.up_h * 1.1) == 0.0


@pytest.mark.parametrize("band, words", [
    ({"min_c": 26, "max_c": 22}, "comfort[0]: min 26 °C is not below max 22 °C; swap them"),
    ({"min_c": 24, "max_c": 24.5}, "comfort[0]: the band 24-24.5 °C is narrower than the 1 K "
     "the controller can hold; widen it"),
    ({"min_c": 2, "max_c": 24}, "devices[1].comfort[0].min_c: must be >= 5"),
])
def test_a_bad_comfort_band_names_the_field_and_the_fix(band, words):
    bad = site(comfort=[{"start": "08:00", "end": "19:00", **band}])
    with pytest.raises(ConfigError) as err:
        parse(bad)
    text = str(err.value)
    assert "devices[1]" in text and words in text


def test_a_band_the_model_cannot_hold_names_the_field():
    weak = site(rated_kw=2)  # 6 kW of cooling against 8 kW of gains and 35 °C outdoors
    with pytest.raises(ConfigError, match=r"devices\[1\]: comfort\[0\].max_c: at 35 °C "
                       r"outdoors and rated_kw the zone settles at 40.0 °C"):
        parse(weak)


def test_the_band_follows_the_time_of_day():
    dev: HvacDevice = SITE.devices[1]
    assert dev.band(datetime(2026, 7, 1, 14).time()) == (22, 26)
    assert dev.band(datetime(2026, 7, 1, 23).time()) == (16, 30)  # setback


class Unit:
    """A device that answers every poll with whatever reading the test set (a fake)."""

    def __init__(self, dev_id: str, **values: float) -> None:
        self.id, self.values = dev_id, values

    async def poll(self) -> Reading:
        return Reading(self.id, dict(self.values))


def units(zone: float) -> dict[str, Unit]:
    ahu = {"power_kw": 10.0, "rated_kw": 20.0, "zone_temp_c": zone, "outdoor_temp_c": 35.0}
    return {"pcc": Unit("pcc", power_kw=50.0), "ahu1": Unit("ahu1", **ahu),
            "ahu2": Unit("ahu2", **ahu), "tank": Unit("tank", power_kw=0.0, tank_temp_c=8.0)}


async def _image(poller, clock, t: float) -> ProcessImage:
    clock.t = t
    await poller.poll(1.0)
    return poller.build_image(1.0)


@pytest.mark.parametrize("reading, words", [
    (85.0, "zone_temp_c reads 85 °C, outside -30..60 °C"),  # a DS18B20's power-on value
    (-40.0, "zone_temp_c reads -40 °C, outside -30..60 °C"),
    (float("nan"), "zone_temp_c reads nan °C"),
    (18.0, "zone_temp_c moved 6.0 K in 10 s, faster than 1 K/min a zone can"),
])
async def test_an_implausible_zone_reading_makes_the_unit_stale_and_hands_it_to_its_thermostat(
        ctl, caplog, reading, words):
    clock = ManualClock(T0)
    devices = units(24.0)
    poller = Poller(SITE, devices, clock)
    mem = ctl.initial_memory()
    d, mem = ctl.decide(await _image(poller, clock, 0.0), None, mem, 0.0)
    assert all(kw >= 0 for kw in d.setpoints["hvac"].values())  # controlled
    devices["ahu1"].values["zone_temp_c"] = reading
    image = await _image(poller, clock, 10.0)
    assert image.devices["ahu1"].quality is Quality.STALE and image.good("ahu2")
    d, mem = ctl.decide(image, None, mem, 10.0)
    assert d.setpoints["hvac"]["ahu1"] == THERMOSTAT and d.setpoints["hvac"]["ahu2"] >= 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device ahu1")]
    assert len(said) == 1 and words in said[0] and "STALE" in said[0], said


async def test_a_zone_reading_that_moves_as_a_zone_can_stays_good():
    clock = ManualClock(T0)
    devices = units(24.0)
    poller = Poller(SITE, devices, clock)
    for k, zone in enumerate((24.0, 24.4, 24.8, 25.9)):  # the last: 1.1 K in 60 s
        devices["ahu1"].values["zone_temp_c"] = zone
        image = await _image(poller, clock, 60.0 * k)
        assert image.good("ahu1"), zone


async def test_a_jump_is_believed_once_a_zone_could_have_moved_that_far(caplog):
    """A sensor that really moved (replaced, recalibrated) is not STALE for ever: the
    allowance grows with the time since its last plausible reading."""
    caplog.set_level("INFO", logger="edge.cycle")
    clock = ManualClock(T0)
    devices = units(24.0)
    poller = Poller(SITE, devices, clock)
    await _image(poller, clock, 0.0)
    devices["ahu1"].values["zone_temp_c"] = 27.0
    assert not (await _image(poller, clock, 60.0)).good("ahu1")  # 3 K in a minute
    assert (await _image(poller, clock, 180.0)).good("ahu1")  # 3 K in three: 0.5 + 3 K allowed
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device ahu1")]
    assert said[-1] == "device ahu1: its readings are plausible again"


OFFSET = parse(site(map="hvac_offset", max_offset_k=2.0))


def offset_image(zone: float, **kw) -> ProcessImage:
    img = image(zone=zone, **kw)
    for dev in ("ahu1", "ahu2"):
        img.devices[dev].reading.values["thermostat_c"] = 24.0
    return img


def test_an_offset_map_gets_setpoint_offsets_in_k_bounded_by_max_offset_k():
    ctl = Controller(OFFSET, load_kernel())
    assert all(d.offset_control for d in OFFSET.devices if d.role == "hvac")
    shed, _ = ctl.decide(offset_image(25.0), dr(2, 30.0), ctl.initial_memory(), 0.0)
    free, _ = ctl.decide(offset_image(25.0), None, ctl.initial_memory(), 0.0)
    for dev in ("ahu1", "ahu2"):
        # The cap leaves no room: the unit's thermostat is aimed warmer than without it.
        assert 0.0 < shed.setpoints["hvac"][dev] <= 2.0
        assert shed.setpoints["hvac"][dev] > free.setpoints["hvac"][dev]
        assert abs(free.setpoints["hvac"][dev]) <= 2.0
    hot, _ = ctl.decide(offset_image(25.9), dr(2, 30.0), ctl.initial_memory(), 0.0)
    # The band wins: never aimed past its edge (26 °C less the guard), even under the cap.
    assert hot.setpoints["hvac"] == {"ahu1": 1.7, "ahu2": 1.7}


def test_an_offset_unit_goes_to_its_own_setpoint_offset_0_when_untrusted_or_safe():
    ctl = Controller(OFFSET, load_kernel())
    stale, _ = ctl.decide(offset_image(24.0, quality=Quality.STALE), None,
                          ctl.initial_memory(), 0.0)
    assert stale.setpoints["hvac"] == {"ahu1": 0.0, "ahu2": 0.0}
    safe = ROLES["hvac"].safe([OFFSET.devices[1]], None, None, 0.0, OFFSET, True)
    assert safe == {"ahu1": 0.0}
    assert not SITE.devices[1].offset_control
    assert ROLES["hvac"].safe([SITE.devices[1]], None, None, 0.0, SITE, True) == {
        "ahu1": THERMOSTAT}


def test_offset_control_sheds_under_a_dr_cap_and_keeps_the_band_in_closed_loop():
    """The role against the HIL's unit physics (hil/devices/hvac.py, its own proportional
    thermostat at thermostat_c + offset; in process, no Modbus), 5-s cycles: under a cap
    that leaves no room the thermostat is aimed warmer and the units stop; near the band's
    edge they cool just enough to hold it; after the cap they cool the zone again."""
    cfg = parse(site(map="hvac_offset"))
    ctl = Controller(cfg, load_kernel())
    mem = ctl.initial_memory()
    sims = {d.id: MapHvacSim(d, 100.0, load_map("hvac_offset")) for d in cfg.devices[1:3]}
    for s in sims.values():
        s.zone_c, s.held["revert"] = 25.0, 0.0
    book, rows = dr(1.0, 30.0), []
    for k in range(0, 2 * 3600, 5):
        t = T0 + timedelta(seconds=k)
        for s in sims.values():
            s.step(Env(k, t, t + timedelta(hours=8), 31.2, 121.5), 5.0)
        hvac = sum(s.power_kw for s in sims.values())
        img = image(t, base_kw=30.0)
        for i, s in sims.items():
            img.devices[i].reading.values.update(power_kw=s.power_kw, zone_temp_c=s.read_c,
                                                 outdoor_temp_c=s.t_out, thermostat_c=24.0)
        img.devices["pcc"].reading.values["power_kw"] = 30.0 + hvac
        d, mem = ctl.decide(img, book if k < 3600 else None, mem, float(k))
        for i, s in sims.items():
            s.held["offset_k"] = d.setpoints["hvac"][i]
        rows.append((k, hvac, max(s.zone_c for s in sims.values())))
    assert all(kw == 0.0 for k, kw, _ in rows if 60 <= k < 20 * 60)  # shed
    assert max(z for *_, z in rows) <= 26.0  # the band (26 °C) held
    assert max(kw for k, kw, _ in rows if k >= 3600) > 5.0  # cooling again after the cap
    assert rows[-1][2] < max(z for k, _, z in rows if k < 3600) - 0.3


async def test_a_unit_stale_for_an_implausible_reading_is_not_rewritten_every_cycle(ctl):
    """Its link works, so the hand-over to its own thermostat reached it and stands: only
    a device that stopped answering may have been moved by its revert timer since."""
    clock = ManualClock(T0)
    devices = units(24.0)
    poller = Poller(SITE, devices, clock)
    writer = Writer(SITE, {})
    mem = ctl.initial_memory()
    devices["ahu1"].values["zone_temp_c"] = 85.0
    due = []
    for k in range(3):
        d, mem = ctl.decide(await _image(poller, clock, float(k)), None, mem, float(k))
        jobs = [dev.id for phase in writer.jobs(d, mem, float(k), False) for dev, _ in phase]
        due.append("ahu1" in jobs)
        ctl.after_writes(mem, {i: d.setpoints["hvac"][i] for i in ("ahu1", "ahu2")}, float(k))
    assert due == [True, False, False]


def test_a_failed_write_names_each_units_setpoint_in_its_own_terms():
    role = role_of(OFFSET.devices[1])
    offset, power = OFFSET.devices[1], SITE.devices[1]
    assert role.setpoint_text(offset, -1.5) == "an offset of -1.5 K"
    assert role.setpoint_text(offset, 0.0) == "its own thermostat"
    assert role.setpoint_text(power, 10.07) == "10.07 kW"
    assert role.setpoint_text(power, THERMOSTAT) == "its own thermostat"

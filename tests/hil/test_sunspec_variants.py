"""HIL SunSpec devices on 7xx model chains (`sim.models`), driven by the real drivers over
loopback Modbus TCP: 704 revert timers, the controller-heartbeat watchdog, a device that
restarts with another control path, the whole control cycle on DER devices, and the errors
a wrong `sim.models` gets. A manual clock moves simulated time only when a test says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import free_port
from fakes import ManualClock

from drivers.base import DeviceError
from drivers.modbus.endpoint import Endpoint
from drivers.sunspec.models import SunSpecError
from drivers.sunspec.roles import SunSpecBattery, SunSpecPv
from edge.app.devices import build_devices
from edge.config import Config, parse
from edge.control import kernel as dispatch
from edge.cycle import ControlCycle
from hil.config import SIM_SUNSPEC_MODELS, hil_of, problems
from hil.devices import CHAINS
from hil.site import SimSite

ROOT = Path(__file__).resolve().parents[2]
NOON = datetime.fromisoformat("2026-06-22T12:00:00+08:00")
DER_PV = [1, 701, 702, 704, 715]
DER_BESS = [1, 701, 702, 704, 713, 715, 802]
CLASSIC_BESS = [1, 103, 124, 802]
WATCHDOG_S = 10


def tariff() -> dict:
    return {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]}


def variants_config() -> Config:
    sim = {"heartbeat_timeout_s": WATCHDOG_S}
    bess = {"role": "battery", "capacity_kwh": 40, "max_charge_kw": 20, "max_discharge_kw": 20}
    devices = [
        {"id": "pv", "host": "127.0.0.1", "port": 502, "role": "pv", "rated_kw": 30, "sim": {**sim, "models": DER_PV}},
        {"id": "bess", **bess, "sim": {**sim, "models": DER_BESS}},
        {"id": "bess124", **bess, "sim": {**sim, "models": CLASSIC_BESS}},
        {"id": "pcc", "host": "127.0.0.1", "port": 502, "role": "meter", "measures": "grid"},
    ]
    for d in devices:
        d.update(host="127.0.0.1", port=free_port())
    return parse({"site": {"id": "t", "timezone": "Asia/Shanghai"}, "devices": devices,
                  "tariff": tariff()})


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    clock = ManualClock(NOON)
    s = SimSite(variants_config(), clock)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def drivers(site: SimSite) -> AsyncIterator[dict]:
    def ep(dev_id: str) -> Endpoint:
        return Endpoint("127.0.0.1", site.devices[dev_id].cfg.port, 1.0)

    made = {"pv": SunSpecPv("pv", ep("pv"), 1), "bess": SunSpecBattery("bess", ep("bess"), 1),
            "bess124": SunSpecBattery("bess124", ep("bess124"), 1)}
    for d in made.values():
        await d.poll()
    yield made
    for d in made.values():
        await d.close()


def advance(site: SimSite, seconds: float) -> None:
    site.clock.t += seconds  # type: ignore[attr-defined]
    site.step_to(site.clock.t)  # type: ignore[attr-defined]


def held(site: SimSite, dev_id: str, model_id: int) -> dict:
    """The device's own decoded view of one model (what a client would read)."""
    return site.devices[dev_id].read(model_id)


async def test_704_limit_and_setpoint_revert_when_not_rewritten_in_time(site, drivers):
    """The controller stays alive (polls, so heartbeats) but stops re-writing: each 704
    function takes the reversion values the driver left when its own timer runs out."""
    await drivers["pv"].write_limit(12.0, revert_s=20)
    await drivers["bess"].write_power(8.0, revert_s=20)
    for _ in range(3):  # 15 s
        advance(site, 5)
        await drivers["pv"].poll()
        await drivers["bess"].poll()
    assert site.state("pv")["limit_kw"] == pytest.approx(12.0)
    assert site.state("bess")["command_kw"] == pytest.approx(8.0)
    # The device ticks at the start of each 1 s physics step: at 15 s it has seen 14.
    assert held(site, "pv", 704)["WMaxLimPctRvrtRem"] == 6
    assert held(site, "bess", 704)["WSetRvrtRem"] == 6
    advance(site, 6)
    assert site.state("pv")["limit_kw"] is None  # WMaxLimPctEnaRvrt 0: no limit
    assert site.state("bess")["command_kw"] == 0.0  # WSetRvrt 0 W, WSetEnaRvrt 1
    assert (held(site, "bess", 704)["WSetEna"], held(site, "bess", 704)["WSet"]) == (1, 0)
    assert site.state("pv")["fallbacks"] == site.state("bess")["fallbacks"] == 0  # the timer
    reading = await drivers["pv"].poll()
    assert reading.values["limit_kw"] == reading.values["rated_kw"] == 30.0


@pytest.mark.parametrize("dev_id, via", [("pv", "704"), ("bess", "704"), ("bess124", "124")])
async def test_heartbeat_stop_makes_the_device_fall_back_long_before_its_revert_timer(
        site, drivers, dev_id, via):
    drv = drivers[dev_id]
    assert drv.describe()["uses"].get("limit", drv.describe()["uses"].get("power")) == int(via)

    async def command() -> None:
        if dev_id == "pv":
            await drv.write_limit(12.0, revert_s=3600)
        else:
            await drv.write_power(8.0, revert_s=3600)

    def controlled() -> bool:
        s = site.state(dev_id)
        return s["limit_kw"] == pytest.approx(12.0) if dev_id == "pv" else \
            s["command_kw"] == pytest.approx(8.0)

    await command()
    for _ in range(6):  # 30 s, three watchdog periods: the heartbeat keeps control alive
        advance(site, 5)
        await drv.poll()
    assert controlled() and site.state(dev_id)["fallbacks"] == 0
    advance(site, WATCHDOG_S + 1)  # the controller goes quiet: no poll, no heartbeat
    assert not controlled()
    assert site.state(dev_id)["fallbacks"] == 1
    if dev_id == "pv":
        assert site.state("pv")["limit_kw"] is None
    else:
        assert site.state(dev_id)["command_kw"] == 0.0
    advance(site, 30)
    assert site.state(dev_id)["fallbacks"] == 1  # waits for the heartbeat to move again

    await drv.poll()  # the controller is back: heartbeat moves, control is taken again
    await command()
    advance(site, 5)
    await drv.poll()
    assert controlled() and site.state(dev_id)["fallbacks"] == 1


async def poll_until_ok(drv, within_s: float = 10.0):  # type: ignore[no-untyped-def]
    """Poll through the failures a restart causes (dropped connection, moved chain)."""
    deadline = time.monotonic() + within_s
    errors = []
    while True:
        try:
            return await asyncio.wait_for(drv.poll(), 2.0), errors
        except (DeviceError, TimeoutError) as exc:
            errors.append(str(exc))
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_battery_restarted_with_704_instead_of_124_is_controlled_through_704(site, drivers):
    drv = drivers["bess124"]
    await drv.write_power(-6.0, revert_s=60)
    assert site.state("bess124")["command_kw"] == pytest.approx(-6.0)
    assert drv.describe()["uses"]["power"] == 124

    await site.restart_with("bess124", DER_BESS)  # firmware update: now a 1547 DER
    reading, errors = await poll_until_ok(drv)
    assert errors, "the restart was noticed"
    assert drv.describe()["uses"] == {"measurement": 701, "power": 704, "soc": [802, 713],
                                      "nameplate": 702}
    assert drv.describe()["heartbeats"] == ["715.ControllerHb", "802.CtrlHb"]
    assert reading.values["soc_pct"] == pytest.approx(site.state("bess124")["soc_pct"], abs=0.1)
    assert site.state("bess124")["command_kw"] == 0.0  # the restart lost the setpoint
    await drv.write_power(9.0, revert_s=60)
    advance(site, 1)
    assert site.state("bess124")["command_kw"] == pytest.approx(9.0)
    assert held(site, "bess124", 704)["WSetEna"] == 1
    assert (await drv.poll()).values["power_kw"] == pytest.approx(9.0)

    await site.restart_with("bess124", CLASSIC_BESS)  # and back
    await poll_until_ok(drv)
    assert drv.describe()["uses"]["power"] == 124
    await drv.write_power(-4.0, revert_s=60)
    assert site.state("bess124")["command_kw"] == pytest.approx(-4.0)
    assert held(site, "bess124", 124)["StorCtl_Mod"] == 3


async def test_control_cycle_runs_a_site_of_der_devices_through_704(tmp_path):
    """The demo site with its PV and battery on 7xx chains, the battery's charge power cut
    to 10 kW: at noon the real cycle charges it fully and curtails the rest of the PV
    surplus (zero export), both through 704, beating the heartbeats every cycle."""
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    for dev in data["devices"]:
        dev["port"] = free_port()
        dev["timeout_s"] = 0.5
        if dev["role"] in ("pv", "battery"):
            dev["ramp_kw_per_s"] = 1000
        if dev["role"] == "battery":
            dev["max_charge_kw"] = dev["max_discharge_kw"] = 10
    models = {"pv1": DER_PV, "bess1": DER_BESS, "pcc": [1, 204]}
    for dev in data["devices"]:
        if dev["id"] in models:
            dev.setdefault("sim", {})["models"] = models[dev["id"]]
    data["control"]["deadband_kw"] = 0.1
    data["hil"]["start"] = NOON.isoformat()
    data["storage"]["dir"] = str(tmp_path / "state")
    cfg = parse(data)
    clock = ManualClock(hil_of(cfg).start)
    site = SimSite(cfg, clock)
    await site.start()
    devices = build_devices(cfg)
    cycle = ControlCycle(cfg, devices, dispatch.load_kernel(), clock)
    try:
        for n in range(1, 41):
            clock.t += cfg.control.cycle_s
            site.step_to(clock.t)
            decision = await cycle.step()
            pv, bess = site.state("pv1"), site.state("bess1")
            if (n > 5 and pv["limit_kw"] is not None
                    and abs(pv["limit_kw"] - decision.pv_limit_kw["pv1"]) <= 0.2
                    and abs(bess["command_kw"] - decision.bess_kw["bess1"]) <= 0.2):
                break
        else:
            pytest.fail(f"site not under control after 40 cycles: {decision}, {pv}, {bess}")
        clock.t += cfg.control.cycle_s
        site.step_to(clock.t)
        assert decision.bess_kw["bess1"] == pytest.approx(-10.0)  # charging at its maximum
        assert site.state("bess1")["power_kw"] == pytest.approx(-10.0, abs=0.2)
        pv = site.state("pv1")
        assert pv["power_kw"] < pv["available_kw"] - 5  # the rest of the surplus curtailed
        assert pv["power_kw"] == pytest.approx(decision.pv_limit_kw["pv1"], abs=0.2)
        assert -0.5 < site.state("pcc")["power_kw"] < 1.0  # zero export, grid near zero
        assert devices["pv1"].describe()["uses"]["limit"] == 704
        assert devices["bess1"].describe()["uses"]["power"] == 704
        assert site.devices["bess1"].rw[715]["ControllerHb"] >= n  # one beat per cycle at least
        assert site.devices["pv1"].rw[715]["ControllerHb"] >= n
        assert all(h.failed_polls == 0 for h in cycle.health.values())
    finally:
        for d in devices.values():
            await d.close()
        await site.stop()


def config_with(device: dict) -> dict:
    return {"site": {"id": "t"}, "tariff": tariff(),
            "devices": [{"host": "127.0.0.1", "port": free_port(), **device},
                        {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": free_port()}]}


@pytest.mark.parametrize("models, message", [
    ([701, 1], "devices[0].sim.models: a SunSpec chain starts with model 1 (common), e.g. "
               "[1, 701, 702, 704, 715]"),
    ([1, 703], "devices[0].sim.models: the HIL does not simulate SunSpec model(s) [703]; it "
               "serves 1, 101"),
    ([1, 103, 103], "devices[0].sim.models: list each SunSpec model once"),
])
def test_bad_sim_models_are_config_errors_naming_the_field_and_fix(models, message):
    found = problems(parse(config_with({"id": "pv1", "host": "127.0.0.1", "port": 502, "role": "pv", "rated_kw": 30,
                                        "sim": {"models": models}})))
    assert any(p.startswith(message) for p in found), found


@pytest.mark.parametrize("device, message", [
    ({"id": "pv1", "host": "127.0.0.1", "port": 502, "role": "pv", "rated_kw": 30, "sim": {"models": [1, 701, 704]}},
     r"device pv1: sim.models \[1, 701, 704\] needs a nameplate model \(120, 702\)"),
    ({"id": "pv1", "host": "127.0.0.1", "port": 502, "role": "pv", "rated_kw": 30, "sim": {"models": [1, 103, 120, 124]}},
     r"the HIL pv does not simulate SunSpec model\(s\) \[124\]"),
    ({"id": "b1", "host": "127.0.0.1", "port": 502, "role": "battery", "capacity_kwh": 10, "max_charge_kw": 5,
      "max_discharge_kw": 5, "sim": {"models": [1, 701, 704]}},
     r"device b1: sim.models \[1, 701, 704\] needs a state of charge model"),
    ({"id": "m1", "host": "127.0.0.1", "port": 502, "role": "meter", "measures": "load", "sim": {"models": [1, 103]}},
     r"the HIL meter does not simulate SunSpec model\(s\) \[103\]"),
])
def test_a_chain_the_role_cannot_serve_is_refused_when_the_hil_builds_it(device, message):
    cfg = parse(config_with(device))  # valid models: only the role decides
    with pytest.raises(ValueError, match=message):
        SimSite(cfg, ManualClock(NOON))


def test_sim_models_on_a_register_map_device_is_refused():
    cfg = parse(config_with({"id": "m1", "host": "127.0.0.1", "port": 502, "role": "meter", "measures": "load",
                             "protocol": "modbus-tcp", "map": "meter3p_generic",
                             "sim": {"models": [1, 203]}}))
    with pytest.raises(SunSpecError, match="device m1: sim.models chooses a SunSpec model chain; "
                                           "protocol modbus-tcp has none"):
        SimSite(cfg, ManualClock(NOON))


async def test_restart_with_a_chain_the_device_cannot_serve_changes_nothing(site):
    with pytest.raises(ValueError, match=r"needs a power control model \(124, 704\)"):
        await site.restart_with("bess", [1, 701, 713])
    assert site.devices["bess"].models == tuple(DER_BESS)


def test_the_config_allows_exactly_the_models_some_simulator_serves():
    served = set().union(*(cls.supported for cls in CHAINS.values()))  # type: ignore[attr-defined]
    assert served == set(SIM_SUNSPEC_MODELS)


async def test_704_inverter_reverts_to_the_configured_safe_level_when_the_controller_goes_quiet(
        site):
    """On a zero-export site the safe PV level is 0 %: a controller that dies must not leave
    the inverter free to export once its revert timer runs out."""
    ep = Endpoint("127.0.0.1", site.devices["pv"].cfg.port, 1.0)
    pv = SunSpecPv("pv", ep, 1, revert_pct=20.0)
    try:
        await pv.poll()
        await pv.write_limit(12.0, revert_s=10)
        advance(site, 12)
        assert site.state("pv")["limit_kw"] == pytest.approx(0.2 * 30.0)
        assert (held(site, "pv", 704)["WMaxLimPctEna"], held(site, "pv", 704)["WMaxLimPct"]) \
            == (1, pytest.approx(20.0))
    finally:
        await pv.close()

"""Config checks for shared buses and connections (edge/config.py `bus_problems`): one line
setting and one framing per serial port, one timeout per shared endpoint, timeouts inside
the cycle's poll deadline, and a DL/T 645 bus whose poll round fits the cycle; defaults that
fit by themselves. Every error names the devices, the field and the fix."""

from __future__ import annotations

import pytest
import yaml

from edge.app.devices import build_devices
from edge.cli import main as cli_main
from edge.config import ConfigError, default_timeout_s, parse

TARIFF = {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 1.0}]}


def site(*devices: dict, cycle_s: float = 1.0) -> dict:
    return {"site": {"id": "s"}, "devices": list(devices), "control": {"cycle_s": cycle_s},
            "tariff": TARIFF}


def rtu(dev_id: str, unit: int, measures: str = "load", **serial) -> dict:
    return {"id": dev_id, "role": "meter", "measures": measures, "protocol": "modbus-rtu",
            "map": "meter3p_generic", "unit_id": unit,
            "serial": {"port": "/dev/ttyUSB0", **serial}}


def dlt(dev_id: str, n: int, measures: str = "load", port: str = "/dev/ttyUSB1", **extra) -> dict:
    return {"id": dev_id, "role": "meter", "measures": measures, "protocol": "dlt645-serial",
            "address": f"{n:012d}", "serial": {"port": port}, **extra}


def problems(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(data)
    return "\n".join(exc.value.problems)


@pytest.mark.parametrize(("field", "a", "b"), [
    ("baudrate", 9600, 19200), ("parity", "N", "E"), ("stopbits", 1, 2), ("bytesize", 8, 7)])
def test_units_on_one_serial_port_must_share_its_line_setting(field, a, b):
    msg = problems(site(rtu("pcc", 1, "grid", **{field: a}), rtu("load", 2, **{field: b})))
    assert (f"devices[0] (pcc) and devices[1] (load) share serial port /dev/ttyUSB0 but differ "
            f"in serial.{field} ({a} vs {b}): one bus has one line setting; set the same "
            f"serial.{field} on both") in msg


def test_dlt645_meters_and_modbus_units_cannot_share_a_serial_port():
    meter = dlt("load", 1, serial={"port": "/dev/ttyUSB0", "baudrate": 9600, "parity": "N"})
    msg = problems(site(rtu("pcc", 1, "grid"), meter))
    assert ("devices[0] (pcc) (modbus-rtu) and devices[1] (load) (dlt645-serial) share serial port "
            "/dev/ttyUSB0: Modbus RTU and DL/T 645 cannot share one bus or port") in msg
    assert "put them on separate ports" in msg


def test_sunspec_and_map_units_may_share_one_rtu_bus():
    cfg = parse(site(rtu("pcc", 1, "grid"), {**rtu("load", 2), "protocol": "sunspec-rtu",
                                                "map": None}))
    devices = build_devices(cfg)
    assert devices["pcc"].endpoint is devices["load"].sunspec.endpoint


def test_dlt645_serial_defaults_to_2400_8e1_and_a_timeout_that_fits_the_cycle():
    cfg = parse(site(dlt("pcc", 1, "grid"), {**rtu("load", 1), "protocol": "modbus-tcp",
                                                 "serial": None, "host": "127.0.0.1",
                                                 "port": 1502}))
    pcc, load = cfg.devices
    assert (pcc.serial.baudrate, pcc.serial.parity, pcc.serial.bytesize) == (2400, "E", 8)
    assert pcc.timeout_s == 0.4  # DL/T 645's 0.5 s, cut to half the 0.8 s poll deadline
    assert load.timeout_s == 0.3
    assert build_devices(cfg)["pcc"].describe()["endpoint"] == "serial:///dev/ttyUSB1?2400-8E1"
    fast = parse(site({"id": "pcc", "host": "127.0.0.1", "port": 502, "role": "meter"}, cycle_s=0.05)).devices[0]
    assert fast.timeout_s == default_timeout_s("sunspec-tcp", 0.05) == 0.1  # deadline floor 0.2 s


def test_timeout_past_the_poll_deadline_is_an_error_with_the_fix():
    msg = problems(site({"id": "pcc", "host": "127.0.0.1", "port": 502, "role": "meter", "timeout_s": 1.0}))
    assert ("devices[0].timeout_s: 1 s does not fit the poll deadline 0.8 s (0.8 x "
            "control.cycle_s, at least 0.2 s): the cycle would cut a silent device off before "
            "its own timeout; use timeout_s <= 0.4 or raise control.cycle_s") in msg


def test_units_sharing_a_connection_leave_half_the_deadline_and_agree_on_the_timeout():
    a = {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1502, "unit_id": 1, "timeout_s": 0.5}
    b = {"id": "load", "host": "127.0.0.1", "role": "meter", "measures": "load", "port": 1502, "unit_id": 2,
         "timeout_s": 0.3}
    msg = problems(site(a, b))
    assert ("devices[0].timeout_s: 0.5 s is more than half the poll deadline 0.8 s on "
            "127.0.0.1:1502, shared with load: one silent unit would leave its neighbours no "
            "time in the cycle; use timeout_s <= 0.4") in msg
    assert ("devices[0] (pcc) and devices[1] (load) share 127.0.0.1:1502 but differ in "
            "timeout_s (0.5 vs 0.3 s)") in msg
    parse(site({**a, "timeout_s": 0.3}, b))


def test_more_dlt645_meters_than_a_2400_bit_s_bus_can_poll_in_a_cycle_is_an_error():
    three = [dlt("pcc", 1, "grid"), dlt("m2", 2), dlt("m3", 3)]
    msg = problems(site(*three))
    assert ("serial port /dev/ttyUSB1: 3 DL/T 645 meters at 2400 bit/s need about 0.90 s per "
            "poll (power from each, one slow value), more than the poll deadline 0.8 s; raise "
            "serial.baudrate if the meters allow, split them across ports, or set "
            "control.cycle_s >= 1.2") in msg
    parse(site(*three[:2]))  # two fit a 1 s cycle
    parse(site(*three, cycle_s=1.2))
    parse(site(*[{**m, "serial": {"port": "/dev/ttyUSB1", "baudrate": 9600}} for m in three]))


def test_check_prints_the_bus_problem_and_exits_2(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site(rtu("pcc", 1, "grid"), rtu("load", 2, baudrate=19200))))
    with pytest.raises(SystemExit) as exc:
        cli_main(["check", "-c", str(path)])
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert "differ in serial.baudrate (9600 vs 19200)" in out.out + out.err


def test_bms_needs_a_map_battery_and_a_unit_id_of_its_own():
    bess = {"id": "bess", "host": "127.0.0.1", "role": "battery", "capacity_kwh": 100, "max_charge_kw": 30,
            "max_discharge_kw": 30, "port": 1502, "bms": {"map": "bms_generic", "unit_id": 2}}
    pcc = {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1502, "unit_id": 2}
    assert ("devices[0]: bms: needs a map-driven battery (protocol modbus-tcp or modbus-rtu), "
            "not sunspec-tcp") in problems(site(bess, {**pcc, "port": 1503}))
    mapped = {**bess, "protocol": "modbus-tcp", "map": "pcs_generic"}
    assert ("devices[0].bms.unit_id: 2 on 127.0.0.1:1502 is devices[1] (pcc)'s unit id; give "
            "the BMS a free one") in problems(site(mapped, pcc))
    assert "bms.unit_id: 1 is the PCS's own unit_id" in problems(
        site({**mapped, "bms": {"map": "bms_generic", "unit_id": 1}}, {**pcc, "port": 1503}))
    cfg = parse(site(mapped, {**pcc, "unit_id": 3}))
    assert build_devices(cfg)["bess"].bms.unit == 2


def test_units_sharing_a_connection_agree_on_max_in_flight_and_share_one_pipelined_endpoint():
    a = {"id": "pcc", "host": "127.0.0.1", "role": "meter", "port": 1502, "unit_id": 1,
         "max_in_flight": 4}
    b = {"id": "load", "host": "127.0.0.1", "role": "meter", "measures": "load", "port": 1502,
         "unit_id": 2}
    msg = problems(site(a, b))
    assert ("devices[0] (pcc) and devices[1] (load) share 127.0.0.1:1502 but differ in "
            "max_in_flight (4 vs 1): the shared connection has one limit on requests in "
            "flight; set the same max_in_flight on both") in msg
    devices = build_devices(parse(site(a, {**b, "max_in_flight": 4})))
    endpoint = devices["pcc"].sunspec.endpoint
    assert endpoint is devices["load"].sunspec.endpoint
    assert endpoint.max_in_flight == 4
    alone = {k: v for k, v in a.items() if k != "max_in_flight"}  # the default
    assert build_devices(parse(site(alone)))["pcc"].sunspec.endpoint.max_in_flight == 1


def test_max_in_flight_is_for_modbus_tcp_only_and_bounded():
    msg = problems(site({**rtu("pcc", 1, "grid"), "max_in_flight": 2}))
    assert ("max_in_flight 2: only Modbus TCP (sunspec-tcp, modbus-tcp) has several requests "
            "in flight; modbus-rtu sends one at a time: remove max_in_flight or set it to 1") in msg
    msg = problems(site({"id": "pcc", "host": "127.0.0.1", "port": 502, "role": "meter",
                         "max_in_flight": 17}))
    assert "max_in_flight" in msg and "16" in msg

"""`pedf-edge check`: each bad config gets a message naming the field and exit code 2."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())


def check(tmp_path: Path, data) -> subprocess.CompletedProcess:
    path = tmp_path / "site.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return subprocess.run([sys.executable, "-m", "edge.cli", "check", "-c", str(path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)


def mutate(fn):
    data = copy.deepcopy(DEMO)
    fn(data)
    return data


def _set(path, value):
    def fn(d):
        *head, last = path
        for k in head:
            d = d[k]
        d[last] = value
    return fn


def _del(path):
    def fn(d):
        *head, last = path
        for k in head:
            d = d[k]
        del d[last]
    return fn


def _dlt645(address, **more):
    """The load meter as a DL/T 645 meter behind a gateway, at `address`."""
    return lambda d: d["devices"][3].update(protocol="dlt645-tcp", address=address, **more)


CASES = [
    ("battery charge power zero", _set(["devices", 1, "max_charge_kw"], 0),
     "devices[1].max_charge_kw: must be > 0"),
    ("site id missing", _del(["site", "id"]), "site.id: is required"),
    ("unknown role", _set(["devices", 0, "role"], "windmill"), "devices[0]: role must be one of"),
    ("soc window inverted", _set(["devices", 1, "soc_min_pct"], 96),
     "devices[1]: soc_min_pct must be below soc_max_pct"),
    ("no grid meter", _set(["devices", 2, "measures"], "load"),
     "exactly one meter with measures: grid"),
    ("tariff leaves a gap", lambda d: d["tariff"]["periods"].pop(),
     "tariff: periods leave 21:00 uncovered"),
    ("misspelt setting", _set(["control", "import_limt_kw"], 50),
     "control.import_limt_kw: is not a known setting"),
    ("port out of range", _set(["devices", 3, "port"], 70000), "devices[3].port: must be <= 65535"),
    ("unknown time zone", _set(["site", "timezone"], "Mars/Olympus"),
     "site.timezone: unknown IANA time zone"),
    ("duplicate device id", _set(["devices", 3, "id"], "pv1"), "device ids must be unique; repeated: pv1"),
    ("serial protocol without a port", _set(["devices", 3, "protocol"], "modbus-rtu"),
     "devices[3]: protocol modbus-rtu needs serial"),
    ("dlt645 without an address", _set(["devices", 3, "protocol"], "dlt645-tcp"),
     "devices[3]: DL/T 645 needs the meter address"),
    ("register map that does not exist",
     lambda d: d["devices"][1].update(protocol="modbus-tcp", map="no_such_pcs"),
     "devices[1].map:"),
    ("register map for another role",
     lambda d: d["devices"][1].update(protocol="modbus-tcp", map="meter3p_generic"),
     "devices[1].map:"),
    ("device without a host", _del(["devices", 3, "host"]),
     "devices[3]: device load: host required for protocol sunspec-tcp"),
    ("device without host and port",
     lambda d: [d["devices"][2].pop(k) for k in ("host", "port")],
     "devices[2]: device pcc: host and port required for protocol sunspec-tcp"),
    ("dlt645 gateway without a port",
     _dlt645("000000000001", port=None),
     "devices[3]: device load: port required for protocol dlt645-tcp"),
    ("dlt645 broadcast address",
     _dlt645("999999999999"),
     "devices[3].address: 999999999999 is the DL/T 645 broadcast address: meters act on a "
     "broadcast but never reply"),
    ("dlt645 wildcard address",
     _dlt645("AAAAAAAAAAAA"),
     "devices[3].address: 'AAAAAAAAAAAA' is a DL/T 645 wildcard address: every meter"),
    ("dlt645 partly wildcard address",
     _dlt645("0000000001aa"),
     "give the meter's own 12-digit address"),
    ("dlt645 address not 12 digits",
     _dlt645("12345"),
     "devices[3].address: '12345' is not a DL/T 645 meter address: 12 decimal digits"),
    ("two devices on one endpoint", _set(["devices", 3, "port"], 15023),
     "devices pcc and load share host 127.0.0.1, port 15023 and unit_id 1: one request would "
     "reach both; give each its own unit_id"),
    ("unknown control function", _set(["control", "functions"], ["self_consumption", "arbitrage"]),
     "control.functions[1]: must be one of"),
]


@pytest.mark.parametrize("name,change,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_names_field_and_exits_2(tmp_path, name, change, expected):
    result = check(tmp_path, mutate(change))
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr


def test_invalid_yaml_reports_line_and_exits_2(tmp_path):
    result = check(tmp_path, "site:\n  id: x\n devices: [\n")
    assert result.returncode == 2
    assert "line 3" in result.stderr and "not valid YAML" in result.stderr


def test_config_that_is_not_utf8_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_bytes("site:\n  name: B\xfcro\n".encode("latin-1"))
    result = subprocess.run([sys.executable, "-m", "edge.cli", "check", "-c", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"{path}: invalid configuration" in result.stderr
    assert "not UTF-8 text" in result.stderr and "Traceback" not in result.stderr


def test_every_problem_is_listed_not_only_the_first(tmp_path):
    data = mutate(_set(["devices", 1, "max_charge_kw"], -5))
    data["control"]["cycle_s"] = 0
    result = check(tmp_path, data)
    assert result.returncode == 2
    assert "devices[1].max_charge_kw" in result.stderr and "control.cycle_s" in result.stderr


def test_demo_config_is_valid_and_summarised(tmp_path):
    result = subprocess.run([sys.executable, "-m", "edge.cli", "check", "-c", str(ROOT / "configs/demo.yaml")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "site demo-office" in result.stdout and "configuration OK" in result.stdout
    assert len(result.stdout.splitlines()) < 25  # one screen

"""The example configs under configs/ are what integrators copy: each one passes
`pedf-edge check`, and the mixed-protocol park site (SunSpec PV, map-driven PCS with its
BMS, map-driven load meter on an RS-485 bus, DL/T 645 PCC meter), the PEDF office with its
DC bus converter and the demo office each run a simulated day (`pedf-edge demo`) with the
controlled bill below the no-battery bill."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def pedf_edge(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, cwd=cwd,
        timeout=timeout, env=dict(os.environ, COLUMNS="120"),  # the installed package
    )


def test_there_is_more_than_the_demo_config() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "park.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_passes_check(path: Path, tmp_path: Path) -> None:
    result = pedf_edge("check", "-c", str(path), cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration OK" in result.stdout


def test_park_config_mixes_sunspec_maps_and_dlt645() -> None:
    data = yaml.safe_load((ROOT / "configs/park.yaml").read_text())
    kinds = {(d["role"], d.get("protocol", "sunspec-tcp"), d.get("map"), d.get("measures"))
             for d in data["devices"]}
    assert kinds == {("pv", "sunspec-tcp", None, None),
                     ("battery", "modbus-tcp", "pcs_generic", None),
                     ("meter", "dlt645-tcp", None, "grid"),
                     ("meter", "modbus-rtu", "meter3p_generic", "load")}
    maps = {d.get("map") for d in data["devices"]} | {d.get("bms", {}).get("map")
                                                      for d in data["devices"]}
    assert maps >= {"pcs_generic", "bms_generic", "meter3p_generic"}  # the device-layer maps
    demo = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    tcp = [d for d in data["devices"] if "serial" not in d]
    ports = {d["port"] for d in tcp}
    assert len(ports) == len(tcp)
    assert not ports & {d["port"] for d in demo["devices"]}  # both can run side by side
    assert data["storage"]["dir"] == "var/park"


@pytest.mark.parametrize("name,wall_s", [("demo.yaml", 30), ("park.yaml", 20),
                                         ("pedf_dc.yaml", 20)])
def test_simulated_day_prints_kpis_and_controlled_bill_beats_no_battery(
        tmp_path: Path, name: str, wall_s: int) -> None:
    data = yaml.safe_load((ROOT / "configs" / name).read_text())
    for dev in data["devices"]:
        dev["port"] = free_port()
    data["mqtt"]["port"] = free_port()  # nothing answers: the embedded broker must step in
    data["storage"]["dir"] = str(tmp_path / "state")
    cfg = tmp_path / name
    cfg.write_text(yaml.safe_dump(data))
    result = pedf_edge("demo", "-c", str(cfg), "--wall-seconds", str(wall_s), cwd=tmp_path,
                       timeout=300)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "embedded amqtt broker" in out
    bill = re.search(r"Bill \(TOU tariff\)\s*│\s*CNY\s*│\s*([\d,.]+)\s*│\s*([\d,.]+)", out)
    assert bill, out
    controlled, no_battery = (float(x.replace(",", "")) for x in bill.groups())
    assert controlled < no_battery
    received = int(re.search(r"received by the platform subscriber: (\d+)", out).group(1))
    assert received > 100
    assert re.search(r"\b0 crashes", out)
    # a DL/T 645 PCC meter stayed inside its power format (XX.XXXX kW) all day
    assert "outside what DL/T 645" not in out + result.stderr

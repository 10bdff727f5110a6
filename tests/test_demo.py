"""`pedf-edge demo`: a whole simulated day, HIL + controller + MQTT, ends in a KPI table
whose controlled bill is below the no-battery bill."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_demo_day_prints_kpis_and_controlled_bill_beats_no_battery(tmp_path):
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    for dev in data["devices"]:
        dev["port"] = free_port()
    data["mqtt"]["port"] = free_port()  # nothing answers: the embedded broker must step in
    data["storage"]["dir"] = str(tmp_path / "state")
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "demo", "-c", str(cfg), "--wall-seconds", "30"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env=dict(os.environ, COLUMNS="120"),
    )
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

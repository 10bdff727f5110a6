"""`pedf-edge hil --vtn`: the integrator's setup. The simulated site and the grid-operator
VTN run as one real process; the daemon registers with that VTN, takes the event of the
file, opts in, cuts the site's import, and the VTN prints the opt and the reports."""

from __future__ import annotations

import asyncio
import copy
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import free_port, wait_for

from edge import config as config_mod
from edge.app.daemon import Daemon

ROOT = Path(__file__).resolve().parents[2]


def write_site(tmp_path: Path, vtn_port: int, broker_port: int) -> Path:
    data = copy.deepcopy(yaml.safe_load((ROOT / "configs/demo.yaml").read_text()))
    data.pop("planner", None)  # the battery rests unless an event asks
    for dev in data["devices"]:
        dev["port"] = free_port()
        dev["timeout_s"] = 0.2
        if dev["role"] == "battery":
            dev["sim"] = {"initial_soc_pct": 60}
            dev["ramp_kw_per_s"] = 1000
    data["control"].update({"cycle_s": 0.5, "functions": ["peak_shaving", "export_limit"]})
    data["mqtt"]["port"] = broker_port
    data["storage"]["dir"] = str(tmp_path / "state")
    data["openadr"] = {"vtn_url": f"http://127.0.0.1:{vtn_port}/OpenADR2/Simple/2.0b",
                       "poll_interval_s": 0.3, "report_interval_s": 1}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_bad_event_file_is_refused_naming_the_field(tmp_path):
    site = write_site(tmp_path, free_port(), 1883)
    events = tmp_path / "events.yaml"
    events.write_text("events:\n  - signal: SIMPLE\n    intervals: [{duration_s: 60, value: 5}]\n")
    result = subprocess.run([sys.executable, "-m", "edge.cli", "hil", "-c", str(site), "--vtn",
                             str(events)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "events.0" in result.stderr and "SIMPLE levels are 0, 1, 2 or 3; got [5.0]" in result.stderr


async def test_hil_with_vtn_issues_the_file_events_to_the_daemon(tmp_path, mosquitto):
    vtn_port = free_port()
    site = write_site(tmp_path, vtn_port, mosquitto.port)
    events = tmp_path / "events.yaml"
    events.write_text(yaml.safe_dump({"events": [
        {"id": "cli-l1", "signal": "SIMPLE", "type": "level", "start_after_s": 1,
         "intervals": [{"duration_s": 3, "value": 1}]}]}))
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "hil", "-c", str(site), "--vtn",
                             str(events)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        await wait_for(lambda: proc.poll() is not None or listening(vtn_port), 20,
                       "the VTN to listen")
        assert proc.poll() is None, "pedf-edge hil --vtn exited before its VTN listened"
        cfg = config_mod.load(site)
        d = Daemon(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(d.run(stop))
        try:
            await asyncio.wait_for(d.ven.registered.wait(), 15)
            event_id = f"cli-l1-ven-{cfg.site.id}"
            await wait_for(lambda: d.ven.store.get(event_id) is not None, 5, "the file's event")
            assert d.ven.store.get(event_id).opt == "optIn"
            await wait_for(lambda: d.ven.store.get(event_id).status == "completed", 10,
                           "the event to run to its end")
            await wait_for(lambda: d.ven.client is not None and d.ven.client.reports_sent >= 4,
                           10, "four TELEMETRY_USAGE reports")
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130, out  # stopped by Ctrl-C, cleanly: one line, no traceback
    assert "Traceback" not in out
    assert f"VEN {cfg.site.id} registered as ven-{cfg.site.id}" in out
    assert f"optIn event {event_id}" in out
    values = [float(line.split()[-2]) for line in out.splitlines() if " VTN report " in line]
    assert len(values) >= 4, out
    assert min(values) < values[0] - 8, f"no report showed the 10 kW cut: {values}"

"""Expected stops and user errors at the command line end with one line that says what to
do, never a traceback: Ctrl-C (exit 130) in `demo` and `hil`, a port already taken in `hil`
(exit 1). Real processes, real signals, real sockets."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import accepts, free_port

ROOT = Path(__file__).resolve().parents[1]


def config(tmp_path: Path, mqtt_port: int) -> tuple[Path, dict]:
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    for dev in data["devices"]:
        dev["port"] = free_port()
    data["mqtt"]["port"] = mqtt_port
    data["storage"]["dir"] = str(tmp_path / "state")
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "out.txt"
    with out.open("wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", *args], cwd=tmp_path,
                                stdout=f, stderr=subprocess.STDOUT)
    return proc, out


def until(predicate, proc: subprocess.Popen, out: Path, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"never {what}:\n{out.read_text()[-3000:]}")
        time.sleep(0.1)


def interrupted(proc: subprocess.Popen, out: Path, command: str) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    assert rc == 130, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert not re.search(r"^\S+ \S+ ERROR ", text, re.M), text[-3000:]
    said = [ln for ln in text.splitlines() if ln.startswith(f"pedf-edge {command}:")]
    assert said == [f"pedf-edge {command}: interrupted (Ctrl-C); run it again to start over"]
    return text


def test_ctrl_c_in_demo_stops_it_quietly_with_130(tmp_path, mosquitto):
    cfg, data = config(tmp_path, mosquitto.port)
    proc, out = start(tmp_path, "demo", "-c", str(cfg), "--wall-seconds", "600")
    # The daemon is up once it has polled through its HIL and the planner has had a round.
    until(lambda: (tmp_path / "state" / "demo" / "outbox.sqlite").exists(), proc, out, "started")
    time.sleep(3)
    interrupted(proc, out, "demo")


def test_ctrl_c_in_hil_stops_it_quietly_with_130(tmp_path):
    cfg, data = config(tmp_path, free_port())
    proc, out = start(tmp_path, "hil", "-c", str(cfg), "--log-level", "warning")
    until(lambda: all(accepts("127.0.0.1", d["port"]) for d in data["devices"]), proc, out,
          "listening")
    interrupted(proc, out, "hil")


def test_hil_on_a_taken_port_names_the_device_and_what_to_do(tmp_path):
    cfg, data = config(tmp_path, free_port())
    taken = data["devices"][1]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken["port"]))
        holder.listen()
        result = subprocess.run([sys.executable, "-m", "edge.cli", "hil", "-c", str(cfg)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    said = [ln for ln in result.stderr.splitlines() if ln.startswith("pedf-edge hil:")]
    assert len(said) == 1, result.stderr
    assert f"127.0.0.1:{taken['port']}" in said[0] and taken["id"] in said[0]
    assert "change `port` in the config" in said[0]

"""The daemon as systemd sees it: a real process, a real $NOTIFY_SOCKET datagram socket."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def site_config(tmp_path: Path, mqtt_port: int, device_port: int) -> Path:
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    for i, dev in enumerate(data["devices"]):
        dev["port"] = device_port + i  # nothing listens: the daemon must still cycle (safe mode)
        dev["timeout_s"] = 0.2
    data["mqtt"]["port"] = mqtt_port
    data["storage"]["dir"] = str(tmp_path / "state")
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def receive_until(sock: socket.socket, wanted: str, deadline: float) -> list[str]:
    seen = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            break
        seen.append(msg)
        if wanted in msg:
            return seen
    raise AssertionError(f"{wanted!r} never arrived; got {seen}")


def test_daemon_sends_ready_watchdog_and_stopping_over_notify_socket(tmp_path, mosquitto):
    from conftest import free_port

    cfg = site_config(tmp_path, mosquitto.port, free_port())
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="2000000")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "-c", str(cfg)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        receive_until(sock, "READY=1", time.monotonic() + 30)
        pings = 0
        deadline = time.monotonic() + 30
        while pings < 3:
            pings += sum("WATCHDOG=1" in m for m in receive_until(sock, "WATCHDOG=1", deadline))
        proc.send_signal(signal.SIGTERM)
        receive_until(sock, "STOPPING=1", time.monotonic() + 30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.stdout.read().decode()
        sock.close()
    assert "not reachable" in out or "poll failed" in out  # devices were down, yet it ran


def test_daemon_refuses_to_start_without_compiled_kernel(tmp_path):
    cfg = site_config(tmp_path, 1, 2)
    code = ("import sys; sys.modules['edge._kernel'] = None\n"
            "from edge.cli import main\n"
            f"sys.exit(main(['run', '-c', {str(cfg)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 3
    assert "compiled dispatch kernel" in result.stderr and "pip install ." in result.stderr

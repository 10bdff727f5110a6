"""The daemon with its API as systemd runs it: a real process whose SIGTERM still stops it
cleanly (uvicorn must not take the signals over), answering over HTTP while it runs,
the dashboard page and its assets included."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import yaml
from api_helpers import TOKEN
from conftest import accepts, free_port

ROOT = Path(__file__).resolve().parents[2]


def get(port: int, path: str) -> tuple[int, bytes]:
    status, body, _ = fetch(port, path)
    return status, body


def fetch(port: int, path: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_the_daemon_serves_the_api_and_still_stops_on_sigterm(tmp_path, mosquitto):
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    first = free_port()
    for i, dev in enumerate(data["devices"]):
        dev["port"] = first + 1 + i  # nothing listens: the daemon cycles in safe mode
        dev["timeout_s"] = 0.2
    data["mqtt"]["port"] = mosquitto.port
    data["storage"]["dir"] = str(tmp_path / "state")
    data.pop("planner")
    (tmp_path / "token").write_text(TOKEN)
    port = free_port()
    data["api"] = {"enabled": True, "port": port, "token_file": str(tmp_path / "token")}
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "-c", str(cfg)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not accepts("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, "the API never came up"
            time.sleep(0.1)
        status, body = get(port, "/api/v1/devices")
        assert status == 200
        assert {d["quality"] for d in json.loads(body)["devices"]} == {"invalid"}
        status, body = get(port, "/metrics")
        assert status == 200 and b"pedf_cycles_total" in body
        # The dashboard ships with the package (CI installs it non-editable).
        status, body, headers = fetch(port, "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "script-src 'self';" in headers["content-security-policy"]
        assert b'src="/static/dashboard.js"' in body
        for asset in ("dashboard.js", "chart.js", "dashboard.css", "vendor/uPlot.iife.min.js"):
            status, body, headers = fetch(port, f"/static/{asset}")
            assert status == 200 and body and headers["cache-control"] == "no-cache", asset
        assert fetch(port, "/static/../routes.py")[0] == 404
        rss_mib = psutil.Process(proc.pid).memory_info().rss / 2**20
        print(f"daemon RSS with the API on: {rss_mib:.0f} MiB")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not accepts("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.stdout.read().decode()
    assert "operator API at http://127.0.0.1:" in out, out
    assert "Traceback" not in out, out

"""Small helpers the benchmark scripts share: ports, a HIL subprocess and its readiness, a
simulated SunSpec site, process shutdown, percentiles, environment lines."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: bound all at once, so the OS cannot hand one out twice."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> tuple[int, float]:
    """SIGTERM, wait; kill only if it hangs. Returns (exit code, seconds to exit)."""
    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode, time.monotonic() - t0


def sunspec_site(n_pv: int, n_bess: int, n_load: int, layout: str, cycle_s: float, *,
                 site_id: str, gateway_units: int | None = None,
                 import_limit_kw: float = 150.0) -> dict:
    """A site config dict: n_pv PV inverters, n_bess batteries, one grid (PCC) meter and n_load
    load meters, all SunSpec on free loopback ports, at noon (PV producing), with an import
    limit and zero export so every control function has work to do.

    layout `per-device`: one port (one TCP connection) per device. `gateway`: the units of a
    role share ports as behind a Modbus gateway, unit ids from 1 - one port per role, or
    ports of at most `gateway_units` units each."""
    ports: dict[str, int] = {}
    units: dict[str, int] = {}
    in_group: dict[str, int] = {}

    def endpoint(group: str) -> dict:
        if layout == "per-device":
            key = f"dev{len(units)}-{group}"
        else:
            n = in_group.get(group, 0)
            key = group if gateway_units is None else f"{group}{n // gateway_units}"
            in_group[group] = n + 1
        while key not in ports:
            port = free_port()  # the OS may hand back a port it gave before: never reuse
            if port not in ports.values():
                ports[key] = port
        units[key] = units.get(key, 0) + 1
        return {"host": HOST, "port": ports[key], "unit_id": units[key]}

    devices: list[dict] = []
    for i in range(1, n_pv + 1):
        devices.append({"id": f"pv{i}", "role": "pv", **endpoint("pv"), "rated_kw": 50,
                        "ramp_kw_per_s": 20, "revert_s": 60, "sim": {"peak_kw": 50}})
    for i in range(1, n_bess + 1):
        devices.append({"id": f"bess{i}", "role": "battery", **endpoint("bess"),
                        "capacity_kwh": 100, "max_charge_kw": 50, "max_discharge_kw": 50,
                        "ramp_kw_per_s": 10, "revert_s": 60,
                        "sim": {"initial_soc_pct": 30 + 5 * ((i - 1) % 8 + 1)}})  # 35..70 %
    devices.append({"id": "pcc", "role": "meter", "measures": "grid", **endpoint("meter")})
    for i in range(1, n_load + 1):
        devices.append({"id": f"load{i}", "role": "meter", "measures": "load", **endpoint("meter"),
                        "sim": {"profile": "office", "base_kw": 20,
                                "day_kw": 60 + 10 * ((i - 1) % 3 + 1)}})  # 70..90 kW
    return {
        "site": {"id": site_id, "timezone": "Asia/Shanghai"},
        "devices": devices,
        "control": {"cycle_s": cycle_s,
                    "functions": ["self_consumption", "peak_shaving", "export_limit"],
                    "import_limit_kw": import_limit_kw, "export_limit_kw": 0, "deadband_kw": 0.5},
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.7}]},
        "hil": {"start": "2026-06-22T12:00:00+08:00", "speed": 1},
    }


def start_hil(cfg_path: Path, log_path: Path) -> subprocess.Popen:
    """`python -m edge.cli hil -c cfg_path --speed 1` in its own process, output to log_path."""
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "hil", "-c", str(cfg_path), "--speed", "1",
             "--log-level", "warning"],
            cwd=log_path.parent, stdout=out, stderr=subprocess.STDOUT)


def wait_listening(proc: subprocess.Popen, ports: set[int], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ports)
    while pending:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"HIL did not listen on {sorted(pending)} (exit {proc.poll()}); "
                               f"its log:\n{log.read_text(errors='replace')[-3000:]}")
        for port in list(pending):
            try:
                with socket.create_connection((HOST, port), timeout=0.2):
                    pending.discard(port)
            except OSError:
                pass
        time.sleep(0.05)


async def connect_all(cycle) -> None:
    """Connect every device of a ControlCycle; raise naming the ones that did not connect."""
    async def one(dev_id: str) -> None:
        await asyncio.wait_for(cycle.devices[dev_id].connect(), 10.0)
    results = await asyncio.gather(*(one(d) for d in cycle.devices), return_exceptions=True)
    failed = {d: r for d, r in zip(cycle.devices, results) if isinstance(r, BaseException)}
    if failed:
        raise RuntimeError("devices did not connect: "
                           + "; ".join(f"{d}: {r!r}" for d, r in failed.items()))


def pct(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def environment(packages: tuple[str, ...] = ()) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), "?") if cpuinfo.exists() else "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()} {platform.machine()}",
        f"cpu: {os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable), {model}; "
        f"load average {load}",
        *([", ".join(f"{p} {version(p)}" for p in packages)] if packages else []),
    ]

"""systemd/INSTALL.md followed as far as CI can without systemd as PID 1: a venv built from a
copy of the repository, `pip install <checkout>`, a system user whose group reads the config
directory, `pedf-edge check` and `pedf-edge run` as that user against the installed package's
own demo site, served by `pedf-edge hil` on loopback. The daemon must report READY=1 over a
$NOTIFY_SOCKET the test binds (as under `Type=notify`) and exit 0 on SIGTERM.

The project is built and installed by the documented command (the Cython kernel compiled in
pip's isolated build); its dependencies are hard-linked in from the running environment
first, so pip finds them installed and the test stays near a minute (installing them from
the registry is what `.ci/run` does from a fresh clone)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"edge", "drivers", "hil", "tools"}
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                     "*.so", "*.c", "var", ".hypothesis", "*.sqlite*")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the install test creates a system user and "
                       "drops to it: run it as root (CI does)"),
    pytest.mark.skipif(not (shutil.which("useradd") and shutil.which("setpriv")),
                       reason="needs useradd and setpriv (Debian: passwd, util-linux)"),
    pytest.mark.timeout(600),
]


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def seed_dependencies(venv: Path) -> None:
    """The running environment's packages, less this project, into the new venv."""
    source = Path(sysconfig.get_paths()["purelib"])
    target = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    for entry in source.iterdir():
        name = entry.name
        if (target / name).exists() or name in PROJECT or name.startswith(
                ("__editable__", "pedf_edge")):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / name, copy_function=_link, symlinks=True)
        else:
            _link(str(entry), str(target / name))


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 300),
                          **kw)


def as_user(user: str, cmd: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *cmd]


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """A world-readable root (as /opt and /etc are) holding the checkout and the venv."""
    root = Path(tempfile.mkdtemp(prefix="pedf-install-"))
    root.chmod(0o755)
    try:
        shutil.copytree(ROOT, root / "checkout", ignore=COPY_IGNORE)
        base = getattr(sys, "_base_executable", sys.executable)
        venv = root / "opt/pedf-edge"
        subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
        seed_dependencies(venv)
        result = run([str(venv / "bin/pip"), "install", "-q", "."], cwd=root / "checkout",
                     timeout=540)
        assert result.returncode == 0, result.stderr[-4000:]
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def service_user() -> Iterator[str]:
    """`useradd --system --user-group` as INSTALL.md, under a name of its own."""
    name = f"pedf-t{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                   check=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], timeout=60)


def place_config(root: Path, user: str, mqtt_port: int) -> Path:
    """The installed package's demo site on free loopback ports, as INSTALL.md installs it:
    /etc/pedf-edge root:<group> 0750, site.yaml root:<group> 0640."""
    venv = root / "opt/pedf-edge"
    shipped = run([str(venv / "bin/python"), "-c", "from edge.config.shipped import "
                   "config_path; print(config_path('configs/demo.yaml'))"], cwd="/")
    example = Path(shipped.stdout.strip())
    assert example.is_relative_to(venv), f"not the installed package's copy: {example}"
    data = yaml.safe_load(example.read_text())
    for dev in data["devices"]:
        dev["port"] = free_port()
    data["mqtt"]["port"] = mqtt_port
    etc = root / "etc/pedf-edge"
    etc.mkdir(parents=True)
    config = etc / "site.yaml"
    config.write_text(yaml.safe_dump(data))
    gid = int(run(["getent", "group", user]).stdout.split(":")[2])
    for path, mode in ((etc, 0o750), (config, 0o640)):
        os.chown(path, 0, gid)
        path.chmod(mode)
    return config


def service_env(state: Path, notify: Path) -> dict[str, str]:
    """What the unit gives the daemon: $STATE_DIRECTORY, $NOTIFY_SOCKET, nothing of ours."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": str(state),
            "PYTHONUNBUFFERED": "1", "STATE_DIRECTORY": str(state), "NOTIFY_SOCKET": str(notify)}


def wait_listening(ports: list[int], proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, f"pedf-edge hil exited: {proc.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, f"pedf-edge hil never served port {port}"
            time.sleep(0.1)


def receive(sock: socket.socket, wanted: str, timeout: float, daemon: subprocess.Popen) -> None:
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        sock.settimeout(0.5)
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            if daemon.poll() is not None:
                break
            continue
        if wanted in seen[-1]:
            return
    daemon.kill()
    raise AssertionError(f"no {wanted} over $NOTIFY_SOCKET (got {seen}); daemon output:\n"
                         + daemon.communicate()[0][-4000:])


def test_unit_verifies(installed: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = (ROOT / "systemd/pedf-edge.service").read_text()
    assert "ExecStart=/opt/pedf-edge/bin/pedf-edge run" in unit
    local = tmp_path / "pedf-edge.service"  # verify wants ExecStart's binary to exist
    local.write_text(unit.replace("/opt/pedf-edge", str(installed / "opt/pedf-edge")))
    result = run(["systemd-analyze", "verify", str(local)])
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_installed_package_is_self_contained(installed: Path) -> None:
    venv = installed / "opt/pedf-edge"
    version = run([str(venv / "bin/pedf-edge"), "--version"], cwd="/")
    assert version.returncode == 0 and version.stdout.split() == ["pedf-edge", "0.1.0"]
    probe = ("import edge, edge._kernel, hil.scenario as s\n"
             "print(edge.__file__)\n"
             "print(s.load('summer_weekday_tou').path)\n"
             "print(s.load('hil/scenarios/winter_weekday.yaml').path)")
    paths = run([str(venv / "bin/python"), "-c", probe], cwd="/").stdout.split()
    assert len(paths) == 3 and all(Path(p).is_relative_to(venv) for p in paths), paths
    check = run([str(venv / "bin/pedf-edge"), "check", "-c", "configs/park.yaml"], cwd="/")
    assert check.returncode == 0, check.stderr
    day = run([str(venv / "bin/pedf-edge"), "simulate", "-s", "summer_weekday_tou", "--hours",
               "0.25", "--no-planner", "--quiet", "--out", str(installed / "kpi.json")], cwd="/")
    assert day.returncode == 0 and (installed / "kpi.json").is_file(), day.stderr[-4000:]


def test_service_user_checks_and_runs_the_demo_site(installed: Path, service_user: str,
                                                    mosquitto) -> None:
    venv = installed / "opt/pedf-edge"
    exe = str(venv / "bin/pedf-edge")
    config = place_config(installed, service_user, mosquitto.port)
    state = installed / "var/lib/pedf-edge"  # StateDirectory=, owned by the service user
    state.mkdir(parents=True)
    shutil.chown(state, service_user, service_user)
    state.chmod(0o750)

    config.chmod(0o600)  # root-only, as the old INSTALL.md had it: the service cannot read it
    refused = run(as_user(service_user, [exe, "check", "-c", str(config)]), cwd=state)
    assert refused.returncode == 2 and "Permission denied" in refused.stderr, refused
    config.chmod(0o640)
    check = run(as_user(service_user, [exe, "check", "-c", str(config)]), cwd=state)
    assert check.returncode == 0 and "configuration OK" in check.stdout, check.stderr

    hil = subprocess.Popen([exe, "hil", "-c", str(config)], cwd=installed, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    notify_dir = installed / "run"
    notify_dir.mkdir(mode=0o755)
    notify = notify_dir / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    notify.chmod(0o666)
    daemon = None
    try:
        ports = [d["port"] for d in yaml.safe_load(config.read_text())["devices"]]
        wait_listening(ports, hil, 60)
        daemon = subprocess.Popen(as_user(service_user, [exe, "run", "-c", str(config)]),
                                  cwd=state, env=service_env(state, notify), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        receive(sock, "READY=1", 90, daemon)
        daemon.send_signal(signal.SIGTERM)
        receive(sock, "STOPPING=1", 30, daemon)
        out = daemon.communicate(timeout=30)[0]
        assert daemon.returncode == 0, out[-4000:]
        assert "Traceback" not in out, out[-4000:]
        outbox = list((state / "var/demo-office").glob("*.sqlite*"))
        assert outbox, "nothing written under $STATE_DIRECTORY"
        assert all(p.owner() == service_user for p in outbox)
    finally:
        sock.close()
        for proc in (daemon, hil):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()

"""systemd/INSTALL.md followed literally in a fresh Debian 12 root: debootstrap's minimal
bookworm, given what any provisioned server has (sudo, systemd's tools, the host's name, DNS
and certificate authorities), then every command of the guide's steps 1-4 as written:
apt-get, the venv under /opt with `pip install .` from PyPI, the system user, the config
(edited through `sudoedit`), `check` as the service user, the unit installed, verified and
enabled. There is no systemd as PID 1 in CI, so the harness does what `systemctl start`
would: it runs the installed unit's ExecStart as its User= with its StateDirectory= and a
$NOTIFY_SOCKET, against `pedf-edge hil` serving the shipped demo site inside the same root,
and waits for READY=1; SIGTERM must give STOPPING=1 and exit 0.

The pristine bookworm tree is cached under /var/cache (debootstrap takes a minute or two);
every run copies it, so each run starts from a fresh root. `.ci/run` installs debootstrap."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from test_install import COPY_IGNORE, ROOT, receive

MIRROR = os.environ.get("PEDF_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("PEDF_DEBIAN_CACHE", "/var/cache/pedf-edge-tests/bookworm"))
SRC = "/home/integrator/pedf-edge"  # where the integrator unpacked the checkout
# What a Debian server has before the guide starts (a minbase root has none of it).
MACHINE_PACKAGES = ["sudo", "systemd", "ca-certificates"]
# Lines that need systemd running as PID 1: the harness stands in for them (see below).
NEEDS_PID1 = ("sudo systemctl daemon-reload", "systemctl status", "journalctl")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and useradd need root (CI runs as root)"),
    pytest.mark.skipif(shutil.which("debootstrap") is None and not CACHE.is_dir(),
                       reason="needs debootstrap (Debian package; .ci/run installs it)"),
    pytest.mark.timeout(1200),
]


def guide_commands() -> list[str]:
    """Every shell command of INSTALL.md's numbered steps, continuation lines joined."""
    text = (ROOT / "systemd/INSTALL.md").read_text()
    steps = re.findall(r"^## \d+\..*?```sh\n(.*?)```", text, flags=re.S | re.M)
    assert len(steps) == 4, "INSTALL.md should have four numbered steps with a sh block"
    joined = "\n".join(steps).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def base_root() -> Path:
    """The pristine minbase bookworm tree, made once."""
    if not (CACHE / "etc/debian_version").is_file():
        partial = CACHE.with_name(CACHE.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        made = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(partial),
                               MIRROR], capture_output=True, text=True, timeout=900)
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
        partial.rename(CACHE)
    return CACHE


class Root:
    """A Debian root on disk; commands run chrooted in a private mount namespace (its /proc
    disappears with the command, so nothing of the host is ever mounted inside)."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path, self.env = path, env

    def argv(self, command: str, env: dict[str, str] | None = None) -> list[str]:
        pairs = [f"{k}={v}" for k, v in {**self.env, **(env or {})}.items()]
        inner = shlex.join(["chroot", str(self.path), "/usr/bin/env", "-i", *pairs,
                            "/bin/bash", "-c", command])
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                f"mount -t proc proc {shlex.quote(str(self.path / 'proc'))} && exec {inner}"]

    def run(self, command: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(command, env), capture_output=True, text=True,
                              timeout=timeout)

    def must(self, command: str, timeout: float = 600, **env: str) -> str:
        done = self.run(command, timeout, **env)
        assert done.returncode == 0, (f"`{command}` exited {done.returncode}:\n"
                                      f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def spawn(self, command: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(command, env), text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)


def provision(root: Path) -> Root:
    """The machine before the guide: a copy of the pristine tree with the host's name
    resolution and trusted CAs (CI reaches PyPI through the host's network), sudo and
    systemd's tools, and the unpacked checkout."""
    for name in ("etc/resolv.conf", "etc/hosts", "etc/hostname"):
        if Path("/", name).is_file():
            shutil.copy2(Path("/", name), root / name)
    cas = Path("/usr/local/share/ca-certificates")
    if cas.is_dir():
        shutil.copytree(cas, root / "usr/local/share/ca-certificates", dirs_exist_ok=True)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
           # pip's own certifi bundle lacks a local CA; point it at the system's.
           "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt"}
    machine = Root(root, env)
    machine.must("apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                 + " ".join(MACHINE_PACKAGES) + " && update-ca-certificates", timeout=600)
    shutil.copytree(ROOT, root / SRC.lstrip("/"), ignore=COPY_IGNORE)
    return machine


@pytest.fixture(scope="module")
def machine() -> Iterator[Root]:
    base = base_root()
    path = Path(tempfile.mkdtemp(prefix="pedf-debian-", dir="/var/tmp"))
    try:
        subprocess.run(["cp", "-a", f"{base}/.", str(path)], check=True, timeout=300)
        yield provision(path)
    finally:
        assert not any(str(path) in line for line in Path("/proc/mounts").read_text()
                       .splitlines()), "a mount is left inside the root: not removing it"
        shutil.rmtree(path, ignore_errors=True)


def editor(machine: Root, ports: dict[str, int]) -> str:
    """What the integrator does in `sudoedit`: their devices and broker (here the HIL's
    free ports and the test's Mosquitto)."""
    script = machine.path / "usr/local/bin/edit-site"
    script.write_text(f"""#!/opt/pedf-edge/bin/python
import sys, yaml
path = sys.argv[-1]
data = yaml.safe_load(open(path))
ports = {ports!r}
for dev in data["devices"]:
    dev["port"] = ports[dev["id"]]
data["mqtt"]["port"] = ports["mqtt"]
open(path, "w").write(yaml.safe_dump(data))
""")
    script.chmod(0o755)
    return "/usr/local/bin/edit-site"


def unit(machine: Root) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((machine.path / "etc/systemd/system/pedf-edge.service").read_text())
    return parser["Service"]


def follow_guide(machine: Root, ports: dict[str, int]) -> list[str]:
    """Run the guide's commands in order; returns those left to systemd as PID 1."""
    edit, left = editor(machine, ports), []
    for command in guide_commands():
        if command.startswith(NEEDS_PID1):
            left.append(command)
            continue
        if command.startswith("sudo systemctl enable --now"):
            # Without PID 1, systemctl enables offline and only the start fails: enable here,
            # start below as systemd would.
            left.append(command)
            command = command.replace(" --now", "")
        machine.must(f"cd {SRC} && {command}", timeout=900, SUDO_EDITOR=edit)
    return left


def test_fresh_debian_12_following_install_md_runs_the_daemon_as_the_units_user(
        machine: Root, mosquitto) -> None:
    demo = (ROOT / "configs/demo.yaml").read_text()
    ids = re.findall(r"^\s*- id: (\S+)", demo, flags=re.M)
    ports = {**{i: free_port() for i in ids}, "mqtt": mosquitto.port}
    left = follow_guide(machine, ports)
    assert [c.split("#")[0].strip() for c in left] == ["sudo systemctl daemon-reload", "sudo systemctl enable --now pedf-edge",
                    "systemctl status pedf-edge", "journalctl -u pedf-edge -f"], left
    assert (machine.path / "etc/systemd/system/multi-user.target.wants/pedf-edge.service"
            ).is_symlink(), "the unit was not enabled"
    assert machine.must("/opt/pedf-edge/bin/pedf-edge --version").split() == [
        "pedf-edge", "0.1.0"]

    service = unit(machine)
    user, state = service["User"], f"/var/lib/{service['StateDirectory']}"
    machine.must(f"install -d -o {user} -g {user} -m {service['StateDirectoryMode']} {state}")
    assert service["WorkingDirectory"] == state
    extra = dict(kv.split("=", 1) for kv in service["Environment"].split())
    notify = machine.path / "run/pedf-notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    notify.chmod(0o666)
    groups = ",".join([user, *service.get("SupplementaryGroups", "").split()])
    hil = machine.spawn("exec /opt/pedf-edge/bin/pedf-edge hil -c /etc/pedf-edge/site.yaml")
    daemon = None
    try:
        wait_serving([p for k, p in ports.items() if k != "mqtt"], hil)
        daemon = machine.spawn(
            f"cd {state} && exec setpriv --reuid={user} --regid={user} --groups={groups} "
            f"-- {service['ExecStart']}",
            STATE_DIRECTORY=state, NOTIFY_SOCKET="/run/pedf-notify", HOME=state, **extra)
        receive(sock, "READY=1", 120, daemon)
        daemon.send_signal(signal.SIGTERM)
        receive(sock, "STOPPING=1", 30, daemon)
        out = daemon.communicate(timeout=60)[0]
        assert daemon.returncode == 0 and "Traceback" not in out, out[-4000:]
        written = list((machine.path / state.lstrip("/")).rglob("*.sqlite*"))
        assert written, f"nothing written under {state}"
        uid = int(machine.must(f"id -u {user}"))
        assert all(p.stat().st_uid == uid for p in written)
    finally:
        sock.close()
        for proc in (daemon, hil):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def wait_serving(ports: list[int], hil: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert hil.poll() is None, f"pedf-edge hil exited: {hil.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, f"pedf-edge hil never served port {port}"
            time.sleep(0.2)

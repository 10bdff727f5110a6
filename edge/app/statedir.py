"""The state dir (storage.dir), and one process per state dir: an exclusive flock on a
file in it, held for the process's life and released by the kernel when the process ends,
however it ends. Two daemons on one state dir would share its SQLite files and, with one
client id, keep taking each other's MQTT session; the second one is refused instead, told
who holds the dir."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import Config

DAEMON_LOCK = "pedf-edge.lock"  # pedf-edge run, demo, simulate
HIL_LOCK = "hil.lock"  # pedf-edge hil (its clock file's owner)


def state_dir(config: Config, environ: dict[str, str] | None = None) -> Path:
    """storage.dir; a relative one lives under systemd's $STATE_DIRECTORY when set."""
    env = os.environ if environ is None else environ
    d = config.storage.dir
    if not d.is_absolute() and env.get("STATE_DIRECTORY"):
        d = Path(env["STATE_DIRECTORY"].split(":")[0]) / d
    return d


class StateDirBusy(RuntimeError):
    """Another process holds the lock; the message names it and what to do."""


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a) or None


class StateLock:
    """`acquire()` takes the lock or raises StateDirBusy; the file then records this
    process's pid and command line, which is how a refused process names the holder."""

    def __init__(self, directory: Path, name: str = DAEMON_LOCK) -> None:
        self.path = Path(directory) / name
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirBusy(self._refusal()) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{' '.join(sys.argv)}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def held_elsewhere(self) -> bool:
        """Another process holds the lock now (probed without keeping it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def holder(self) -> tuple[int | None, str]:
        """The pid that wrote the lock file and 'pid N (command line)' to name it by."""
        try:
            pid_text, _, recorded = self.path.read_text(errors="replace").partition("\n")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None, "another process (it has not written its pid yet)"
        cmd = _cmdline(pid) or recorded.strip()
        return pid, f"pid {pid}" + (f" ({cmd})" if cmd else "")

    def _refusal(self) -> str:
        pid, who = self.holder()
        return (f"{self.path.parent} is in use by {who}: one process per state dir "
                f"(lock {self.path}). Stop that one first (systemctl stop pedf-edge, Ctrl-C in "
                f"its terminal, or kill {pid or 'it'}), or give this one its own storage.dir")

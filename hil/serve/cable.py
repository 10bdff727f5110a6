"""A virtual RS-485 cable for the HIL: two pseudo-terminal pairs whose master ends are
joined byte for byte (what `socat pty,link=A pty,link=B` does). The simulator opens one
slave end; the other is linked at the serial port path the site config names, so the
controller opens "its adapter" by that path and both sides run the real pyserial/termios
code. A pty ignores the baud rate (no wire delay) and refuses even parity (tcsetattr
EINVAL): a simulated bus uses parity N.

The cable holds both slave ends open itself, so when the simulator closes its port (a
stopped bus, fault injection) the controller's port stays open and the bus just goes quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import tty
from pathlib import Path

log = logging.getLogger(__name__)

PTS = "/dev/pts/"


def needs_cable(port: str) -> bool:
    """True when `port` is no serial device: a path outside /dev that does not exist, or a
    link to a pty (a virtual cable, ours or left over from a run that died). A real adapter
    is served as is; anything else raises OSError saying what to change."""
    path = Path(port)
    if path.is_symlink():
        target = os.readlink(path)
        if target.startswith(PTS):
            return True
        if not path.exists():
            raise OSError(f"serial port {port} links to {target}, which does not exist "
                          "(adapter unplugged?)")
    if not path.exists():
        if path.absolute().parts[1:2] == ("dev",):
            raise OSError(f"serial port {port} does not exist; the HIL makes a simulated bus "
                          "only outside /dev (e.g. serial.port: var/ttyRS485), never in place "
                          "of a missing adapter")
        return True
    if not stat.S_ISCHR(path.stat().st_mode):
        raise OSError(f"serial port {port} exists but is not a serial device; point "
                      "`serial.port` at an adapter (/dev/ttyUSB0) or at a free path for a "
                      "simulated bus")
    return False


class VirtualCable:
    """Open while the HIL serves the bus at `link`; `hil_port` is the simulator's end."""

    def __init__(self, link: str) -> None:
        self.link = Path(link)
        self._hil_master, self._hil_slave = os.openpty()
        self._ctl_master, self._ctl_slave = os.openpty()
        for fd in (self._hil_slave, self._ctl_slave):
            tty.setraw(fd)  # no echo, no line editing, before anyone opens it by name
        for fd in (self._hil_master, self._ctl_master):
            os.set_blocking(fd, False)
        self.hil_port = os.ttyname(self._hil_slave)
        self.ctl_port = os.ttyname(self._ctl_slave)
        self.bytes_carried = 0
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._ctl_master, self._pump, self._ctl_master, self._hil_master)
        self._loop.add_reader(self._hil_master, self._pump, self._hil_master, self._ctl_master)
        try:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            if self.link.is_symlink():
                self.link.unlink()  # a cable left by a run that died
            self.link.symlink_to(self.ctl_port)
        except OSError:
            self.close()
            raise
        log.info("HIL virtual cable: %s -> %s (simulator end %s)", link, self.ctl_port,
                 self.hil_port)

    def _pump(self, src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO: no slave open on that side at this instant
        self.bytes_carried += len(data)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst, data)  # nobody draining the far end: bytes are lost, as on a wire

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.link.is_symlink() and os.readlink(self.link) == self.ctl_port:
                self.link.unlink()
        for fd in (self._ctl_master, self._hil_master):
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(fd)
        for fd in (self._hil_master, self._hil_slave, self._ctl_master, self._ctl_slave):
            with contextlib.suppress(OSError):
                os.close(fd)

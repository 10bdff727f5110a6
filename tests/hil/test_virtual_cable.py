"""The HIL's virtual RS-485 cable: a configured port that does not exist becomes a pty pair
linked at that path; bytes cross both ways through the real termios path; a link left by a
run that died is replaced; a real device is used as it is; a missing /dev port and anything
else are refused."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import serial_asyncio

from hil.serve.cable import VirtualCable, needs_cable


async def test_missing_port_becomes_a_linked_cable_that_carries_bytes_both_ways(tmp_path):
    link = tmp_path / "dev" / "ttyRS485"
    assert needs_cable(str(link))
    cable = VirtualCable(str(link))
    try:
        assert link.is_symlink() and os.readlink(link) == cable.ctl_port
        hil_r, hil_w = await serial_asyncio.open_serial_connection(url=cable.hil_port)
        ctl_r, ctl_w = await serial_asyncio.open_serial_connection(url=str(link))
        ctl_w.write(b"\x68request\x16")
        assert await asyncio.wait_for(hil_r.readexactly(9), 2) == b"\x68request\x16"
        hil_w.write(b"reply")
        assert await asyncio.wait_for(ctl_r.readexactly(5), 2) == b"reply"
        hil_w.close()  # the simulator's end closes: the controller's end stays open, quiet
        ctl_w.write(b"x")
        await asyncio.sleep(0.05)
        assert not ctl_w.is_closing()
        ctl_w.close()
    finally:
        cable.close()
    assert not link.exists() and not link.is_symlink()


async def test_link_left_by_a_dead_run_is_replaced(tmp_path):
    link = tmp_path / "ttyRS485"
    link.symlink_to("/dev/pts/4095")  # a cable whose HIL died
    assert needs_cable(str(link))
    cable = VirtualCable(str(link))
    try:
        assert os.readlink(link) == cable.ctl_port
    finally:
        cable.close()


def test_real_device_is_served_as_it_is_and_other_files_are_refused(tmp_path):
    master, slave = os.openpty()
    try:
        assert not needs_cable(os.ttyname(slave))  # a character device: a real port
    finally:
        os.close(master)
        os.close(slave)
    plain = tmp_path / "notatty"
    plain.write_text("")
    with pytest.raises(OSError, match="not a serial device"):
        needs_cable(str(plain))
    with pytest.raises(OSError, match="only outside /dev"):
        needs_cable("/dev/ttyUSB99")  # an unplugged adapter is not replaced by a simulation
    gone = Path(tmp_path / "by-id")
    gone.symlink_to("/dev/ttyUSB77")
    with pytest.raises(OSError, match="adapter unplugged"):
        needs_cable(str(gone))

"""The daemon's commands: check a config, run the controller, print a message schema, scan
for SunSpec devices. `run` reads the simulator's clock settings lazily (hil/)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from drivers.fileerrors import FileError, refuse
from edge.cli.common import (
    EXIT_CONFIG,
    EXIT_KERNEL,
    EXIT_NO_ANSWER,
    EXIT_NOT_SUNSPEC,
    EXIT_RUNTIME,
    _load,
    _logging,
    _stop_on_signals,
    _summary,
)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    print(_summary(cfg))
    print("configuration OK")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge.app.clock import Clock, NoHilClock, hil_clock, resumed_clock
    from edge.app.daemon import Daemon
    from edge.app.statedir import StateDirBusy, StateLock, state_dir
    from edge.control.kernel import KernelUnavailable
    from hil.config import hil_of

    cfg = _load(args.config)
    _logging(args.log_level)
    # A stop asked for while starting (the lock is visible before the event loop runs)
    # is kept and honoured once the loop's handlers are in place, not a death by signal.
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    directory = state_dir(cfg)
    lock = StateLock(directory)
    try:
        lock.acquire()
        clock = (hil_clock(directory) if args.hil_clock else
                 resumed_clock(directory, hil_of(cfg).start, args.speed) if args.speed else Clock())
    except (StateDirBusy, NoHilClock) as exc:
        lock.release()
        print(f"pedf-edge run: {exc}", file=sys.stderr)
        return EXIT_RUNTIME

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        if early:
            stop.set()
        await Daemon(cfg, clock).run(stop)

    try:
        asyncio.run(main())
    except KernelUnavailable as exc:
        print(f"pedf-edge: {exc}", file=sys.stderr)
        return EXIT_KERNEL
    except FileError as exc:  # a file the configuration names (a password, a certificate)
        return refuse(exc, "setting")
    finally:
        lock.release()
    return 0



def cmd_schema(args: argparse.Namespace) -> int:
    from edge.vpp.schemas.catalogue import dumps

    try:
        print(dumps(args.name))
    except KeyError as exc:
        print(f"pedf-edge schema: {exc.args[0]}", file=sys.stderr)
        return EXIT_CONFIG
    return 0



def _target(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT or [IPv6]:PORT; Modbus TCP's port 502 when none is given."""
    host, port = text, "502"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST or HOST:PORT (port 1-65535)")
    return host, int(port)


def _unit(text: str) -> int:
    if not text.isdigit() or int(text) > 255:
        raise argparse.ArgumentTypeError(f"{text!r}: a unit id is 0-255")
    return int(text)


def cmd_scan(args: argparse.Namespace) -> int:
    """Exit status from the reports: any device identified wins; otherwise 5 if anything
    answered at all (wrong protocol or broken device), 4 if nothing did (wrong address)."""
    import json

    from drivers.sunspec.scan import NO_ANSWER, OK, render_text, scan

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # failures are in the report
    host, port = args.target
    units = args.unit or [1]
    reports = asyncio.run(scan(host, port, units, args.timeout))
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        print(render_text(reports), end="")
    if any(r.status == OK for r in reports):
        return 0
    if all(r.status == NO_ANSWER for r in reports):
        print(f"pedf-edge scan: nothing answered at {host}:{port} (units {units}); check the "
              "address, the port, the unit ids and any firewall in between", file=sys.stderr)
        return EXIT_NO_ANSWER
    print(f"pedf-edge scan: no SunSpec device identified at {host}:{port}; see the errors above",
          file=sys.stderr)
    return EXIT_NOT_SUNSPEC



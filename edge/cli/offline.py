"""The commands around the daemon: the simulator (`hil`, with its VTN and platform
emulators), the demo, the scenario runner and a site's day report. They import hil/ and
tools/ only when run."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import date
from pathlib import Path

from drivers.fileerrors import FileError, refuse
from edge.cli.common import (
    EXIT_CONFIG,
    EXIT_KERNEL,
    EXIT_RUNTIME,
    _load,
    _logging,
    _stop_on_signals,
)


def cmd_hil(args: argparse.Namespace) -> int:
    from edge.app.clock import HIL_CLOCK, Clock
    from edge.app.statedir import HIL_LOCK, StateDirBusy, StateLock, state_dir
    from hil.config import hil_of
    from hil.site import run_hil

    cfg = _load(args.config)
    _logging(args.log_level)
    plan = None
    if args.vtn is not None:  # the grid-operator emulator too (an OpenADR VTN)
        from hil.emulators.vtn import DEMO_EVENTS, address, load_events, run_vtn

        source = Path(args.vtn) if args.vtn else DEMO_EVENTS
        try:
            plan = load_events(source)
            address(cfg.openadr.vtn_url)
        except FileError as exc:
            return refuse(exc, "event file")
        except ValueError as exc:
            print(f"pedf-edge hil --vtn: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    script, passed = None, []
    if args.platform:  # the park-platform emulator's script; built-in without FILE
        from hil.emulators.script import load_script

        try:
            script = load_script(Path(args.platform))
        except FileError as exc:
            return refuse(exc, "platform script")

    async def platform(stop: asyncio.Event) -> None:
        """The script is the run: when it ends, the simulator stops with it."""
        from hil.emulators.platform import run_platform

        task = asyncio.create_task(run_platform(cfg.mqtt, cfg.site.id, script))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if task.done():
            passed.append(task.result().passed)
        else:
            task.cancel()
        stop.set()

    directory = state_dir(cfg)
    lock = StateLock(directory, HIL_LOCK)
    try:
        lock.acquire()
    except StateDirBusy as exc:
        print(f"pedf-edge hil: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    clock = Clock(hil_of(cfg).start, args.speed or hil_of(cfg).speed)
    clock.save(directory / HIL_CLOCK)  # `pedf-edge run --hil-clock` keeps this time

    signals: list[int] = []

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop, signals)
        jobs = [run_hil(cfg, clock, stop)]
        if plan is not None:
            jobs.append(run_vtn(cfg.openadr.vtn_url, plan, cfg.openadr.poll_interval_s, stop,
                                source=str(source)))
        if args.platform is not None:
            jobs.append(platform(stop))
        await asyncio.gather(*jobs)

    try:
        asyncio.run(main())
    except OSError as exc:  # a port taken, a serial device missing: the message says which
        print(f"pedf-edge hil: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        lock.release()
    if signal.SIGINT in signals:
        raise KeyboardInterrupt  # stopped cleanly; main() says so once
    if args.platform is not None:
        return 0 if passed == [True] else EXIT_RUNTIME
    return 0



def _offline(name: str, job) -> int:
    """demo and simulate: the daemon's refusals, as a message and an exit code."""
    from edge.app.statedir import StateDirBusy
    from edge.control.kernel import KernelUnavailable

    try:
        return job()
    except KernelUnavailable as exc:
        print(f"pedf-edge: {exc}", file=sys.stderr)
        return EXIT_KERNEL
    except StateDirBusy as exc:
        print(f"pedf-edge {name}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME


def cmd_demo(args: argparse.Namespace) -> int:
    from tools.demo import run_demo

    cfg = _load(args.config)
    _logging(args.log_level)
    return _offline("demo", lambda: asyncio.run(run_demo(
        cfg, wall_s=args.wall_seconds, speed=args.speed, hours=args.hours, report=args.report)))


def cmd_simulate(args: argparse.Namespace) -> int:
    from tools.simulate.command import command

    cfg = _load(args.config)
    _logging(args.log_level)
    return _offline("simulate", lambda: command(
        cfg, args.scenario, out=args.out, report=args.report, forecast=args.forecast,
        planner=not args.no_planner, speed=args.speed, hours=args.hours, quiet=args.quiet))


def day_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: write YYYY-MM-DD") from None


def cmd_report(args: argparse.Namespace) -> int:
    from tools.sitereport import NoHistory, day_report

    cfg = _load(args.config)
    _logging(args.log_level)
    try:
        path, headline = day_report(cfg, args.day, args.out)
    except NoHistory as exc:
        print(f"pedf-edge report: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{headline}\nReport: {path}")
    return 0

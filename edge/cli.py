"""`pedf-edge` command line: check, run, hil, demo, simulate, scan, schema.

Exit codes:
  0  ok (scan: at least one SunSpec device identified)
  1  runtime failure (hil --platform: a check failed; another process holds the state dir;
     run --hil-clock without a running hil)
  2  invalid configuration or usage
  3  the compiled kernel is missing
  4  scan: nothing answered at all (connection refused or timed out, or every unit silent)
  5  scan: something answered, but it is not SunSpec (no "SunS" marker) or its model chain
     is broken
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from drivers.fileerrors import EXIT_INVALID, FileError, refuse
from edge import config as config_mod
from edge.config import Config
from edge.config.shipped import config_path
from edge.roles import role_of

EXIT_RUNTIME, EXIT_CONFIG, EXIT_KERNEL = 1, EXIT_INVALID, 3
EXIT_NO_ANSWER, EXIT_NOT_SUNSPEC = 4, 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def _load(path: str) -> Config:
    """The site config, or exit 2 with every problem; the simulator's sections (`sim:`,
    `hil:`) are checked here too, by the simulator, so the file stays valid as one."""
    from drivers.registry import BUILDERS
    from edge.app.devices import check_maps
    from hil.config import problems as sim_problems

    try:
        cfg = config_mod.load(path)
        missing = sim_problems(cfg)
        missing += [f"devices[{i}].protocol: {d.protocol} has no driver yet "
                    f"(available: {', '.join(sorted(BUILDERS))})"
                    for i, d in enumerate(cfg.devices) if d.protocol not in BUILDERS]
        missing += check_maps(cfg)
        if missing:
            raise config_mod.ConfigError(path, missing)
        return cfg
    except config_mod.ConfigError as exc:
        raise SystemExit(refuse(exc, "configuration")) from None


def _summary(cfg: Config) -> str:
    c = cfg.control
    lines = [
        f"site {cfg.site.id} ({cfg.site.name or 'unnamed'}), {cfg.site.timezone}",
        f"devices ({len(cfg.devices)}):",
    ]
    for d in cfg.devices:
        detail = role_of(d).summary(d)
        if d.protocol.startswith("dlt645-"):
            where = f"address {d.address}"
        else:
            where = f"unit {d.unit_id}" + (f" map {d.map}" if d.map else "")
        bus = f"{d.host}:{d.port}"
        if d.serial is not None and d.endpoint[0] == "serial":
            s = d.serial
            bus = f"{s.port} {s.baudrate} {s.bytesize}{s.parity}{s.stopbits}"
        lines.append(f"  {d.id:<10} {d.role:<8} {d.protocol} {bus} {where}  {detail}")
    imp = "none" if c.import_limit_kw is None else f"{c.import_limit_kw:g} kW"
    exp = "none" if c.export_limit_kw is None else f"{c.export_limit_kw:g} kW"
    lines += [
        f"control: every {c.cycle_s:g} s; {', '.join(c.functions)}; import limit {imp}; export limit {exp}",
        f"tariff: {len(cfg.tariff.periods)} periods, {cfg.tariff.currency}, export {cfg.tariff.export_price:g}/kWh",
        f"mqtt: {cfg.mqtt.host}:{cfg.mqtt.port} {cfg.mqtt.topic_prefix}/{cfg.site.id}/... every {cfg.mqtt.telemetry_s:g} s",
        f"state: {cfg.storage.dir}",
    ]
    oa = cfg.openadr
    if oa.vtn_url:
        levels = ", ".join(f"{k}: {v:g}" for k, v in sorted(oa.simple_levels_kw.items()))
        lines.append(f"openadr: VEN {oa.ven_name or cfg.site.id} -> {oa.vtn_url}, poll every "
                     f"{oa.poll_interval_s:g} s, SIMPLE shed kW {{{levels}}}, "
                     f"{'TLS + signed' if oa.cert_file else 'no certificates'}")
    return "\n".join(lines)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("apscheduler", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The drivers report every failed request with its device; pymodbus's own lines are
    # about late replies to requests the cycle abandoned, which it discards as it should.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def _stop_on_signals(stop: asyncio.Event, got: list[int] | None = None) -> None:
    """SIGTERM and SIGINT set `stop` (a clean shutdown); `got` collects which came."""
    loop = asyncio.get_running_loop()

    def stopped(sig: int) -> None:
        if got is not None:
            got.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped, sig)


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


def cmd_schema(args: argparse.Namespace) -> int:
    from edge.vpp.schemas.catalogue import dumps

    try:
        print(dumps(args.name))
    except KeyError as exc:
        print(f"pedf-edge schema: {exc.args[0]}", file=sys.stderr)
        return EXIT_CONFIG
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pedf-edge")
    except PackageNotFoundError:
        return "unknown (not installed: pip install .)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pedf-edge", description="PEDF building / VPP edge controller")
    p.add_argument("--version", action="version", version=f"pedf-edge {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, default_config: str | None = None) -> None:
        sp.add_argument("-c", "--config", required=default_config is None, default=default_config,
                        help="site YAML" + (f" (default {default_config})" if default_config else ""))
        sp.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    sp = sub.add_parser("check", help="validate a site config and summarise it")
    common(sp)
    sp.set_defaults(fn=cmd_check)

    sp = sub.add_parser("run", help="run the controller daemon")
    common(sp)
    when = sp.add_mutually_exclusive_group()
    when.add_argument("--speed", type=float, default=None,
                      help="simulated clock from hil.start at N x real time (HIL runs only); "
                      "a restart resumes it (storage.dir/sim-clock.json)")
    when.add_argument("--hil-clock", action="store_true",
                      help="keep the simulated time of the `pedf-edge hil` running on this "
                      "config (its start and speed)")
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("hil", help="serve the configured devices as simulators on loopback")
    common(sp)
    sp.add_argument("--speed", type=float, default=None, help="simulated time speed-up (default hil.speed)")
    sp.add_argument("--vtn", nargs="?", const="", default=None, metavar="FILE",
                    help="also run the grid-operator emulator: an OpenADR VTN at openadr.vtn_url "
                    "(default http://127.0.0.1:8080/OpenADR2/Simple/2.0b) issuing the events of "
                    "FILE (default: the bundled hil/events/demo.yaml) to each VEN that registers")
    sp.add_argument("--platform", nargs="?", const="", default=None, metavar="FILE",
                    help="also run the park-platform emulator against the daemon (`pedf-edge run` "
                    "on the same config): send the commands of FILE (default: a built-in script), "
                    "check acks and reports, print a summary, then stop (exit 1 on a failed check)")
    sp.set_defaults(fn=cmd_hil)

    sp = sub.add_parser("schema", help="print the JSON Schema of an MQTT message (all without NAME)")
    sp.add_argument("name", nargs="?", metavar="NAME",
                    help="telemetry, devices, flex, ack, dr_report, dispatch, dr_event, mode, cancel")
    sp.set_defaults(fn=cmd_schema)

    sp = sub.add_parser("demo", help="HIL + controller for one simulated day, then a KPI table")
    common(sp, "configs/demo.yaml")
    sp.add_argument("--wall-seconds", type=float, default=110.0,
                    help="wall time for the simulated span (default 110 s)")
    sp.add_argument("--speed", type=float, default=None, help="override the speed-up directly")
    sp.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    sp.add_argument("--report", type=Path, metavar="FILE.html",
                    help="where to write the HTML report (default: report.html in the demo's "
                    "state dir, storage.dir/demo)")
    sp.set_defaults(fn=cmd_demo, log_level="warning")

    sp = sub.add_parser("simulate", help="run a scenario (HIL + controller on the simulated "
                        "clock) and score it against perfect foresight, rules and no battery")
    common(sp, "configs/demo.yaml")
    sp.add_argument("-s", "--scenario", required=True, metavar="FILE",
                    help="scenario YAML, or a shipped one by name (e.g. summer_weekday_tou)")
    sp.add_argument("--out", type=Path, metavar="KPI.json", help="write the KPIs as JSON")
    sp.add_argument("--report", type=Path, metavar="FILE.html", help="write the HTML report")
    sp.add_argument("--forecast", choices=["perfect", "own"], default="own",
                    help="planner forecasts: the daemon's own (default) or the scenario's "
                    "true series")
    sp.add_argument("--no-planner", action="store_true", help="rule-based control only")
    sp.add_argument("--speed", type=float, default=720.0,
                    help="simulated time speed-up (default 720: a day in ~2 min)")
    sp.add_argument("--hours", type=float, default=None,
                    help="run only the first H hours of the scenario")
    sp.add_argument("--quiet", action="store_true", help="no progress bar or table")
    sp.set_defaults(fn=cmd_simulate, log_level="warning")

    sp = sub.add_parser("scan", help="find SunSpec devices at HOST[:PORT] and show their values")
    sp.add_argument("target", type=_target, metavar="HOST[:PORT]", help="Modbus TCP address (port 502)")
    sp.add_argument("--unit", type=_unit, action="append", metavar="N",
                    help="unit id to scan; repeat for units behind a gateway (default 1)")
    sp.add_argument("--json", action="store_true", help="print one JSON document")
    sp.add_argument("--timeout", type=float, default=2.0, metavar="S",
                    help="seconds to wait for each reply (default 2)")
    sp.set_defaults(fn=cmd_scan)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "config", None) is not None:
        args.config = str(config_path(args.config))  # else the shipped example of that name
    if getattr(args, "config", None) is not None and not Path(args.config).exists():
        print(f"pedf-edge: config file {args.config} not found (pass -c FILE)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print(f"pedf-edge {args.cmd}: interrupted (Ctrl-C); run it again to start over",
              file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

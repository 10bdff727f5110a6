"""`pedf-edge` command line: check, run, hil, demo, scan.

Exit codes:
  0  ok (scan: at least one SunSpec device identified)
  1  runtime failure
  2  invalid configuration or usage
  3  the compiled kernel is missing
  4  scan: nothing answered at all (connection refused or timed out, or every unit silent)
  5  scan: something answered, but it is not SunSpec (no "SunS" marker) or its model chain
     is broken
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from edge import config as config_mod
from edge.config import BatteryDevice, Config, MeterDevice, PvDevice

EXIT_RUNTIME, EXIT_CONFIG, EXIT_KERNEL = 1, 2, 3
EXIT_NO_ANSWER, EXIT_NOT_SUNSPEC = 4, 5


def _load(path: str) -> Config:
    from drivers.modbus_map import check_config as check_maps
    from drivers.registry import BUILDERS

    try:
        cfg = config_mod.load(path)
        missing = [f"devices[{i}].protocol: {d.protocol} has no driver yet "
                   f"(available: {', '.join(sorted(BUILDERS))})"
                   for i, d in enumerate(cfg.devices) if d.protocol not in BUILDERS]
        missing += check_maps(cfg)
        if missing:
            raise config_mod.ConfigError(path, missing)
        return cfg
    except config_mod.ConfigError as exc:
        print(f"{exc.source}: invalid configuration ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _summary(cfg: Config) -> str:
    c = cfg.control
    lines = [
        f"site {cfg.site.id} ({cfg.site.name or 'unnamed'}), {cfg.site.timezone}",
        f"devices ({len(cfg.devices)}):",
    ]
    for d in cfg.devices:
        if isinstance(d, PvDevice):
            detail = f"{d.rated_kw:g} kW rated"
        elif isinstance(d, BatteryDevice):
            detail = (f"{d.capacity_kwh:g} kWh, -{d.max_charge_kw:g}/+{d.max_discharge_kw:g} kW, "
                      f"SoC {d.soc_min_pct:g}-{d.soc_max_pct:g} %")
        else:
            assert isinstance(d, MeterDevice)
            detail = f"measures {d.measures}"
        if d.protocol.startswith("dlt645-"):
            where = f"address {d.address}"
        else:
            where = f"unit {d.unit_id}" + (f" map {d.map}" if d.map else "")
        bus = d.serial.port if d.serial is not None and d.endpoint[0] == "serial" else f"{d.host}:{d.port}"
        lines.append(f"  {d.id:<10} {d.role:<8} {d.protocol} {bus} {where}  {detail}")
    imp = "none" if c.import_limit_kw is None else f"{c.import_limit_kw:g} kW"
    exp = "none" if c.export_limit_kw is None else f"{c.export_limit_kw:g} kW"
    lines += [
        f"control: every {c.cycle_s:g} s; {', '.join(c.functions)}; import limit {imp}; export limit {exp}",
        f"tariff: {len(cfg.tariff.periods)} periods, {cfg.tariff.currency}, export {cfg.tariff.export_price:g}/kWh",
        f"mqtt: {cfg.mqtt.host}:{cfg.mqtt.port} {cfg.mqtt.topic_prefix}/{cfg.site.id}/... every {cfg.mqtt.telemetry_s:g} s",
        f"state: {cfg.storage.dir}",
    ]
    return "\n".join(lines)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("pymodbus", "apscheduler", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    print(_summary(cfg))
    print("configuration OK")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge.clock import Clock
    from edge.dispatch import KernelUnavailable
    from edge.runtime import Daemon

    cfg = _load(args.config)
    _logging(args.log_level)
    clock = Clock(cfg.hil.start, args.speed) if args.speed else Clock()

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await Daemon(cfg, clock).run(stop)

    try:
        asyncio.run(main())
    except KernelUnavailable as exc:
        print(f"pedf-edge: {exc}", file=sys.stderr)
        return EXIT_KERNEL
    return 0


def cmd_hil(args: argparse.Namespace) -> int:
    from hil.site import run_hil

    cfg = _load(args.config)
    _logging(args.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await run_hil(cfg, args.speed, stop)

    asyncio.run(main())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import run_demo
    from edge.dispatch import KernelUnavailable

    cfg = _load(args.config)
    _logging(args.log_level)
    try:
        return asyncio.run(run_demo(cfg, wall_s=args.wall_seconds, speed=args.speed, hours=args.hours))
    except KernelUnavailable as exc:
        print(f"pedf-edge: {exc}", file=sys.stderr)
        return EXIT_KERNEL


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

    from drivers.scan import NO_ANSWER, OK, render_text, scan

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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pedf-edge", description="PEDF building / VPP edge controller")
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
    sp.add_argument("--speed", type=float, default=None,
                    help="simulated clock from hil.start at N x real time (HIL runs only)")
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("hil", help="serve the configured devices as simulators on loopback")
    common(sp)
    sp.add_argument("--speed", type=float, default=None, help="simulated time speed-up (default hil.speed)")
    sp.set_defaults(fn=cmd_hil)

    sp = sub.add_parser("demo", help="HIL + controller for one simulated day, then a KPI table")
    common(sp, "configs/demo.yaml")
    sp.add_argument("--wall-seconds", type=float, default=110.0,
                    help="wall time for the simulated span (default 110 s)")
    sp.add_argument("--speed", type=float, default=None, help="override the speed-up directly")
    sp.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    sp.set_defaults(fn=cmd_demo, log_level="warning")

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
    if getattr(args, "config", None) is not None and not Path(args.config).exists():
        print(f"pedf-edge: config file {args.config} not found (pass -c FILE)", file=sys.stderr)
        return EXIT_CONFIG
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

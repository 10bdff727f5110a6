"""`pedf-edge` command line: check, run, hil, demo, simulate, report, scan, schema.

Exit codes:
  0  ok (scan: at least one SunSpec device identified)
  1  runtime failure (hil --platform: a check failed; another process holds the state dir;
     run --hil-clock without a running hil)
  2  invalid configuration or usage (report: no history for the day)
  3  the compiled kernel is missing
  4  scan: nothing answered at all (connection refused or timed out, or every unit silent)
  5  scan: something answered, but it is not SunSpec (no "SunS" marker) or its model chain
     is broken
  130  interrupted (Ctrl-C)
"""


from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli.common import EXIT_CONFIG, EXIT_INTERRUPTED
from edge.cli.daemon import _target, _unit, cmd_check, cmd_run, cmd_scan, cmd_schema
from edge.cli.offline import cmd_demo, cmd_hil, cmd_report, cmd_simulate, day_arg
from edge.config.shipped import config_path


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
                    help="telemetry, devices, flex, plan, carbon, ack, dr_report, dispatch, "
                    "dr_event, mode, cancel, ev_session")
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

    sp = sub.add_parser("report", help="the HTML day report of a site from its own history: "
                        "flows, prices, the bill and what the battery saved")
    common(sp)
    sp.add_argument("--day", type=day_arg, metavar="YYYY-MM-DD",
                    help="the local day (default: yesterday)")
    sp.add_argument("--out", type=Path, metavar="FILE.html",
                    help="where to write it (default: report-<site>-<day>.html here)")
    sp.set_defaults(fn=cmd_report, log_level="warning")

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



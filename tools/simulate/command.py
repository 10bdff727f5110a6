"""`pedf-edge simulate` on the command line: load the scenario, run it with a progress bar,
print the KPI table and write the JSON and HTML report asked for."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from drivers.fileerrors import refuse
from edge.config import Config
from hil import scenario as scenario_mod
from tools.simulate.evkpis import unmet
from tools.simulate.islandkpis import summary as island_summary
from tools.simulate.kpis import evaluate, extra_rows, strategies, write_json
from tools.simulate.run import run


def summary_table(k: dict, console: Console) -> None:
    cols = strategies(k)
    cur = k["currency"]
    mode = f"planner, {k['forecast']} forecasts" if k["planner"] else "rule-based (no planner)"
    table = Table(title=f"{k['scenario']} on {k['site']}: {k['hours']:g} h, {mode}")
    table.add_column("KPI")
    table.add_column("unit")
    for n, _ in cols:
        table.add_column(n, justify="right")
    for name, unit, key in (("Total cost", cur, "total_cost"), ("Energy cost", cur, "energy_cost"),
                            ("Demand charge", cur, "demand_cost"),
                            ("Adjusted cost", cur, "adjusted_cost"),
                            ("Peak import (15 min)", "kW", "peak_15min_import_kw"),
                            ("Exported", "kWh", "export_kwh"),
                            ("PV curtailed", "kWh", "pv_curtailed_kwh"),
                            ("SoC min", "%", "soc_min_pct"), ("SoC max", "%", "soc_max_pct")):
        table.add_row(name, unit, *(("–" if c.get(key) is None else f"{c[key]:,.2f}")
                                    for _, c in cols))
    for name, unit, key, digits in extra_rows(k):
        table.add_row(name, unit, *(("–" if c.get(key) is None else f"{c[key]:,.{digits}f}")
                                    for _, c in cols))
    console.print(table)
    r = k.get("cost_ratio_vs_optimum")
    lv = k["limit_violations"]
    st = k["solve_times"]
    console.print(
        "cost_ratio_vs_optimum: " + ("–" if r is None else f"{r:.4f} ({k['ratio_basis']})")
        + (f"; savings captured {100 * k['savings_capture']:.1f} %"
           if k.get("savings_capture") is not None else ""))
    console.print(f"limit excursions: import {lv['import']['count']}, export "
                  f"{lv['export']['count']} (worst {lv['export']['worst_kw']:.2f} kW), DR "
                  f"{lv['dr']['count']}; plans {st['plans']}"
                  + (f", solve p50 {1e3 * st['p50_s']:.0f} ms, max {1e3 * st['max_s']:.0f} ms"
                     if st["plans"] else "")
                  + f"; cycles {k['cycles']}, crashes {k['crashes']}")
    if "island" in k:
        console.print(island_summary(k["island"]))
    for note in k.get("notes", []):
        console.print(f"note: {note}")
    if short := unmet(k.get("ev_sessions", {}).get("controller", [])):
        console.print(f"EV sessions the controller left short: {short}")


def command(config: Config, scenario_path: str, *, out: Path | None, report: Path | None,
            forecast: str, planner: bool, speed: float, hours: float | None,
            quiet: bool = False) -> int:
    """`pedf-edge simulate`; returns the exit code (the CLI has loaded the config)."""
    console = Console(stderr=True, quiet=quiet)
    try:
        sc = scenario_mod.load(scenario_path)
        if hours is not None:
            sc = sc.truncated(hours)
        sc.apply(config)  # scenario errors before anything starts
    except scenario_mod.ScenarioError as exc:
        return refuse(exc, "scenario")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.fields[sim]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(sc.name, total=sc.duration_s, sim="")

        def progress(t: float, total: float, status: str) -> None:
            bar.update(task, completed=t, sim=status[:60])

        res = asyncio.run(run(sc, config, forecast=forecast, planner=planner, speed=speed,
                              progress=progress))
    console.print("solving the references (perfect-foresight LP, rule-based replay) ...")
    kpis = evaluate(res)
    screen = Console(quiet=quiet)
    if not screen.is_terminal:  # piped or logged: room for every column, not 80 characters
        screen = Console(quiet=quiet, width=132)
    summary_table(kpis, screen)
    if out is not None:
        write_json(kpis, out)
        console.print(f"KPIs written to {out}")
    if report is not None:
        from tools.report_html import write  # matplotlib: only for a report
        from tools.simulate.report import report_data

        write(report_data(res), report)
        console.print(f"report written to {report}")
    return 0 if res.crashes == 0 else 1

"""The HTML report (tools/report_html.py) and the `simulate` command around it: the command
writes the KPI JSON the issue lists and a self-contained report with the four figures per
day; a bad scenario exits 2 naming the field; the demo writes its report too."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import yaml
from conftest import free_port

from edge import config as config_mod
from hil.site import Sample
from tools import report_html
from tools.demo import run_demo
from tools.simulate.run import isolated

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")


def pedf_edge(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout,
                          env=dict(os.environ, COLUMNS="120"))  # the installed package


def figure_ids(html: str) -> list[str]:
    return re.findall(r"<figure id='(fig-[a-z]+-\d{4}-\d\d-\d\d)'>\s*<svg", html)


def test_simulate_writes_kpis_and_a_self_contained_report(tmp_path: Path) -> None:
    result = pedf_edge(
        "simulate", "-c", str(ROOT / "configs/demo.yaml"),
        "-s", str(ROOT / "hil/scenarios/cloudy_day.yaml"), "--hours", "1", "--speed", "1800",
        "--forecast", "perfect", "--out", "kpi.json", "--report", "report.html",
        cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cost_ratio_vs_optimum" in result.stdout
    k = json.loads((tmp_path / "kpi.json").read_text())
    c = k["controller"]
    for key in ("total_cost", "energy_cost", "demand_cost", "peak_15min_import_kw",
                "export_kwh", "self_consumption_pct", "soc_min_pct", "soc_max_pct"):
        assert key in c, key
    assert set(k["limit_violations"]) >= {"import", "export", "dr"}
    assert {"count", "worst_kw"} <= set(k["limit_violations"]["export"])
    assert {"plans", "p50_s", "max_s"} <= set(k["solve_times"])
    assert k["forecast_error"]["load"]["mae_kw"] == 0  # perfect forecasts are perfect
    assert set(k["references"]) == {"optimum", "rule_based", "no_battery"}
    assert k["cost_ratio_vs_optimum"] > 0 and k["hours"] == 1
    html = (tmp_path / "report.html").read_text()
    assert figure_ids(html) == [f"fig-{f}-2026-06-24" for f in report_html.FIGURES]
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", html)  # nothing fetched
    assert "Cost ratio vs optimum" in html and "<script" not in html


def test_simulate_rejects_a_bad_scenario_naming_the_field(tmp_path: Path) -> None:
    bad = yaml.safe_load((ROOT / "hil/scenarios/cloudy_day.yaml").read_text())
    for key in ("pv_kw", "load_kw"):
        bad["series"][key]["csv"] = str(ROOT / "hil/scenarios/data/cloudy_day.csv")
    bad["series"]["load_kw"]["column"] = "load_kW"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = pedf_edge("simulate", "-c", str(ROOT / "configs/demo.yaml"), "-s", "bad.yaml",
                       cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "series.load_kw.column: " in result.stderr
    assert "has no column 'load_kW'" in result.stderr


def _samples(start: datetime, hours: int) -> list[Sample]:
    out = []
    for m in range(1, hours * 60 + 1):
        t = start + timedelta(minutes=m)
        h = m / 60
        pv = max(0.0, 80 * np.sin(np.pi * (h % 24 - 6) / 12)) if 6 < h % 24 < 18 else 0.0
        out.append(Sample(t, 40.0, pv, pv, 10.0, 30.0 - pv, 50.0))
    return out


def test_report_has_four_figures_for_each_local_day() -> None:
    start = datetime(2026, 7, 1, tzinfo=TZ).astimezone(UTC)
    n = 192
    steps = report_html.Steps(start, 900, np.full(n, 5.0), np.full(n, -5.0), np.full(n, 60.0))
    data = report_html.ReportData(
        title="two days", tz=TZ, currency="CNY", samples=_samples(start, 48),
        import_price=lambda t: 1.1 if 8 <= t.astimezone(TZ).hour < 21 else 0.3,
        export_price=0.39, kpi_columns=["a", "b"], kpi_rows=[("Cost", "CNY", [1.0, None])],
        plan=steps, optimum=steps, actual=steps, import_limit_kw=80, export_limit_kw=0,
        windows=[(start + timedelta(hours=17), start + timedelta(hours=18), "dr-1")])
    html = report_html.render(data)
    # the sample at 00:00 closes the first day's last minute: two days, not three
    assert figure_ids(html) == [f"fig-{f}-{d}" for d in ("2026-07-01", "2026-07-02")
                                for f in report_html.FIGURES]
    assert "<td class=\"n\">1.00</td><td class=\"n\">–</td>" in html


async def test_demo_writes_its_report(tmp_path: Path) -> None:
    cfg = isolated(config_mod.load(ROOT / "configs/demo.yaml"))
    data = cfg.model_dump()
    data["mqtt"]["port"] = free_port()  # nothing answers: the demo starts its own broker
    data["storage"]["dir"] = tmp_path / "state"
    cfg = config_mod.Config.model_validate(data)
    code = await run_demo(cfg, speed=1800, hours=1)
    assert code == 0
    html = (tmp_path / "state" / "demo" / "report.html").read_text()
    assert figure_ids(html) == [f"fig-{f}-2026-06-22" for f in report_html.FIGURES]
    assert "no battery" in html


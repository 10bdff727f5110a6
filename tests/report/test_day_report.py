"""`pedf-edge report`: a day of a site from its own history file, as the HTML day report with
what the battery saved at the configured tariff; a day the history lacks exits 2 naming the
state dir and the days it has."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from edge.cli import main
from edge.report.history import History, Interval

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
H = 0.25  # hours per interval
PRICES = [(0, 0.31), (8, 0.68), (10, 1.12), (15, 0.68), (18, 1.12), (21, 0.68)]  # demo tariff
EXPORT = 0.39


def price(hour: float) -> float:
    return [p for h, p in PRICES if h <= hour][-1]


def site(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    data["storage"]["dir"] = str(tmp_path / "state")
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def quarter(k: int) -> tuple[float, float, float]:
    """Load, PV and battery (+ discharge) kW of quarter hour k of the day: the battery
    charges 40 kW in the night valley and discharges 40 kW in the evening peak."""
    h = k / 4
    pv = 100.0 * max(0.0, 1 - abs(h - 12) / 6)  # 06:00-18:00, 100 kW at noon
    bess = -40.0 if h < 3 else 40.0 if 18 <= h < 21 else 0.0
    return 40.0, pv, bess


def put_day(history: History, day: date, skip: range = range(0)) -> dict[str, float]:
    """96 intervals of `day` (less `skip`); returns the bills the report should find."""
    start = datetime.combine(day, datetime.min.time(), TZ).astimezone(UTC)
    bill = {"with": 0.0, "without": 0.0, "import": 0.0}
    for k in range(96):
        if k in skip:
            continue
        load, pv, bess = quarter(k)
        grid = load - pv - bess
        history.put(Interval(start + timedelta(minutes=15 * k), import_kwh=max(grid, 0) * H,
                             export_kwh=max(-grid, 0) * H, pv_kwh=pv * H, load_kwh=load * H,
                             charge_kwh=max(-bess, 0) * H, discharge_kwh=max(bess, 0) * H,
                             covered_s=900))
        for case, g in (("with", grid), ("without", load - pv)):
            bill[case] += max(g, 0) * H * price(k / 4) - max(-g, 0) * H * EXPORT
        bill["import"] += max(grid, 0) * H
    return bill


def test_the_day_report_holds_the_days_figures_and_what_the_battery_saved(tmp_path, monkeypatch,
                                                                          capsys):
    config = site(tmp_path)
    history = History(tmp_path / "state" / "history.sqlite")
    day = date(2026, 6, 21)
    expected = put_day(history, day)
    put_day(history, day - timedelta(days=1))
    history.close()
    monkeypatch.chdir(tmp_path)
    assert main(["report", "-c", str(config), "--day", "2026-06-21"]) == 0
    out = capsys.readouterr().out
    page = (tmp_path / "report-demo-office-2026-06-21.html").read_text()
    saved = expected["without"] - expected["with"]
    assert saved > 20  # the night valley bought for the evening peak
    line = (f"On 2026-06-21 the battery saved {saved:,.2f} CNY: the day's bill was "
            f"{expected['with']:,.2f} CNY at the configured tariff, against "
            f"{expected['without']:,.2f} CNY for the same load and PV without the battery")
    assert line in out and line in page.replace("&#x27;", "'")
    assert f"<td class=\"n\">{expected['import']:,.2f}</td>" in page  # energy imported
    assert "<td class=\"n\">120.00</td><td class=\"n\">–</td>" in page  # charged: 3 h x 40 kW
    ids = re.findall(r"<figure id='fig-([a-z]+)-2026-06-21'>\s*<svg", page)
    assert ids == ["power", "prices", "cost"]  # no SoC in a history, no plan to compare
    assert "Power flows (15-min means)" in page and "Cumulative bill" in page
    assert "dearest hours (1.12 CNY/kWh)" in page and "cheapest hours (0.31 CNY/kWh)" in page
    assert "Recorded: 96 of the day&#x27;s 96 quarter hours." in page
    assert "2026-06-20" not in re.sub(r"<svg.*?</svg>", "", page, flags=re.S)  # one day only


def test_a_gap_in_the_day_is_said_and_the_default_day_is_yesterday(tmp_path, monkeypatch,
                                                                   capsys):
    config = site(tmp_path)
    yesterday = datetime.now(TZ).date() - timedelta(days=1)
    history = History(tmp_path / "state" / "history.sqlite")
    put_day(history, yesterday, skip=range(40, 48))  # two hours without the daemon
    history.close()
    out = tmp_path / "out" / "day.html"
    assert main(["report", "-c", str(config), "--out", str(out)]) == 0
    assert f"Report: {out}" in capsys.readouterr().out
    page = out.read_text()
    assert f"{yesterday.isoformat()} ({yesterday:%A})" in page
    assert "Recorded: 88 of the day&#x27;s 96 quarter hours." in page


def test_a_day_without_history_exits_2_naming_the_state_dir_and_the_days_it_has(
        tmp_path, monkeypatch, capsys):
    config = site(tmp_path)
    state = tmp_path / "state"
    monkeypatch.chdir(tmp_path)
    assert main(["report", "-c", str(config), "--day", "2026-06-21"]) == 2
    err = capsys.readouterr().err
    assert f"no history in {state} (no history.sqlite)" in err
    history = History(state / "history.sqlite")
    for day in (date(2026, 6, 18), date(2026, 6, 19), date(2026, 6, 21)):
        put_day(history, day)
    history.close()
    assert main(["report", "-c", str(config), "--day", "2026-06-20"]) == 2
    err = capsys.readouterr().err
    assert (f"no history for 2026-06-20 (Asia/Shanghai) in {state / 'history.sqlite'}; it has "
            "2026-06-18 to 2026-06-19, 2026-06-21 (3 days)") in err
    assert not list(tmp_path.glob("*.html"))


@pytest.mark.parametrize("day", ["21-06-2026", "2026-02-30", "yesterday"])
def test_a_malformed_day_is_a_usage_error(tmp_path, capsys, day):
    with pytest.raises(SystemExit) as exit_:
        main(["report", "-c", str(site(tmp_path)), "--day", day])
    assert exit_.value.code == 2
    assert "write YYYY-MM-DD" in capsys.readouterr().err

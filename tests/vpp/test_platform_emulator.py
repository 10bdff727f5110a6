"""The park-platform emulator against the real daemon: its built-in script passes on a
healthy site, and a wrong expectation is reported as a failure, not hidden."""

from __future__ import annotations

import yaml
from site_harness import device, running_site, site_dict, write_config

from edge.cli import main
from hil.emulators.platform import run_platform
from hil.emulators.script import Script


def night_site(tmp_path, port: int) -> dict:
    data = site_dict(tmp_path, port, functions=["peak_shaving", "export_limit"])
    data["hil"]["start"] = "2026-06-22T02:00:00+08:00"
    device(data, "load")["sim"] = {"profile": "flat", "day_kw": 40}
    device(data, "bess1")["sim"] = {"initial_soc_pct": 60}
    data["vpp"] = {"flex_s": 10}
    return data


async def test_builtin_script_passes_and_a_wrong_expectation_fails(tmp_path, mosquitto, capsys):
    wrong = Script.model_validate({"steps": [
        {"send": "dispatch", "payload": {"cmd_id": "x-{run}", "grid_target_kw": 70,
                                          "duration_s": 60},
         "expect": ["accepted"]},  # 40 kW load + 30 kW charge: within reach
        {"send": "dispatch", "payload": {"cmd_id": "y-{run}", "grid_target_kw": 500,
                                          "duration_s": 60},
         "expect": ["accepted"]},  # beyond the 80 kW import limit: the site rejects it
    ]})
    async with running_site(night_site(tmp_path, mosquitto.port), mosquitto, 20.0) as run:
        result = await run_platform(run.cfg.mqtt, run.cfg.site.id, site_timeout_s=20)
        out = capsys.readouterr().out
        failing = await run_platform(run.cfg.mqtt, run.cfg.site.id, wrong, site_timeout_s=20)
    assert result.passed, out
    names = [c.name for c in result.checks]
    assert any(n.endswith(" followed") for n in names), names
    assert sum(n.endswith("-> rejected") for n in names) == 3
    assert len(result.checks) >= 20 and result.messages > 20
    assert any(n.startswith("dr_event") and "report dr/" in n for n in names), names
    assert result.undocumented == []  # every field of every message is in the schemas
    assert "platform emulator: PASS" in out

    assert not failing.passed
    failed = [c for c in failing.checks if not c.ok]
    assert len(failed) == 1 and failed[0].name.startswith("dispatch y-")
    assert "import limit" in failed[0].detail
    assert "platform emulator: FAIL" in capsys.readouterr().out


def test_hil_platform_refuses_a_broken_script_before_starting(tmp_path, capsys):
    cfg = write_config(tmp_path, night_site(tmp_path, 1883))
    bad = tmp_path / "script.yaml"
    bad.write_text(yaml.safe_dump({"steps": [{"send": "dispatch", "expect": ["maybe"]}]}))
    assert main(["hil", "-c", str(cfg), "--platform", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "steps.0.payload" in err and "steps.0.expect.0" in err

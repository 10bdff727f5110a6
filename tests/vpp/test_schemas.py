"""The MQTT contract as JSON Schemas: printed by `pedf-edge schema`, strict for commands, and
matching what the daemon really publishes (every field documented, none missing)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import Subscriber, wait_for
from pydantic import ValidationError
from site_harness import device, running_site, site_dict

from edge import config as config_mod
from edge.app.clock import Clock
from edge.cli import main
from edge.control.instructions import InstructionBook
from edge.report.history import History, Interval
from edge.vpp.commands.judge import CommandJudge
from edge.vpp.commands.parse import validation_reason
from edge.vpp.schemas.catalogue import MESSAGES, undeclared
from edge.vpp.schemas.commands import Dispatch, DrEvent

ROOT = Path(__file__).resolve().parents[2]


def test_schema_command_prints_one_schema_per_message_or_all_of_them(capsys):
    for name, msg in MESSAGES.items():
        assert main(["schema", name]) == 0
        schema = json.loads(capsys.readouterr().out)
        assert schema["$schema"].endswith("/2020-12/schema") and schema["title"] == name
        key = "cmd_id" if msg.direction == "in" else "msg_id"
        assert key in schema["properties"] and key in schema["required"]
        assert msg.topic in schema["description"]
    assert main(["schema"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(MESSAGES)
    assert main(["schema", "telemetri"]) == 2
    assert "known: telemetry, devices" in capsys.readouterr().err


@pytest.mark.parametrize("payload, field", [
    ({"grid_target_kw": "10", "duration_s": 60}, "grid_target_kw"),  # a string for a number
    ({"grid_target_kw": True, "duration_s": 60}, "grid_target_kw"),
    ({"grid_target_kw": 10, "start": "2026-06-22T02:00:00", "duration_s": 60}, "start"),
    ({"grid_target_kw": 10, "start": 1781000000, "duration_s": 60}, "start"),
    ({"grid_target_kw": 10, "duration_s": 60, "priority": "high"}, "priority"),
    ({"grid_target_kw": 10, "end": "2026-06-22T02:00:00Z", "duration_s": 60}, ""),
    ({"grid_target_kw": 1e9, "duration_s": 60}, "grid_target_kw"),
])
def test_dispatch_schema_is_strict(payload, field):
    with pytest.raises(ValidationError) as err:
        Dispatch.model_validate_json(json.dumps({"cmd_id": "c1", **payload}), strict=True)
    assert field in {".".join(map(str, e["loc"])) for e in err.value.errors()}


@pytest.mark.parametrize("stamp", [
    "1796291792",  # a Unix time as text
    "1796291792.5",
    "2026-06-22 02:00:00+08:00",  # a space for the T
    "2026-06-22T02:00:00+0800",  # a compact offset
    "2026-06-22",  # a date only
    "2026-06-22T02:00:00",  # no offset
    "2026-02-30T02:00:00Z",  # no such day
])
def test_times_are_iso_8601_with_an_offset_only(stamp):
    payload = {"cmd_id": "c1", "grid_target_kw": 10, "start": stamp, "duration_s": 60}
    with pytest.raises(ValidationError) as err:
        Dispatch.model_validate_json(json.dumps(payload), strict=True)
    assert [".".join(map(str, e["loc"])) for e in err.value.errors()] == ["start"]
    assert "2026-06-22T04:00:00Z" in validation_reason(err.value) or "valid time" in \
        validation_reason(err.value)


@pytest.mark.parametrize("stamp", ["2026-06-22T02:00:00Z", "2026-06-22T02:00Z",
                                   "2026-06-22T02:00:00.250+08:00", "2026-06-21T18:00:00-00:00"])
def test_iso_8601_times_with_an_offset_validate(stamp):
    payload = {"cmd_id": "c1", "grid_target_kw": 10, "start": stamp, "duration_s": 60}
    d = Dispatch.model_validate_json(json.dumps(payload), strict=True)
    assert d.start.utcoffset() is not None


def test_a_unix_time_is_acknowledged_as_rejected_with_its_field_named():
    cfg = config_mod.load(ROOT / "configs" / "demo.yaml")
    view = SimpleNamespace(book=InstructionBook(), image=None)
    judge = CommandJudge(cfg, Clock(datetime(2026, 6, 22, 10, tzinfo=UTC), speed=1.0001), view,
                         f"pedf/v1/{cfg.site.id}/cmd/")
    payload = {"cmd_id": "u-1", "grid_target_kw": 10, "start": "1796291792", "duration_s": 60}
    acks, changed = judge.handle(f"pedf/v1/{cfg.site.id}/cmd/dispatch",
                                 json.dumps(payload).encode())
    assert not changed and view.book.get("park:u-1") is None
    assert acks == [{"cmd_id": "u-1", "command": "dispatch", "status": "rejected",
                     "reason": acks[0]["reason"]}]
    assert acks[0]["reason"].startswith("invalid: start: '1796291792' is not an ISO 8601 time")


def test_well_formed_commands_validate():
    d = Dispatch.model_validate_json(
        '{"cmd_id": "c-1:a.b_2", "grid_delta_kw": -10, "start": "2026-06-22T02:00:00+08:00",'
        ' "end": "2026-06-22T03:00:00+08:00"}', strict=True)
    assert d.grid_delta_kw == -10.0 and d.start.utcoffset().total_seconds() == 8 * 3600
    e = DrEvent.model_validate_json(
        '{"cmd_id": "e1", "event_id": "ev-7", "direction": "increase", "target_kw": 60,'
        ' "notice": "day_ahead", "duration_s": 3600}', strict=True)
    assert e.kw is None and e.target_kw == 60.0


def message_name(suffix: str) -> str | None:
    """The catalogue name of an outgoing topic (after <prefix>/<site>/); None: not JSON."""
    if suffix.startswith("dr/"):
        return "dr_report"
    return next((n for n, m in MESSAGES.items() if m.direction == "out" and m.topic == suffix),
                None)


async def test_every_report_the_daemon_publishes_matches_its_schema(tmp_path, mosquitto):
    """telemetry, devices, flex, ack, carbon, plan and dr reports from the real daemon (the
    planner in its worker), with every device good and then with the battery gone (nulls
    where a figure needs it)."""
    data = site_dict(tmp_path, mosquitto.port)
    # PV, load and battery all at work; a quarter hour closes 90 simulated seconds in
    data["hil"]["start"] = "2026-06-22T09:58:30+08:00"
    device(data, "bess1")["sim"] = {"initial_soc_pct": 50}
    data["mqtt"]["devices_s"] = 20
    data["vpp"] = {"flex_s": 20}
    data["dr"] = {"ramp_in_s": 0, "restore_s": 0, "report_s": 20}
    data["planner"] = {"enabled": True, "horizon_h": 4, "step_min": 15, "replan_min": 15}
    # The daemon ran from 09:45 and saved the open quarter hour before a restart: the one
    # closing at 10:00 is then measured well enough for M&V figures, not nulls.
    history = History(Path(data["storage"]["dir"]) / "history.sqlite")
    history.put(Interval(datetime(2026, 6, 22, 1, 45, tzinfo=UTC), import_kwh=0.1, pv_kwh=12.0,
                         load_kwh=12.1, covered_s=510))
    history.close()
    async with running_site(data, mosquitto, 20.0) as run:
        prefix = run.daemon.link.topic("")
        dr = Subscriber(mosquitto.host, mosquitto.port, run.daemon.link.topic("dr/#"))
        assert dr.subscribed.wait(10)

        def docs() -> list[tuple[str, dict]]:
            return run.sub.documents() + dr.documents()

        def names() -> set[str | None]:
            return {message_name(t.removeprefix(prefix)) for t, _ in docs()}

        try:
            # a DR event up to the quarter hour: its final report comes once that closes
            run.sub.client.publish(run.daemon.link.topic("cmd/dr_event"), json.dumps(
                {"cmd_id": "e-1", "event_id": "ev-s", "direction": "reduce", "kw": 10,
                 "baseline_kw": 60, "notice": "minute", "end": "2026-06-22T02:00:00Z"}), qos=1)
            topic = run.daemon.link.topic("cmd/dispatch")
            run.sub.client.publish(topic, json.dumps({"cmd_id": "s-1", "grid_max_kw": 70,
                                                      "duration_s": 30}), qos=1)
            run.sub.client.publish(topic, b"{bad", qos=1)
            await wait_for(lambda: {"telemetry", "devices", "flex", "carbon", "plan"} <= names(),
                           15, "reports")
            await wait_for(lambda: sum(t.endswith("/ack") for t, _ in docs()) >= 4, 15,
                           "accepted, rejected and done acks")
            await wait_for(lambda: any(d.get("final") for t, d in dr.documents()), 20,
                           "the final dr report")
            await run.site.stop_device("bess1")
            await wait_for(lambda: any(d.get("bess_kw", 0) is None for _, d in docs()), 15,
                           "telemetry without the battery")
            n = len(run.sub.documents())
            await wait_for(lambda: any(t.endswith("/flex") for t, _ in run.sub.documents()[n:]),
                           15, "flex without the battery")
        finally:
            dr.close()
    checked: dict[str, int] = {}
    for t, doc in docs():
        name = message_name(t.removeprefix(prefix))
        assert name is not None, f"{t}: a JSON message with no schema"
        model = MESSAGES[name].model
        model.model_validate(doc)
        assert undeclared(model, doc) == [], (name, doc)
        checked[name] = checked.get(name, 0) + 1
    assert checked.keys() >= {"telemetry", "devices", "flex", "ack", "carbon", "plan",
                              "dr_report"}, checked
    acks = {(d["cmd_id"], d["status"]) for t, d in docs() if t.endswith("/ack")}
    assert acks >= {("s-1", "accepted"), ("s-1", "done"), (None, "rejected"), ("e-1", "accepted")}
    last_flex = [d for t, d in docs() if t.endswith("/flex")][-1]
    assert last_flex["soc_pct"] is None  # the stale battery is offered to nobody
    carbon = next(d for t, d in docs() if t.endswith("/carbon"))
    assert carbon["interval"]["start"] == "2026-06-22T01:45:00Z"  # 09:45 local, closed at 10:00
    final = [d for t, d in docs() if t.endswith("/dr/ev-s")][-1]
    assert final["status"] == "completed" and final["final"]
    assert final["intervals"][0]["actual_kw"] is not None and final["result"] is not None

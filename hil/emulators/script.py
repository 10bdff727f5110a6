"""The park-platform emulator's script (hil/emulators/platform.py runs it): steps of
commands with the acknowledgements each must get.

Script file (YAML); `{run}` in any string is replaced by a per-run id, so cmd_ids stay
unique when a script is run again against the same daemon:

    steps:
      - send: dispatch                      # the command (topic cmd/<send>)
        payload: {cmd_id: "p-{run}-1", grid_target_kw: 20, duration_s: 60}
        expect: [accepted, done]            # in this order
        follow_kw: 3                        # grid within ±3 kW of the target while active
      - send: dispatch
        payload: '{"cmd_id": "p-{run}-2", '  # a string is sent as is (malformed on purpose)
        expect: [rejected]
        reason_contains: JSON

Without a file the built-in script reads the site's `flex` message and dispatches within
it, sends malformed and over-limit commands, re-sends a command, cancels one, switches
modes and relays a DR event; on a site with a reachable EV charger it also sets a charging
session's energy and departure, and names a charger the site does not have. Times in
payloads are simulated seconds; waits are wall seconds (a site sped up by a HIL only
finishes sooner).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivers.fileerrors import FileError, read_yaml, validation_problems

Status = Literal["accepted", "rejected", "done"]


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    send: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="command: topic cmd/<send>")
    payload: dict[str, Any] | str
    expect: list[Status] = Field(["accepted"], min_length=1)
    reason_contains: str | None = None
    follow_kw: float | None = Field(None, gt=0)
    settle_s: float = Field(10.0, ge=0, description="simulated s after start before following")
    expect_report: bool = Field(False, description="a dr/<event_id> report must arrive")
    wait_s: float = Field(0.0, ge=0, description="wall s to wait after this step")
    timeout_s: float = Field(30.0, gt=0, description="wall s for each ack beyond the window")


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[Step] = Field(min_length=1)


def load_script(path: Path) -> Script:
    """The script of a file; FileError with every problem."""
    try:
        return Script.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise FileError(str(path), validation_problems(exc, dotted=True)) from None


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Result:
    checks: list[Check] = field(default_factory=list)
    messages: int = 0  # site messages received and validated
    invalid: list[str] = field(default_factory=list)
    undocumented: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks) and not self.invalid

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, ok, detail))
        print(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""),
              flush=True)

    def summary(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        verdict = "PASS" if self.passed else "FAIL"
        text = (f"platform emulator: {verdict} - {len(self.checks) - len(failed)}/"
                f"{len(self.checks)} checks passed, {self.messages} site messages validated")
        if self.invalid:
            text += f", {len(self.invalid)} INVALID (first: {self.invalid[0]})"
        if self.undocumented:
            text += f"; fields not in the schemas: {', '.join(self.undocumented)}"
        return text


def builtin_script(flex: dict[str, Any], telemetry: dict[str, Any]) -> Script:
    """A script that fits the site as it is now: it dispatches inside the reported flex."""
    first = flex["intervals"][0]
    grid = telemetry["grid_kw"]
    up, down = first["up_kw"], first["down_kw"]
    if up >= 2:  # the batteries can discharge: a target below the present import
        move = {"grid_delta_kw": -round(min(10.0, up / 2), 1)}
    else:  # otherwise raise the floor (charging, or PV curtailed)
        move = {"grid_min_kw": round(grid + min(10.0, max(down / 2, 1.0)), 1)}
    return Script(steps=[*_builtin_steps(move, grid), *ev_session_steps(telemetry)])


def ev_session_steps(telemetry: dict[str, Any]) -> list[Step]:
    """On the first EV charger the telemetry shows reachable: a session's energy and a
    departure eight hours after the telemetry's time (accepted and applied at once), and
    the same for a device the site does not have (rejected)."""
    chargers = telemetry.get("ev_chargers") or {}
    up = sorted(i for i, c in chargers.items() if c.get("status") != "Offline")
    if not up:
        return []
    ts = datetime.fromisoformat(telemetry["ts"])
    leave = (ts + timedelta(hours=8)).isoformat().replace("+00:00", "Z")
    return [
        Step(send="ev_session", payload={"cmd_id": "ev-{run}-1", "device_id": up[0],
                                         "departure": leave, "energy_kwh": 12.0},
             expect=["accepted", "done"]),
        Step(send="ev_session", payload={"cmd_id": "ev-{run}-2", "device_id": "nosuch-{run}",
                                         "energy_kwh": 12.0},
             expect=["rejected"], reason_contains="no device"),
    ]


def _builtin_steps(move: dict[str, Any], grid: float) -> list[Step]:
    return [
        Step(send="mode", payload={"cmd_id": "mode-{run}-1", "mode": "auto"},
             expect=["accepted", "done"]),
        Step(send="dispatch", payload={"cmd_id": "disp-{run}-1", "duration_s": 40, **move},
             expect=["accepted", "done"], follow_kw=3.0, timeout_s=30),
        Step(send="dispatch", payload={"cmd_id": "disp-{run}-1", "duration_s": 40, **move},
             expect=["done"]),  # an exact re-send is acknowledged again, not run twice
        Step(send="dispatch", payload='{"cmd_id": "bad-{run}", "grid_target_kw": ',
             expect=["rejected"], reason_contains="JSON"),
        Step(send="dispatch", payload={"cmd_id": "big-{run}", "grid_target_kw": 99999,
                                       "duration_s": 60},
             expect=["rejected"], reason_contains="limit"),
        Step(send="dispatch", payload={"cmd_id": "disp-{run}-2", "duration_s": 600, **move},
             expect=["accepted"]),
        Step(send="cancel", payload={"cmd_id": "cancel-{run}", "target_cmd_id": "disp-{run}-2"},
             expect=["accepted", "done"]),
        Step(send="mode", payload={"cmd_id": "mode-{run}-2", "mode": "local"},
             expect=["accepted", "done"]),
        Step(send="dispatch", payload={"cmd_id": "disp-{run}-3", "duration_s": 60, **move},
             expect=["rejected"], reason_contains="mode local"),
        Step(send="mode", payload={"cmd_id": "mode-{run}-3", "mode": "auto"},
             expect=["accepted", "done"]),
        Step(send="dr_event", payload={"cmd_id": "dr-{run}", "event_id": "ev-{run}",
                                       "direction": "reduce", "kw": 1, "notice": "minute",
                                       "baseline_kw": round(max(grid, 2.0), 1),
                                       "duration_s": 20},
             expect=["accepted", "done"], expect_report=True),
    ]

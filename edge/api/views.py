"""JSON views of what the control cycle published (the SiteView's image and decision) and of
the devices' health, as the API and its stream answer them (schemas.py State, DevicesView).
The telemetry message's builder gives the site figures, so the API and MQTT never disagree.
Numbers that are not finite (no limit, no target) are null."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from drivers.base import Quality
from edge.image.balance import site_power
from edge.report import telemetry
from edge.roles.role import rounded
from edge.vpp.commands.parse import iso

if TYPE_CHECKING:
    from edge.app.daemon import Daemon
    from edge.control.decide import Decision
    from edge.control.instructions import InstructionBook
    from edge.image.image import ProcessImage


def num(x: Any, nd: int = 3) -> float | None:
    """A JSON number, or null for None, NaN and ±inf."""
    if x is None or isinstance(x, str):
        return None
    try:
        return rounded(float(x), nd)
    except (TypeError, ValueError):
        return None


def state(daemon: Daemon) -> dict[str, Any] | None:
    """The last cycle's state; None before the first cycle."""
    view = daemon.view
    image, decision = view.image, view.decision
    if image is None:
        return None
    return state_of(daemon.config, image, decision, view.book, daemon.cycle.stats.cycles)


def state_of(config, image: ProcessImage, decision: Decision | None, book: InstructionBook,
             cycle: int) -> dict[str, Any]:
    out = telemetry.build(config, image, decision)
    out.setdefault("soc_pct", None)
    out["ev_kw"] = num(site_power(config, image).ev_kw)
    out["cycle"] = cycle
    out["not_good"] = {dev: s.quality.value for dev, s in image.devices.items()
                       if s.quality is not Quality.GOOD}
    if decision is None:
        out.update(expected_grid_kw=None, bounds=_bounds(None), setpoints={}, instructions=[],
                   demands=[], failed_functions=[], crashed=False)
        return out
    out.update(
        expected_grid_kw=num(decision.expected_grid_kw),
        bounds=_bounds(decision),
        setpoints={role: {dev: num(v) for dev, v in values.items()}
                   for role, values in decision.setpoints.items()},
        instructions=[_instruction(i, book) for i in decision.instructions],
        demands=[{"device_id": d.id, "energy_kwh": num(d.energy_kwh),
                  "deadline": iso(d.deadline), "max_kw": num(d.max_kw)}
                 for d in decision.demands],
        failed_functions=list(decision.failed_functions),
        crashed=bool(decision.crashed),
    )
    return out


def _bounds(decision: Decision | None) -> dict[str, Any]:
    if decision is None:
        return {"import_limit_kw": None, "export_limit_kw": None, "grid_target_kw": None,
                "soft_import_cap_kw": None, "clipped": False}
    b = decision.bounds
    return {"import_limit_kw": num(b.import_limit_kw), "export_limit_kw": num(b.export_limit_kw),
            "grid_target_kw": num(b.grid_target_kw),
            "soft_import_cap_kw": num(b.soft_import_cap_kw), "clipped": bool(b.clipped)}


def _instruction(instruction_id: str, book: InstructionBook) -> dict[str, Any]:
    i = book.get(instruction_id)
    if i is None:
        return {"id": instruction_id, "source": None, "start": None, "end": None,
                "grid_max_kw": None, "grid_min_kw": None, "grid_target_kw": None}
    return {"id": i.id, "source": i.source, "start": iso(i.start), "end": iso(i.end),
            "grid_max_kw": num(i.grid_max_kw), "grid_min_kw": num(i.grid_min_kw),
            "grid_target_kw": num(i.grid_target_kw)}


def devices(daemon: Daemon, now: datetime) -> dict[str, Any]:
    """Every device: its `devices` report entry (the MQTT message's builder), quality, age
    and last values."""
    image = daemon.view.image
    health = daemon.cycle.health
    report = telemetry.device_health(daemon.config, image, health, daemon.devices, now,
                                     daemon.clock.speed)
    for entry in report["devices"]:
        h = health[entry["id"]]
        state = image.devices.get(entry["id"]) if image is not None else None
        reading = state.reading if state is not None and state.reading is not None \
            else h.reading
        entry["quality"] = entry["state"]
        entry["age_s"] = (num(h.reading.age_s() * daemon.clock.speed, 1)
                          if h.reading is not None else None)
        entry["values"] = ({k: num(v, 4) for k, v in reading.values.items()}
                           if reading is not None else {})
        entry["stale_keys"] = sorted(state.stale_keys) if state is not None else []
    return report

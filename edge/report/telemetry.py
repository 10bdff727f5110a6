"""The telemetry message (MQTT contract `pedf/v1/<site>/telemetry`) from one process image
and the decision taken on it. A stale device is named in `stale`, never silently
counted as zero: a sum that would need it is null."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from edge.config import Config
from edge.image.balance import site_power
from edge.image.image import ProcessImage
from edge.roles import ROLES, grouped
from edge.roles.role import rounded as _r

if TYPE_CHECKING:
    from edge.control.decide import Decision
    from edge.image.poll import DeviceHealth


def build(config: Config, image: ProcessImage, decision: Decision | None) -> dict:
    grid = config.grid_meter.id
    balance = site_power(config, image)
    roles: dict = {}
    for name, devs in grouped(config.devices).items():
        roles.update(ROLES[name].telemetry(devs, image))
    return {
        "ts": _iso(image.ts),
        "grid_kw": _r(balance.grid_kw),
        "pv_kw": _r(balance.pv_kw),
        "bess_kw": _r(balance.bess_kw),
        "load_kw": _r(balance.load_kw),
        **roles,
        "import_kwh": _r(image.last(grid, "import_kwh")),
        "export_kwh": _r(image.last(grid, "export_kwh")),
        "mode": decision.mode if decision else "starting",
        "reason": decision.reason if decision else "starting",
        "stale": sorted(d for d, s in image.devices.items() if s.quality.value != "good"),
        "limits_unmet": _unmet(decision),
        "alarms": list(decision.alarms) if decision else [],
        "grid_state": decision.grid_state if decision else None,
    }


def _unmet(decision: Decision | None) -> list[str]:
    if decision is None:
        return []
    names = ((1, "import_limit"), (2, "export_limit"), (4, "grid_target"))
    return [n for bit, n in names if decision.status & bit]


def device_health(config: Config, image: ProcessImage | None,
                  health: dict[str, DeviceHealth], devices: dict, now: datetime,
                  speed: float) -> dict:
    """The `devices` message: per device its comm state, last good read, error counts and
    what it told us about itself, so an integrator sees a failing unit, not a quiet zero."""
    out = []
    for dev in config.devices:
        h = health[dev.id]
        state = image.devices[dev.id].quality.value if image else "invalid"
        last_good = None
        if h.reading is not None:
            last_good = now - timedelta(seconds=h.reading.age_s() * speed)
        out.append({
            "id": dev.id,
            "role": dev.role,
            "state": state,
            "last_good": _iso(last_good) if last_good else None,
            "failed_polls": h.failed_polls,
            "errors": h.errors,
            "last_error": h.last_error or None,
            **devices[dev.id].describe(),
        })
    return {"ts": _iso(now), "devices": out}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

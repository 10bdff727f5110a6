"""The telemetry message (MQTT contract `pedf/v1/<site>/telemetry`) from one process image
and the decision taken on it. A stale device is named in `stale`, never silently
counted as zero: a sum that would need it is null."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from edge.config import BatteryDevice, Config, FlexLoadDevice, MeterDevice, PvDevice
from edge.cycle import ControlCycle, Decision
from edge.control.dcbus import bus_v
from edge.image.image import ProcessImage


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, nd)


def _sum(image: ProcessImage, devices: list, key: str, weight=lambda d: 1.0) -> float | None:
    """Sum over all devices of a role, or None if any is not GOOD: a partial sum would look
    like a real figure to the platform."""
    if not all(image.good(d.id) for d in devices):
        return None
    return sum(image.value(d.id, key) * weight(d) for d in devices)


def build(config: Config, image: ProcessImage, decision: Decision | None) -> dict:
    pvs = [d for d in config.devices if isinstance(d, PvDevice)]
    bats = [d for d in config.devices if isinstance(d, BatteryDevice)]
    loads = [d for d in config.devices if isinstance(d, MeterDevice) and d.measures == "load"]
    pv_kw = _sum(image, pvs, "power_kw")
    bess_kw = _sum(image, bats, "power_kw")
    cap = sum(b.capacity_kwh for b in bats)
    soc_x_cap = _sum(image, bats, "soc_pct", lambda b: b.capacity_kwh)
    soc = soc_x_cap / cap if cap and soc_x_cap is not None else None
    grid = config.grid_meter.id
    grid_kw = image.value(grid, "power_kw") if image.good(grid) else None
    if loads:
        load_kw = _sum(image, loads, "power_kw")
    elif None not in (grid_kw, pv_kw, bess_kw):
        load_kw = grid_kw + pv_kw + bess_kw  # site balance (DOMAIN.md §2)
    else:
        load_kw = None
    flex = [d for d in config.devices if isinstance(d, FlexLoadDevice)]
    flex_on = _sum(image, flex, "on")
    return {
        "ts": _iso(image.ts),
        "grid_kw": _r(grid_kw),
        "pv_kw": _r(pv_kw),
        "bess_kw": _r(bess_kw),
        "soc_pct": _r(soc, 2),
        "load_kw": _r(load_kw),
        # Switchable loads: what they draw, and how many run (the rest are shed).
        "flex_load_kw": _r(_sum(image, flex, "power_kw")),
        "flex_loads_on": None if flex_on is None else round(flex_on),
        # One DC bus per site: the mean of its GOOD converters; null without one.
        "dc_bus_v": _r(bus_v(config, image), 1),
        "import_kwh": _r(image.last(grid, "import_kwh")),
        "export_kwh": _r(image.last(grid, "export_kwh")),
        "mode": decision.mode if decision else "starting",
        "stale": sorted(d for d, s in image.devices.items() if s.quality.value != "good"),
        "limits_unmet": _unmet(decision),
        "alarms": list(decision.alarms) if decision else [],
    }


def _unmet(decision: Decision | None) -> list[str]:
    if decision is None:
        return []
    names = ((1, "import_limit"), (2, "export_limit"), (4, "grid_target"))
    return [n for bit, n in names if decision.status & bit]


def device_health(config: Config, cycle: ControlCycle, now: datetime, speed: float) -> dict:
    """The `devices` message: per device its comm state, last good read, error counts and
    what it told us about itself, so an integrator sees a failing unit, not a quiet zero."""
    image = cycle.image
    out = []
    for dev in config.devices:
        h = cycle.health[dev.id]
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
            **cycle.devices[dev.id].describe(),
        })
    return {"ts": _iso(now), "devices": out}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

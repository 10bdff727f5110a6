"""The telemetry message (MQTT contract `pedf/v1/<site>/telemetry`) from one process image
and the decision taken on it. Sums use only GOOD values; a stale device is named, not
silently counted as zero."""

from __future__ import annotations

import math
from datetime import UTC

from edge.config import BatteryDevice, Config, MeterDevice, PvDevice
from edge.cycle import Decision
from edge.image import ProcessImage


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, nd)


def build(config: Config, image: ProcessImage, decision: Decision | None) -> dict:
    pv_kw = sum(image.value(d.id, "power_kw") for d in config.devices
                if isinstance(d, PvDevice) and image.good(d.id))
    bats = [d for d in config.devices if isinstance(d, BatteryDevice) and image.good(d.id)]
    bess_kw = sum(image.value(b.id, "power_kw") for b in bats)
    cap = sum(b.capacity_kwh for b in bats)
    soc = sum(image.value(b.id, "soc_pct") * b.capacity_kwh for b in bats) / cap if cap else None
    grid = config.grid_meter.id
    grid_kw = image.value(grid, "power_kw") if image.good(grid) else None
    load_meters = [d for d in config.devices
                   if isinstance(d, MeterDevice) and d.measures == "load"]
    if load_meters and all(image.good(m.id) for m in load_meters):
        load_kw = sum(image.value(m.id, "power_kw") for m in load_meters)
    elif grid_kw is not None:
        load_kw = grid_kw + pv_kw + bess_kw  # site balance (DOMAIN.md §2)
    else:
        load_kw = None
    return {
        "ts": image.ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "grid_kw": _r(grid_kw),
        "pv_kw": _r(pv_kw),
        "bess_kw": _r(bess_kw),
        "soc_pct": _r(soc, 2),
        "load_kw": _r(load_kw),
        "import_kwh": _r(image.last(grid, "import_kwh")),
        "export_kwh": _r(image.last(grid, "export_kwh")),
        "mode": decision.mode if decision else "starting",
        "stale": sorted(d for d, s in image.devices.items() if s.quality.value != "good"),
        "limits_unmet": _unmet(decision),
    }


def _unmet(decision: Decision | None) -> list[str]:
    if decision is None:
        return []
    names = ((1, "import_limit"), (2, "export_limit"), (4, "grid_target"))
    return [n for bit, n in names if decision.status & bit]

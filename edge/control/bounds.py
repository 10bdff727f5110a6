"""Control functions: pure `(image, bounds) -> bounds`, highest duty first (docs/domain.md §3).

A function narrows the site bounds left by the ones before it (limits only tighten; a
target is set by the first function that wants one) and never writes a device. The
kernel turns the final bounds into setpoints.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from edge.config import ControlConfig
from edge.control.instructions import Combined
from edge.image.image import ProcessImage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SiteBounds:
    """Grid (PCC) window for the kernel: -export_limit_kw <= grid <= import_limit_kw.

    A negative export limit is a floor on import (valley filling: import at least X)."""

    import_limit_kw: float = math.inf
    export_limit_kw: float = math.inf
    grid_target_kw: float = math.nan  # NaN: no preference inside the limits
    # The plan's peak cap: corrections above it bypass the write deadband, but it is not a
    # limit the kernel would shed loads for (an economic wish, not a connection limit).
    soft_import_cap_kw: float = math.inf
    clipped: bool = False  # an instruction bound fell outside the site limits this cycle


ControlFunction = Callable[[ProcessImage, SiteBounds, ControlConfig], SiteBounds]


def export_limit(image: ProcessImage, b: SiteBounds, cfg: ControlConfig) -> SiteBounds:
    if cfg.export_limit_kw is None:
        return b
    return replace(b, export_limit_kw=min(b.export_limit_kw, cfg.export_limit_kw))


def peak_shaving(image: ProcessImage, b: SiteBounds, cfg: ControlConfig) -> SiteBounds:
    if cfg.import_limit_kw is None:
        return b
    return replace(b, import_limit_kw=min(b.import_limit_kw, cfg.import_limit_kw))


def self_consumption(image: ProcessImage, b: SiteBounds, cfg: ControlConfig) -> SiteBounds:
    if not math.isnan(b.grid_target_kw):
        return b
    return replace(b, grid_target_kw=0.0)


# Priority order: a function listed earlier bounds the ones after it.
PRIORITY: dict[str, ControlFunction] = {
    "export_limit": export_limit,
    "peak_shaving": peak_shaving,
    "self_consumption": self_consumption,
}


def apply_instructions(b: SiteBounds, c: Combined, natural_kw: float = math.nan) -> SiteBounds:
    """Narrow the configured limits by the instructions in force (DR, dispatch, plan). The
    configured import/export limits protect the connection and always hold: an instruction
    bound outside them is cut to them (commands beyond them are rejected on arrival), and
    `clipped` says so. `natural_kw` (grid with batteries idle) decides whether a one-sided
    DR target still applies."""
    hi = min(b.import_limit_kw, c.grid_max_kw)
    lo = max(-b.export_limit_kw, c.grid_min_kw)
    clipped = lo > hi
    if clipped:
        hi, lo = b.import_limit_kw, -b.export_limit_kw
    target = c.target_for(natural_kw)
    if math.isnan(target):
        target = b.grid_target_kw
    return SiteBounds(import_limit_kw=hi, export_limit_kw=-lo, grid_target_kw=target,
                      soft_import_cap_kw=c.soft_max_kw, clipped=clipped)


def run_functions(
    names: list[str], image: ProcessImage, cfg: ControlConfig, instructions: Combined | None = None,
    natural_kw: float = math.nan,
) -> tuple[SiteBounds, list[str]]:
    """Apply the active functions in priority order; one that raises is logged and skipped
    for this cycle, the rest still run. Instructions narrow the limits before the economic
    functions run, so self-consumption only fills in a target nobody else set. Returns the
    bounds and the names that failed."""
    bounds = SiteBounds()
    failed: list[str] = []
    for name, fn in PRIORITY.items():
        if name == "self_consumption" and instructions is not None:
            bounds = apply_instructions(bounds, instructions, natural_kw)
        if name not in names:
            continue
        try:
            bounds = fn(image, bounds, cfg)
        except Exception:
            log.exception("control function %s failed; its static bound applies this cycle", name)
            failed.append(name)
            bounds = _static_bound(name, bounds, cfg)
    return bounds, failed


def _static_bound(name: str, b: SiteBounds, cfg: ControlConfig) -> SiteBounds:
    """What a failed limit function still guarantees: its configured limit. A failing
    function must never lift a limit (a crashed export limit must not release PV)."""
    if name == "export_limit" and cfg.export_limit_kw is not None:
        return replace(b, export_limit_kw=min(b.export_limit_kw, cfg.export_limit_kw))
    if name == "peak_shaving" and cfg.import_limit_kw is not None:
        return replace(b, import_limit_kw=min(b.import_limit_kw, cfg.import_limit_kw))
    return b

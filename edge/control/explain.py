"""Why the controller does what it does, in one line per decision: what steers the grid (the
plan, a park dispatch, a grid operator's DR event, or the control functions) and which limit
binds. Telemetry, the API and the log carry it; the log says it when it changes, not every
cycle (the numbers in it move every cycle, the key does not)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from edge.control.instructions import Combined, Instruction, InstructionBook

if TYPE_CHECKING:
    from edge.control.bounds import SiteBounds
    from edge.control.kernel import DispatchResult

LABEL = {"plan": "plan", "park": "dispatch", "grid_operator": "dr"}
BINDS_KW = 0.5  # the grid within this of a limit: the limit binds


def steering(book: InstructionBook | None, combined: Combined) -> Instruction | None:
    """The highest-priority instruction in force that sets a target or a bound."""
    if book is None:
        return None
    for iid in combined.active:
        ins = book.get(iid)
        if ins is None:
            continue
        if (not math.isnan(ins.bess_target_kw) or not math.isnan(ins.grid_target_kw)
                or math.isfinite(ins.grid_max_kw) or math.isfinite(ins.grid_min_kw)):
            return ins
    return None


def _what(ins: Instruction) -> str:
    if not math.isnan(ins.bess_target_kw):
        return f"battery {ins.bess_target_kw:+.1f} kW"
    if not math.isnan(ins.grid_target_kw):
        side = {"down": "down to", "up": "up to"}.get(ins.target_side, "at")
        return f"grid {side} {ins.grid_target_kw:.1f} kW"
    lo = "" if not math.isfinite(ins.grid_min_kw) else f"≥ {ins.grid_min_kw:.1f} kW"
    hi = "" if not math.isfinite(ins.grid_max_kw) else f"≤ {ins.grid_max_kw:.1f} kW"
    return "grid " + ", ".join(x for x in (lo, hi) if x)


def normal(functions: str, ins: Instruction | None, bounds: SiteBounds,
           result: DispatchResult) -> tuple[str, str, tuple]:
    """(mode, reason, key) of a normal decision."""
    if ins is not None:
        mode = LABEL[ins.source]
        parts = [f"{mode} {ins.id}: {_what(ins)}"]
    else:
        mode = functions
        target = bounds.grid_target_kw
        parts = [f"{functions}: grid to {target:.1f} kW" if math.isfinite(target)
                 else f"{functions}: batteries at rest inside the limits"]
    g, binds = result.expected_grid_kw, ""
    imp, exp = bounds.import_limit_kw, bounds.export_limit_kw
    if result.import_unmet:
        binds = "import_unmet"
        parts.append(f"import limit {imp:.1f} kW not held: batteries and loads at their limits")
    elif math.isfinite(imp) and g >= imp - BINDS_KW:
        binds = "import"
        parts.append(f"import limit {imp:.1f} kW binds")
    if result.export_unmet:
        binds = "export_unmet"
        parts.append(f"export limit {exp:.1f} kW not held")
    elif math.isfinite(exp) and g <= -exp + BINDS_KW:
        binds = "export"
        parts.append("zero export binds" if exp == 0 else f"export limit {exp:.1f} kW binds")
    return mode, "; ".join(parts), (mode, None if ins is None else ins.id, binds)


def safe(grid_id: str, quality: str, crashed: bool) -> tuple[str, tuple]:
    if crashed:
        return "safe state: the decision failed (see the log)", ("safe", "crashed")
    return (f"safe state: PCC meter {grid_id} is {quality}; every device to its safe "
            "state", ("safe", quality))


HOLD = ("hold: the PCC reading was missed; the last setpoints stand", ("hold",))
SETTLING = ("hold: a switch is settling; the setpoints made with it stand", ("settling",))

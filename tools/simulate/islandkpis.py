"""The island KPIs of a microgrid run: what the HIL saw (critical energy left unserved, with
the loads' ride-through; how long critical loads were dark, ridden through or not, their
longest break and how many breaks outlasted the ride-through; breaker operations, closes
out of sync, island collapses) and what the controller's grid state machine reported (transitions, shed energy, lowest SoC,
its step time), the detection and transfer times measured from the HIL's grid loss."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def collect(daemon, site) -> dict[str, Any] | None:
    """The run's island record, taken from the daemon's memory and the HIL's PCC, or None
    for a site without a breaker."""
    st = daemon.cycle.memory.roles.get("breaker")
    cb = site.pcc.breaker
    if st is None or st.machine is None or cb is None:
        return None
    m = st.machine
    raw = [*m.events, *([m.event] if m.event is not None else [])]
    lost = [t for t, up in cb.grid_changes if not up]
    return {"transitions": [{"t_s": round(t.t_s, 1), "from": t.source, "to": t.target,
                             "reason": t.reason} for t in m.transitions],
            "events": [e.as_dict() for e in raw],
            "outages": [outage(e, lost) for e in raw], "step_ns": list(st.step_ns),
            "state_at_end": m.state,
            "breaker_operations": len(cb.operations),
            "closed_out_of_sync": len(cb.closed_out_of_sync), **site.pcc.kpis()}


def outage(event, lost_s: list[float]) -> dict[str, float | None]:
    """One island event timed from the HIL's grid loss (the last before it was detected):
    detection_s to the controller declaring it, transfer_s to the island standing."""
    lost = max((t for t in lost_s if t <= event.start_s), default=None)
    if lost is None:  # not a grid loss the HIL made (a trip, a breaker found open)
        return {"detection_s": None, "transfer_s": None}
    return {"detection_s": round(event.start_s - lost, 3),
            "transfer_s": None if event.stable_s is None else round(event.stable_s - lost, 3)}


def island_kpis(rec: dict[str, Any]) -> dict[str, Any]:
    need, unserved = rec["critical_kwh"], rec["unserved_critical_kwh"]
    events = rec["events"]
    transfers = [o["transfer_s"] for o in rec["outages"] if o["transfer_s"] is not None]
    detections = [o["detection_s"] for o in rec["outages"] if o["detection_s"] is not None]
    socs = [e["min_soc_pct"] for e in events if e["min_soc_pct"] is not None]
    ns = np.array(rec["step_ns"] or [math.nan], dtype=float)
    return {
        "critical_served_ratio": 1.0 - unserved / need if need > 0 else None,
        "critical_kwh": need, "unserved_critical_kwh": unserved,
        "island_transitions": len(rec["transitions"]),
        "detection_s": max(detections) if detections else None,
        "transfer_s": max(transfers) if transfers else None,
        "dark_s": round(rec["dark_s"], 3),
        "longest_dark_s": round(rec["longest_dark_s"], 3),
        "critical_interruptions": rec["interruptions"],
        "shed_kwh": sum(e["shed_kwh"] or 0.0 for e in events),
        "island_min_soc_pct": min(socs) if socs else None,
        "decision_us_p50": float(np.percentile(ns, 50)) / 1e3,
        "decision_us_p99": float(np.percentile(ns, 99)) / 1e3,
        "decision_us_max": float(ns.max()) / 1e3,
        "breaker_operations": rec["breaker_operations"],
        "closed_out_of_sync": rec["closed_out_of_sync"], "collapses": rec["collapses"],
        "state_at_end": rec["state_at_end"], "events": events,
        "transitions": rec["transitions"],
    }


def summary(k: dict[str, Any]) -> str:
    r = k["critical_served_ratio"]
    return (f"island: critical served {'–' if r is None else f'{r:.5f}'} "
            f"(unserved {k['unserved_critical_kwh']:.2f} kWh), transitions "
            f"{k['island_transitions']}, detection {k['detection_s']} s, transfer "
            f"{k['transfer_s']} s, critical loads dark {k['dark_s']} s (longest break "
            f"{k['longest_dark_s']} s, {k['critical_interruptions']} beyond ride-through), shed "
            f"{k['shed_kwh']:.1f} kWh, island SoC min {k['island_min_soc_pct']} %, state "
            f"machine step p50 {k['decision_us_p50']:.1f} µs p99 {k['decision_us_p99']:.1f} µs; "
            f"breaker operations {k['breaker_operations']}, out-of-sync closes "
            f"{k['closed_out_of_sync']}, collapses {k['collapses']}")

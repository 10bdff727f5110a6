"""The site balance of one process image, the one place it is computed: load = grid + pv +
battery − EV charging (docs/domain.md §2). Each device's role says which term its power is.
The building's load leaves the EV chargers out: the planner plans their sessions as demands
of their own, and a load forecast that had learnt them would count them twice."""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.base import Quality
from edge.image.image import ProcessImage
from edge.roles import role_of
from edge.roles.role import total


@dataclass(frozen=True, slots=True)
class SitePower:
    """Site balance terms of one cycle, kW; None where a needed device is not GOOD."""

    grid_kw: float | None
    pv_kw: float | None
    bess_kw: float | None
    load_kw: float | None  # the building, without EV charging
    ev_kw: float | None = 0.0  # EV chargers


def site_power(config, image: ProcessImage) -> SitePower:
    """A term summed over its devices is None when any of them is not GOOD (a partial sum
    would look real); load comes from load meters when the site has them, else from the
    balance."""
    terms: dict[str, list] = {"grid": [], "pv": [], "bess": [], "load": [], "ev": []}
    for d in config.devices:
        term = role_of(d).balance_term(d)
        if term is not None:
            terms[term].append(d)

    grid_kw, pv_kw, bess_kw, ev_kw = (total(image, terms[t], "power_kw")
                                      for t in ("grid", "pv", "bess", "ev"))
    if terms["load"]:
        load_kw = total(image, terms["load"], "power_kw")
    elif None not in (grid_kw, pv_kw, bess_kw, ev_kw):
        load_kw = grid_kw + pv_kw + bess_kw - ev_kw
    else:
        load_kw = None
    return SitePower(grid_kw, pv_kw, bess_kw, load_kw, ev_kw)


def pv_held_back(pvs: list, limits: dict[str, float], image: ProcessImage) -> bool:
    """An inverter ran at its limit when `image` was read, so the output was held below
    what the sun offered. A limit above the output holds nothing back (the inverter tracks
    its MPP): an export-limited site keeps limits set all day, and treating those as
    curtailment would keep the forecast from ever learning the sky. The limit is the one the
    inverter reports in the same image, else `limits` (the previous cycle's commands); an
    unknown one counts as 0 kW."""
    for p in pvs:
        state = image.devices[p.id]
        if state.quality is not Quality.GOOD or state.reading is None:
            return True
        limit = state.reading.values.get("limit_kw")
        if limit is None or not math.isfinite(limit) or state.value_quality("limit_kw") \
                is not Quality.GOOD:
            limit = limits.get(p.id, 0.0)
        if limit >= 0.98 * p.rated_kw:
            continue
        if state.reading.values.get("power_kw", 0.0) >= limit - max(1.0, 0.03 * p.rated_kw):
            return True
    return False

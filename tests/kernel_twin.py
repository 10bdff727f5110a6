"""Pure-Python twin of the compiled dispatch kernel (ext/kernel.pyx). This file is the spec.

Same signature and the same arithmetic in the same order as the kernel, so on x86-64 and on
ARM (the kernel is built with -ffp-contract=off) both give bit-identical results; the property
tests compare them on random inputs. Sums are explicit loops because `sum()` of floats is
compensated from Python 3.12 on and would round differently from the C loop.

Sign conventions: grid +import/-export, battery +discharge/-charge, PV >= 0, loads >= 0;
kW, s, %.
"""

from __future__ import annotations

import math

import numpy as np

B_P, B_PREV, B_SOC, B_SOC_MIN, B_SOC_MAX, B_MAX_CH, B_MAX_DIS, B_RAMP, B_OK = range(9)
NB = 9
V_P, V_RATED, V_PREV, V_RAMP, V_OK = range(5)
NV = 5
L_P, L_RATED, L_ON, L_PRIO, L_AGE, L_MIN_ON, L_MIN_OFF, L_MARGIN, L_OK = range(9)
NL = 9
STATUS_IMPORT_UNMET = 1
STATUS_EXPORT_UNMET = 2
STATUS_TARGET_UNMET = 4
LIMIT_TOL_KW = 1e-6
TARGET_TOL_KW = 0.01


def clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def is_ok(flag: float) -> bool:
    """Controllable only if the flag is clearly set; a NaN flag counts as not controllable."""
    return flag > 0.5


def battery_band(row: list[float], dt: float) -> tuple[float, float]:
    """Allowed setpoint range [lo, hi] of one battery for this cycle.

    The SoC/power window always contains 0. The ramp band around the last setpoint narrows
    it, except towards 0: reducing |P| is never ramp-limited, so a battery can always stop
    when a limit needs it. When the band misses the window entirely the window wins, because
    it is the safety limit and the ramp limit is only comfort for the inverter.
    """
    hi_w = row[B_MAX_DIS] if row[B_SOC] > row[B_SOC_MIN] else 0.0
    lo_w = -row[B_MAX_CH] if row[B_SOC] < row[B_SOC_MAX] else 0.0
    step = row[B_RAMP] * dt
    lo_r = row[B_PREV] - step
    hi_r = row[B_PREV] + step
    if row[B_PREV] > 0.0:
        lo_r = min(lo_r, 0.0)
    elif row[B_PREV] < 0.0:
        hi_r = max(hi_r, 0.0)
    if hi_r < lo_w:
        return lo_w, lo_w
    if lo_r > hi_w:
        return hi_w, hi_w
    return max(lo_w, lo_r), min(hi_w, hi_r)


def shed_candidate(row: list[float], out: float) -> bool:
    """On, not yet shed in this call, past its minimum on-time, and drawing power."""
    return (is_ok(row[L_OK]) and row[L_ON] > 0.5 and out > 0.5
            and row[L_AGE] >= row[L_MIN_ON] and row[L_P] > 0.0)


def restore_candidate(row: list[float]) -> bool:
    """Off and past its minimum off-time."""
    return is_ok(row[L_OK]) and not row[L_ON] > 0.5 and row[L_AGE] >= row[L_MIN_OFF]


def restore_before(pa: float, ka: int, pb: float, kb: int) -> bool:
    """Restore order: higher priority first, then the lower row index."""
    return pa > pb or (pa == pb and ka < kb)


def switch_loads(natural: float, sum_lo: float, sum_hi: float, import_limit_kw: float,
                 export_limit_kw: float, loads: list[list[float]], load_out: np.ndarray) -> float:
    """Switch flexible loads where the batteries cannot hold the grid window on their own;
    return the grid without batteries once the switching takes effect.

    A load switched off less than its min_off ago may still read what it drew (its meter
    and the PCC meter lag the contactor by a poll): that power counts as gone, or the next
    load would be shed for power that is already leaving. (A contactor that did not open
    shows in its feedback; the cycle then reports the load as on.)

    Shed (lowest priority first, only past min_on) while the import limit is out of the
    batteries' reach. Otherwise restore one load per call (highest priority first, only past
    min_off) when the room left, less what loads switched on within their min_on may still
    start drawing, holds its rating plus its margin (the hysteresis that keeps a load near
    the limit from being shed and restored over and over); a restore may lean on battery
    discharge, which the allocation after this step already includes. Below a grid floor
    (negative export limit) the batteries cannot reach, as many loads as the room takes are
    switched on, in the same order. A target (self-consumption) never switches a load.
    """
    nl = len(loads)
    leaving = 0.0
    for k, row in enumerate(loads):
        if is_ok(row[L_OK]):
            load_out[k] = 1.0 if row[L_ON] > 0.5 else 0.0
            if not row[L_ON] > 0.5 and row[L_AGE] < row[L_MIN_OFF]:
                leaving += max(row[L_P], 0.0)
        else:
            load_out[k] = row[L_ON]
    natural -= leaving
    if natural - sum_hi > import_limit_kw + LIMIT_TOL_KW:
        excess = natural - sum_hi - import_limit_kw
        for _ in range(nl):
            pick = -1
            for k, row in enumerate(loads):
                if shed_candidate(row, load_out[k]) and (
                        pick < 0 or row[L_PRIO] < loads[pick][L_PRIO]):
                    pick = k
            if pick < 0:
                break
            p = loads[pick][L_P]
            load_out[pick] = 0.0
            natural -= p
            excess -= p
            if not excess > 0.0:
                break
        return natural
    pending = 0.0
    for row in loads:
        if is_ok(row[L_OK]) and row[L_ON] > 0.5 and row[L_AGE] <= row[L_MIN_ON]:
            pending += max(0.0, row[L_RATED] - max(row[L_P], 0.0))
    room = import_limit_kw - (natural - sum_hi) - pending
    gap = -export_limit_kw - (natural - sum_lo)  # > 0: below the floor at full charge
    last_prio, last_k = math.inf, -1
    for _ in range(nl):
        pick = -1
        for k, row in enumerate(loads):
            if (restore_candidate(row) and restore_before(last_prio, last_k, row[L_PRIO], k)
                    and (pick < 0 or restore_before(row[L_PRIO], k, loads[pick][L_PRIO], pick))):
                pick = k
        if pick < 0:
            break
        rated = loads[pick][L_RATED]
        need = rated + loads[pick][L_MARGIN]
        last_prio, last_k = loads[pick][L_PRIO], pick
        if need <= room:
            load_out[pick] = 1.0
            natural += rated
            room -= rated
            gap -= rated
            if not gap > 0.0:
                break
        elif not gap > 0.0:
            break
    return natural


def dispatch(
    grid_kw: float,
    import_limit_kw: float,
    export_limit_kw: float,
    grid_target_kw: float,
    dt_s: float,
    bess: np.ndarray,
    pv: np.ndarray,
    bess_out: np.ndarray,
    pv_out: np.ndarray,
    site_out: np.ndarray,
    loads: np.ndarray | None = None,
    load_out: np.ndarray | None = None,
) -> int:
    """Turn the site's grid bounds into battery setpoints, PV limits and load on/off states;
    return a status mask."""
    batteries = bess.tolist()
    inverters = pv.tolist()
    flex = [] if loads is None else loads.tolist()

    # 1: grid without the controllable batteries.
    natural = grid_kw
    for row in batteries:
        if is_ok(row[B_OK]):
            natural += row[B_P]

    # 2: what the batteries can do this cycle: their bands, and the baseline (0 clamped into
    # each band) the allocation starts from.
    sum_lo = sum_hi = sum_b = up = down = 0.0
    for row in batteries:
        if is_ok(row[B_OK]):
            lo, hi = battery_band(row, dt_s)
            b = clamp(0.0, lo, hi)
            sum_lo += lo
            sum_hi += hi
            sum_b += b
            up += hi - b
            down += b - lo

    # 3: flexible loads cover what the batteries cannot (see switch_loads).
    if flex:
        natural = switch_loads(natural, sum_lo, sum_hi, import_limit_kw, export_limit_kw,
                               flex, load_out)

    # 4: the grid we aim for, and what the batteries must do.
    aim = natural if math.isnan(grid_target_kw) else grid_target_kw
    target = clamp(aim, -export_limit_kw, import_limit_kw)
    required = natural - target

    # 5: share the feasible total from the baseline towards the upper or lower bands, in
    # proportion to each battery's remaining headroom.
    total = clamp(required, sum_lo, sum_hi)

    sum_out = 0.0
    charge_room = 0.0  # how much more the batteries could charge within their bands
    for i, row in enumerate(batteries):
        if not is_ok(row[B_OK]):
            bess_out[i] = row[B_P]
            continue
        lo, hi = battery_band(row, dt_s)
        b = clamp(0.0, lo, hi)
        out = b
        if total >= sum_b:
            if up > 0.0:
                out = b + (total - sum_b) * (hi - b) / up
        elif down > 0.0:
            out = b - (sum_b - total) * (b - lo) / down
        out = clamp(out, lo, hi)
        bess_out[i] = out
        sum_out += out
        charge_room += out - lo

    # 6: grid after the batteries, before any PV change.
    grid = natural - sum_out

    # 7: PV limits. Curtail in proportion to output when export would exceed the limit
    # (never ramp-limited: export is a safety limit); otherwise release curtailment, each
    # step capped by the inverter's ramp and by its rated-power share of the export margin.
    limits = [row[V_PREV] for row in inverters]
    pv_total = 0.0
    for row in inverters:
        if is_ok(row[V_OK]):
            pv_total += max(row[V_P], 0.0)
    if grid < -export_limit_kw:
        excess = -export_limit_kw - grid
        for j, row in enumerate(inverters):
            if not is_ok(row[V_OK]):
                continue
            p = max(row[V_P], 0.0)
            if pv_total > 0.0:
                limit = p - excess * p / pv_total
            else:
                limit = row[V_PREV]
            limits[j] = clamp(limit, 0.0, row[V_RATED])
    else:
        # Released PV may also go into the batteries: without their charge room in the
        # margin, a curtailed site with grid at 0 would never release and never charge.
        margin = grid + export_limit_kw + charge_room
        curtailed_rated = 0.0
        for row in inverters:
            if is_ok(row[V_OK]):
                base = min(max(max(row[V_P], 0.0), row[V_PREV]), row[V_RATED])
                if base < row[V_RATED]:
                    curtailed_rated += row[V_RATED]
        for j, row in enumerate(inverters):
            if not is_ok(row[V_OK]):
                continue
            rated = row[V_RATED]
            base = min(max(max(row[V_P], 0.0), row[V_PREV]), rated)
            limit = rated
            if base < rated:
                step = min(row[V_RAMP] * dt_s, margin * rated / curtailed_rated)
                limit = min(rated, base + step)
            limits[j] = clamp(limit, 0.0, rated)

    # 8: what the grid will read once the limits bite, and what could not be met.
    expected = grid
    for j, row in enumerate(inverters):
        pv_out[j] = limits[j]
        if is_ok(row[V_OK]):
            expected += max(0.0, max(row[V_P], 0.0) - limits[j])
    site_out[0] = expected
    site_out[1] = required
    site_out[2] = target

    status = 0
    if expected > import_limit_kw + LIMIT_TOL_KW:
        status |= STATUS_IMPORT_UNMET
    if expected < -export_limit_kw - LIMIT_TOL_KW:
        status |= STATUS_EXPORT_UNMET
    if abs(expected - target) > TARGET_TOL_KW:
        status |= STATUS_TARGET_UNMET
    return status

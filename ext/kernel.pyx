# distutils: extra_compile_args = -ffp-contract=off
"""Compiled dispatch kernel: the site's final grid bounds -> battery setpoints, PV limits and
flexible loads on/off.

Runs every control cycle, so the inner loops hold no Python objects and release the GIL.
tests/kernel_twin.py is the readable spec; this file follows it operation for operation,
and -ffp-contract=off keeps the C compiler from fusing multiply-adds (default on ARM) so the
two stay bit-identical.
"""

from libc.math cimport INFINITY, fabs, fmax, fmin, isinf, isnan

from layout cimport (
    C_B_P,
    C_B_PREV,
    C_B_SOC,
    C_B_SOC_MIN,
    C_B_SOC_MAX,
    C_B_MAX_CH,
    C_B_MAX_DIS,
    C_B_RAMP,
    C_B_OK,
    C_NB,
    C_V_P,
    C_V_RATED,
    C_V_PREV,
    C_V_RAMP,
    C_V_OK,
    C_NV,
    C_L_P,
    C_L_RATED,
    C_L_ON,
    C_L_PRIO,
    C_L_AGE,
    C_L_MIN_ON,
    C_L_MIN_OFF,
    C_L_MARGIN,
    C_L_OK,
    C_NL,
    C_IMPORT_UNMET,
    C_EXPORT_UNMET,
    C_TARGET_UNMET,
)

B_P = C_B_P
B_PREV = C_B_PREV
B_SOC = C_B_SOC
B_SOC_MIN = C_B_SOC_MIN
B_SOC_MAX = C_B_SOC_MAX
B_MAX_CH = C_B_MAX_CH
B_MAX_DIS = C_B_MAX_DIS
B_RAMP = C_B_RAMP
B_OK = C_B_OK
NB = C_NB
V_P = C_V_P
V_RATED = C_V_RATED
V_PREV = C_V_PREV
V_RAMP = C_V_RAMP
V_OK = C_V_OK
NV = C_NV
L_P = C_L_P
L_RATED = C_L_RATED
L_ON = C_L_ON
L_PRIO = C_L_PRIO
L_AGE = C_L_AGE
L_MIN_ON = C_L_MIN_ON
L_MIN_OFF = C_L_MIN_OFF
L_MARGIN = C_L_MARGIN
L_OK = C_L_OK
NL = C_NL
STATUS_IMPORT_UNMET = C_IMPORT_UNMET
STATUS_EXPORT_UNMET = C_EXPORT_UNMET
STATUS_TARGET_UNMET = C_TARGET_UNMET

cdef double LIMIT_TOL_KW = 1e-6
cdef double TARGET_TOL_KW = 0.01


cdef inline double clamp(double x, double lo, double hi) noexcept nogil:
    return fmin(fmax(x, lo), hi)


cdef inline bint is_ok(double flag) noexcept nogil:
    # A NaN flag compares false: not controllable.
    return flag > 0.5


cdef inline void battery_band(const double* row, double dt, double* lo, double* hi) noexcept nogil:
    # The window (SoC, power) is safety and always contains 0; the ramp band only narrows it.
    cdef double hi_w = row[C_B_MAX_DIS] if row[C_B_SOC] > row[C_B_SOC_MIN] else 0.0
    cdef double lo_w = -row[C_B_MAX_CH] if row[C_B_SOC] < row[C_B_SOC_MAX] else 0.0
    cdef double step = row[C_B_RAMP] * dt
    cdef double lo_r = row[C_B_PREV] - step
    cdef double hi_r = row[C_B_PREV] + step
    # Reducing |P| is never ramp-limited: a battery can always stop when a limit needs it.
    if row[C_B_PREV] > 0.0:
        lo_r = fmin(lo_r, 0.0)
    elif row[C_B_PREV] < 0.0:
        hi_r = fmax(hi_r, 0.0)
    if hi_r < lo_w:
        lo[0] = lo_w
        hi[0] = lo_w
    elif lo_r > hi_w:
        lo[0] = hi_w
        hi[0] = hi_w
    else:
        lo[0] = fmax(lo_w, lo_r)
        hi[0] = fmin(hi_w, hi_r)


cdef inline double pv_base(const double* row) noexcept nogil:
    # Where a release starts: the higher of output and last limit, never above rated.
    return fmin(fmax(fmax(row[C_V_P], 0.0), row[C_V_PREV]), row[C_V_RATED])


cdef inline bint shed_candidate(const double* row, double out) noexcept nogil:
    return (is_ok(row[C_L_OK]) and row[C_L_ON] > 0.5 and out > 0.5
            and row[C_L_AGE] >= row[C_L_MIN_ON] and row[C_L_P] > 0.0)


cdef inline bint restore_candidate(const double* row) noexcept nogil:
    return is_ok(row[C_L_OK]) and not (row[C_L_ON] > 0.5) and row[C_L_AGE] >= row[C_L_MIN_OFF]


cdef inline bint restore_before(double pa, Py_ssize_t ka, double pb, Py_ssize_t kb) noexcept nogil:
    return pa > pb or (pa == pb and ka < kb)


cdef double switch_loads(double natural, double sum_lo, double sum_hi, double import_limit_kw,
                         double export_limit_kw, const double* loads, Py_ssize_t nl,
                         double* load_out) noexcept nogil:
    # Shed where the batteries cannot hold the import limit, else restore one load (or, below
    # a floor they cannot reach, as many as fit); see switch_loads in tests/kernel_twin.py.
    cdef Py_ssize_t k, it, pick
    cdef const double* row
    cdef double excess, p, pending = 0.0, room, gap, rated, need, last_prio = INFINITY
    cdef double leaving = 0.0
    cdef Py_ssize_t last_k = -1
    for k in range(nl):
        row = loads + k * C_NL
        if is_ok(row[C_L_OK]):
            load_out[k] = 1.0 if row[C_L_ON] > 0.5 else 0.0
            if not (row[C_L_ON] > 0.5) and row[C_L_AGE] < row[C_L_MIN_OFF]:
                leaving += fmax(row[C_L_P], 0.0)
        else:
            load_out[k] = row[C_L_ON]
    natural -= leaving
    if natural - sum_hi > import_limit_kw + LIMIT_TOL_KW:
        excess = natural - sum_hi - import_limit_kw
        for it in range(nl):
            pick = -1
            for k in range(nl):
                row = loads + k * C_NL
                if shed_candidate(row, load_out[k]) and (
                        pick < 0 or row[C_L_PRIO] < loads[pick * C_NL + C_L_PRIO]):
                    pick = k
            if pick < 0:
                break
            p = loads[pick * C_NL + C_L_P]
            load_out[pick] = 0.0
            natural -= p
            excess -= p
            if not (excess > 0.0):
                break
        return natural
    for k in range(nl):
        row = loads + k * C_NL
        if is_ok(row[C_L_OK]) and row[C_L_ON] > 0.5 and row[C_L_AGE] <= row[C_L_MIN_ON]:
            pending += fmax(0.0, row[C_L_RATED] - fmax(row[C_L_P], 0.0))
    room = import_limit_kw - (natural - sum_hi) - pending
    gap = -export_limit_kw - (natural - sum_lo)
    for it in range(nl):
        pick = -1
        for k in range(nl):
            row = loads + k * C_NL
            if (restore_candidate(row) and restore_before(last_prio, last_k, row[C_L_PRIO], k)
                    and (pick < 0 or restore_before(row[C_L_PRIO], k,
                                                    loads[pick * C_NL + C_L_PRIO], pick))):
                pick = k
        if pick < 0:
            break
        rated = loads[pick * C_NL + C_L_RATED]
        need = rated + loads[pick * C_NL + C_L_MARGIN]
        last_prio = loads[pick * C_NL + C_L_PRIO]
        last_k = pick
        if need <= room:
            load_out[pick] = 1.0
            natural += rated
            room -= rated
            gap -= rated
            if not (gap > 0.0):
                break
        elif not (gap > 0.0):
            break
    return natural


cdef int dispatch_c(double grid_kw, double import_limit_kw, double export_limit_kw,
                    double grid_target_kw, double dt_s,
                    const double* bess, Py_ssize_t nb, const double* pv, Py_ssize_t nv,
                    const double* loads, Py_ssize_t nl,
                    double* bess_out, double* pv_out, double* load_out,
                    double* site_out) noexcept nogil:
    cdef Py_ssize_t i
    cdef const double* row
    cdef double natural = grid_kw
    cdef double lo, hi, b, out, target, required, total
    cdef double sum_lo = 0.0, sum_hi = 0.0, sum_b = 0.0, up = 0.0, down = 0.0
    cdef double sum_out = 0.0, grid, pv_total = 0.0, excess, margin, curtailed_rated = 0.0
    cdef double p, rated, base, limit, step, expected, charge_room = 0.0
    cdef int status = 0

    for i in range(nb):
        row = bess + i * C_NB
        if is_ok(row[C_B_OK]):
            natural += row[C_B_P]

    for i in range(nb):
        row = bess + i * C_NB
        if is_ok(row[C_B_OK]):
            battery_band(row, dt_s, &lo, &hi)
            b = clamp(0.0, lo, hi)
            sum_lo += lo
            sum_hi += hi
            sum_b += b
            up += hi - b
            down += b - lo

    if nl > 0:
        natural = switch_loads(natural, sum_lo, sum_hi, import_limit_kw, export_limit_kw,
                               loads, nl, load_out)

    target = clamp(natural if isnan(grid_target_kw) else grid_target_kw,
                   -export_limit_kw, import_limit_kw)
    required = natural - target
    total = clamp(required, sum_lo, sum_hi)

    for i in range(nb):
        row = bess + i * C_NB
        if not is_ok(row[C_B_OK]):
            bess_out[i] = row[C_B_P]
            continue
        battery_band(row, dt_s, &lo, &hi)
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

    grid = natural - sum_out

    for i in range(nv):
        row = pv + i * C_NV
        if is_ok(row[C_V_OK]):
            pv_total += fmax(row[C_V_P], 0.0)
    if grid < -export_limit_kw:
        excess = -export_limit_kw - grid
        for i in range(nv):
            row = pv + i * C_NV
            if not is_ok(row[C_V_OK]):
                pv_out[i] = row[C_V_PREV]
                continue
            p = fmax(row[C_V_P], 0.0)
            if pv_total > 0.0:
                limit = p - excess * p / pv_total
            else:
                limit = row[C_V_PREV]
            pv_out[i] = clamp(limit, 0.0, row[C_V_RATED])
    else:
        # Released PV may also go into the batteries: without their charge room in the
        # margin, a curtailed site with grid at 0 would never release and never charge.
        margin = grid + export_limit_kw + charge_room
        for i in range(nv):
            row = pv + i * C_NV
            if is_ok(row[C_V_OK]) and pv_base(row) < row[C_V_RATED]:
                curtailed_rated += row[C_V_RATED]
        for i in range(nv):
            row = pv + i * C_NV
            if not is_ok(row[C_V_OK]):
                pv_out[i] = row[C_V_PREV]
                continue
            rated = row[C_V_RATED]
            base = pv_base(row)
            limit = rated
            if base < rated:
                step = fmin(row[C_V_RAMP] * dt_s, margin * rated / curtailed_rated)
                limit = fmin(rated, base + step)
            pv_out[i] = clamp(limit, 0.0, rated)

    expected = grid
    for i in range(nv):
        row = pv + i * C_NV
        if is_ok(row[C_V_OK]):
            expected += fmax(0.0, fmax(row[C_V_P], 0.0) - pv_out[i])
    site_out[0] = expected
    site_out[1] = required
    site_out[2] = target

    if expected > import_limit_kw + LIMIT_TOL_KW:
        status |= C_IMPORT_UNMET
    if expected < -export_limit_kw - LIMIT_TOL_KW:
        status |= C_EXPORT_UNMET
    if fabs(expected - target) > TARGET_TOL_KW:
        status |= C_TARGET_UNMET
    return status


def dispatch(double grid_kw, double import_limit_kw, double export_limit_kw,
             double grid_target_kw, double dt_s,
             const double[:, ::1] bess, const double[:, ::1] pv,
             double[::1] bess_out, double[::1] pv_out, double[::1] site_out,
             const double[:, ::1] loads=None, double[::1] load_out=None) -> int:
    """Write battery setpoints, PV limits, load states (1.0 on / 0.0 off) and [expected grid,
    required battery, target] kW. `loads` and `load_out` are optional (no flexible loads).

    Returns a bitmask: 1 import limit unmet, 2 export limit unmet, 4 target unmet by >0.01 kW.
    Shapes and scalar ranges are checked here, once, because the loops below trust them.
    """
    cdef Py_ssize_t nb = bess.shape[0], nv = pv.shape[0], nl = 0
    cdef int status
    if bess.shape[1] != C_NB or pv.shape[1] != C_NV:
        raise ValueError(
            f"bess must have {C_NB} columns and pv {C_NV}; got {bess.shape[1]} and {pv.shape[1]}")
    if bess_out.shape[0] != nb or pv_out.shape[0] != nv or site_out.shape[0] != 3:
        raise ValueError(
            f"outputs must have lengths {nb} (bess), {nv} (pv), 3 (site); got "
            f"{bess_out.shape[0]}, {pv_out.shape[0]}, {site_out.shape[0]}")
    if loads is not None:
        nl = loads.shape[0]
        if loads.shape[1] != C_NL:
            raise ValueError(f"loads must have {C_NL} columns; got {loads.shape[1]}")
        if load_out is None or load_out.shape[0] != nl:
            raise ValueError(
                f"load_out must have length {nl} (loads); got "
                f"{'none' if load_out is None else load_out.shape[0]}")
    if isnan(grid_kw) or isinf(grid_kw):
        raise ValueError(f"grid_kw must be a finite measurement, got {grid_kw}")
    # A negative export limit is a floor on import (valley filling); the window must hold.
    if not (import_limit_kw >= -export_limit_kw):
        raise ValueError(
            f"the grid window [-export, import] must not be empty (inf = none), got "
            f"import {import_limit_kw} / export {export_limit_kw}")
    if not (0.0 <= dt_s < INFINITY):
        raise ValueError(f"dt_s must be finite and >= 0 s, got {dt_s}")
    with nogil:
        status = dispatch_c(grid_kw, import_limit_kw, export_limit_kw, grid_target_kw, dt_s,
                            &bess[0, 0] if nb > 0 else NULL, nb,
                            &pv[0, 0] if nv > 0 else NULL, nv,
                            &loads[0, 0] if nl > 0 else NULL, nl,
                            &bess_out[0] if nb > 0 else NULL,
                            &pv_out[0] if nv > 0 else NULL,
                            &load_out[0] if nl > 0 else NULL,
                            &site_out[0])
    return status

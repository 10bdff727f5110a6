"""Python side of the compiled dispatch kernel: the column layout of its input matrices, the
loader, and a call wrapper that allocates the outputs.

There is deliberately no Python fallback. A missing build would otherwise run a kernel some
hundred times slower, unnoticed, until a cycle overran on site; refusing to start is the
failure people can see and fix. The pure-Python twin lives in tests/ as the kernel's spec.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

# Battery matrix columns (one row per battery). +discharge / -charge, kW, kW/s, %.
B_P = 0  # measured power; for a non-controllable battery, the safe power it is held at
B_PREV = 1  # last setpoint written
B_SOC = 2
B_SOC_MIN = 3
B_SOC_MAX = 4
B_MAX_CH = 5  # > 0
B_MAX_DIS = 6  # > 0
B_RAMP = 7  # > 0, per second
B_OK = 8  # 1.0 controllable, 0.0 not (left untouched)
NB = 9

# PV matrix columns (one row per inverter). kW >= 0.
V_P = 0  # measured output
V_RATED = 1
V_PREV = 2  # last limit written
V_RAMP = 3  # kW/s allowed for raising the limit; lowering it is never ramp-limited
V_OK = 4
NV = 5

# Flexible-load matrix columns (one row per switchable load or load group). kW >= 0, s.
L_P = 0  # measured power
L_RATED = 1  # what it draws when on; a restore reserves this
L_ON = 2  # 1.0 on, 0.0 off (shed), as the device reports it
L_PRIO = 3  # lower sheds first and is restored last
L_AGE = 4  # seconds since its on/off state last changed
L_MIN_ON = 5  # never shed before it has been on this long
L_MIN_OFF = 6  # never restored before it has been off this long
L_MARGIN = 7  # room beyond its rating a restore needs (hysteresis), kW >= 0
L_OK = 8  # 1.0 controllable, 0.0 not (its state is left as it is)
NL = 9

STATUS_IMPORT_UNMET = 1
STATUS_EXPORT_UNMET = 2
STATUS_TARGET_UNMET = 4


class KernelUnavailable(RuntimeError):
    """The compiled kernel cannot be imported; the daemon must not start."""


def load_kernel() -> ModuleType:
    try:
        return importlib.import_module("edge._kernel")
    except ImportError as exc:
        raise KernelUnavailable(
            "the compiled dispatch kernel edge._kernel is not importable: reinstall with "
            "`pip install .` (needs a C compiler); refusing to start rather than running a "
            f"slower stand-in ({exc})"
        ) from exc


@dataclass(frozen=True, slots=True)
class DispatchResult:
    bess_kw: np.ndarray  # setpoint per battery row (non-controllable rows: their B_P)
    pv_limit_kw: np.ndarray  # limit per PV row (non-controllable rows: their V_PREV)
    expected_grid_kw: float  # grid once setpoints, limits and load switching take effect
    required_bess_kw: float  # total battery power the target asked for, before bands
    target_kw: float  # grid aimed at: the target (or no change) clamped into the limits
    status: int  # STATUS_* bits
    load_on: np.ndarray = field(default_factory=lambda: np.empty(0))  # 1.0/0.0 per load row

    @property
    def import_unmet(self) -> bool:
        return bool(self.status & STATUS_IMPORT_UNMET)

    @property
    def export_unmet(self) -> bool:
        return bool(self.status & STATUS_EXPORT_UNMET)

    @property
    def target_unmet(self) -> bool:
        return bool(self.status & STATUS_TARGET_UNMET)


def dispatch(
    kernel: ModuleType,
    *,
    grid_kw: float,
    import_limit_kw: float,
    export_limit_kw: float,
    grid_target_kw: float,
    dt_s: float,
    bess: np.ndarray,
    pv: np.ndarray,
    loads: np.ndarray | None = None,
) -> DispatchResult:
    """Run one kernel call. Grid window: -export_limit_kw <= grid <= import_limit_kw (a
    negative export limit is a minimum import), `math.inf` for none; target: NaN for none."""
    bess = np.ascontiguousarray(bess, dtype=np.float64)
    pv = np.ascontiguousarray(pv, dtype=np.float64)
    loads = np.ascontiguousarray(np.empty((0, NL)) if loads is None else loads, dtype=np.float64)
    bess_out = np.empty(bess.shape[0])
    pv_out = np.empty(pv.shape[0])
    load_out = np.empty(loads.shape[0])
    site_out = np.empty(3)
    status = kernel.dispatch(
        float(grid_kw), float(import_limit_kw), float(export_limit_kw), float(grid_target_kw),
        float(dt_s), bess, pv, bess_out, pv_out, site_out, loads, load_out,
    )
    return DispatchResult(
        bess_kw=bess_out,
        pv_limit_kw=pv_out,
        expected_grid_kw=float(site_out[0]),
        required_bess_kw=float(site_out[1]),
        target_kw=float(site_out[2]),
        status=int(status),
        load_on=load_out,
    )

"""The SunSpec role drivers: PV inverter, battery, meter. Each takes what the device offers,
decided again at every (re)discovery: measurement from 701, 101-103 or 111-113; PV limit
through 704 or 123; battery power through 704 or 124, SoC from 802, 713 or 124; nameplate
from 702 or 120. Where a device has 715 or 802 CtrlHb, its controller heartbeat is advanced
on every poll and every control write. `describe()` says which models serve which purpose.
"""

from __future__ import annotations

import math

from drivers.base import DeviceError
from drivers.modbus.endpoint import ModbusEndpoint
from drivers.sunspec.device import SunSpecDevice


def _kw(value: object) -> float:
    if value is None:
        raise DeviceError("device reports a required value as not implemented")
    return float(value) / 1000.0


def _first(models: dict[int, int], candidates: tuple[int, ...]) -> int | None:
    return next((m for m in candidates if m in models), None)


def _first_value(*values: object) -> float | None:
    return next((float(v) for v in values if v is not None), None)


# Measurement models, preferred first: the DER model (IEEE 1547-2018 generation, pairs with
# 704), then integer and float inverter models, three-, split-, single-phase.
MEASURE_MODELS = (701, 103, 113, 102, 112, 101, 111)
_MEASURE_TEXT = "a measurement model (701, 101-103 or 111-113)"


def _implemented(held: dict | None, values: dict[str, float | int],
                 optional: tuple[str, ...]) -> dict[str, float | int]:
    """`values` without the `optional` points the device reported as not implemented in
    `held` (its last read of the model): writing one would be refused, or mean nothing."""
    if held is None:
        return values
    return {k: v for k, v in values.items() if k not in optional or held.get(k) is not None}


class SunSpecMeter(SunSpecDevice):
    """Any SunSpec AC meter: 201 single phase, 202 split phase, 203 wye, 204 delta (the
    integer models; they share W and the TotWhImp/TotWhExp counters)."""

    METER_MODELS = (203, 204, 201, 202)
    _model: int = 203

    def _plan(self, models: dict[int, int]) -> None:
        found = _first(models, self.METER_MODELS)
        if found is None:
            raise DeviceError(f"{self.id}: no SunSpec meter model 201-204 (found {sorted(models)})")
        self._model = found
        self._fast = {found: None}
        self._slow = (1,)
        self._uses = {"measurement": found}

    async def _values(self, m: dict[int, dict]) -> dict[str, float]:
        v = m[self._model]
        return {
            "power_kw": _kw(v["W"]),
            "import_kwh": _kw(v["TotWhImp"]),
            "export_kwh": _kw(v["TotWhExp"]),
        }


class SunSpecPv(SunSpecDevice):
    """PV inverter. Measurement from 701, 101-103 or 111-113; nameplate from 702 (WMaxRtg)
    or 120 (WRtg); output limit through 704 or 123, the 7xx models first where a device has
    both (their reversion is explicit).

    704: WMaxLimPctEna, WMaxLimPct (% of 702 WMax), and on expiry of WMaxLimPctRvrtTms the
    device takes WMaxLimPctRvrt / WMaxLimPctEnaRvrt: the configured safe level
    (`revert_pct`), so a controller that dies leaves the inverter where the site's safe
    state wants it (on a zero-export site, curtailed), not at full output.
    123: WMaxLimPct (% of 121 WMax where implemented, else of WRtg), WMaxLim_Ena dropped by
    the device after WMaxLimPct_RvrtTms (123 has no reversion value: the limit lifts)."""

    def __init__(self, device_id: str, endpoint: ModbusEndpoint, unit: int,
                 revert_pct: float = 100.0) -> None:
        super().__init__(device_id, endpoint, unit)
        self.revert_pct = min(max(revert_pct, 0.0), 100.0)

    _meas: int | None = None
    _ctl: int | None = None
    _rated: float = 0.0  # kW, nameplate
    _base: float = 0.0  # kW that WMaxLimPct is a percentage of

    def _plan(self, models: dict[int, int]) -> None:
        meas, ctl = _first(models, MEASURE_MODELS), _first(models, (704, 123))
        plate = _first(models, (702, 120) if ctl == 704 else (120, 702))
        missing = [what for what, m in ((_MEASURE_TEXT, meas), ("a limit control (704 or 123)", ctl),
                                        ("a nameplate (702 or 120)", plate)) if m is None]
        if missing:
            raise DeviceError(f"{self.id}: SunSpec PV inverter needs {' and '.join(missing)} "
                              f"(found {sorted(models)})")
        assert meas is not None and ctl is not None and plate is not None
        self._meas, self._ctl = meas, ctl
        self._fast = {meas: "TotWhAbs" if meas == 701 else None,
                      ctl: "WMaxLimPctRvrtTms" if ctl == 704 else None}
        settings = (121,) if ctl == 123 and 121 in models and plate == 120 else ()
        self._slow = (1, plate, *settings)
        self._slow_keys = frozenset({"rated_kw"})
        self._uses = {"measurement": meas, "nameplate": plate, "limit": ctl}

    def _on_slow(self, values: dict[int, dict]) -> None:
        if 702 in values:
            self._rated = _kw(values[702]["WMaxRtg"])
            wmax = values[702].get("WMax")
            self._base = self._rated if wmax is None else wmax / 1000
        else:
            self._rated = _kw(values[120]["WRtg"])
            wmax = values.get(121, {}).get("WMax")
            self._base = self._rated if wmax is None else wmax / 1000

    async def _values(self, m: dict[int, dict]) -> dict[str, float]:
        meas, ctl = m[self._meas], m[self._ctl]
        if self._ctl == 704:
            limited = ctl["WMaxLimPctEna"] == 1 and ctl["WMaxLimPct"] is not None
        else:
            limited = ctl["WMaxLim_Ena"] == 1 and ctl["WMaxLimPct"] is not None
        out = {
            "power_kw": max(0.0, _kw(meas["W"])),
            "rated_kw": self._rated,
            "limit_kw": self._base * ctl["WMaxLimPct"] / 100.0 if limited else self._rated,
        }
        energy = meas.get("TotWhInj" if self._meas == 701 else "WH")
        if energy is not None:
            out["energy_kwh"] = energy / 1000.0
        return out

    async def write_limit(self, kw: float, revert_s: int) -> None:
        if self._base <= 0 or self._ctl is None:
            raise DeviceError(f"{self.id}: rated power unknown; not connected yet")
        pct = min(100.0, max(0.0, 100.0 * kw / self._base))
        if self._ctl == 704:
            await self.sunspec.write(704, _implemented(self._latest.get(704), {
                "WMaxLimPctEna": 1, "WMaxLimPct": pct, "WMaxLimPctRvrt": self.revert_pct,
                "WMaxLimPctEnaRvrt": int(self.revert_pct < 100.0), "WMaxLimPctRvrtTms": revert_s,
            }, ("WMaxLimPctRvrt", "WMaxLimPctEnaRvrt", "WMaxLimPctRvrtTms")))
        else:
            await self.sunspec.write(123, {
                "WMaxLimPct": pct,
                "WMaxLimPct_WinTms": 0,
                "WMaxLimPct_RvrtTms": revert_s,
                "WMaxLimPct_RmpTms": 0,
                "WMaxLim_Ena": 1,
            })
        await self._beat()


_SOC_POINTS = {802: "SoC", 713: "SoC", 124: "ChaState"}


class SunSpecBattery(SunSpecDevice):
    """Storage. Measurement from 701, 103 or 113 (W: + discharge); power through 704 or 124,
    704 first; state of charge from 802 (the BMS), 713 or 124 ChaState, the first one that
    implements it.

    704: WSetEna, WSetMod = WATTS, WSet in W (+ discharge, − charge); on expiry of
    WSetRvrtTms the device takes WSetRvrt = 0 W with WSetEnaRvrt = 1: it holds at zero.
    124: both limits stay active (StorCtl_Mod=3): the rates then pin the power, and 0 kW
    means "hold at zero" rather than mode 0, which releases the PCS to its own logic. Rates
    are % of the device's own WChaMax, so the device nameplate also caps the kW."""

    _meas: int | None = None
    _ctl: int | None = None
    _soc: tuple[int, ...] = ()
    _wchamax_kw: float = 0.0
    _limits_kw: tuple[float | None, float | None] = (None, None)  # 704: max charge, discharge

    def _plan(self, models: dict[int, int]) -> None:
        meas, ctl = _first(models, MEASURE_MODELS), _first(models, (704, 124))
        soc = tuple(m for m in (802, 713, 124) if m in models)
        missing = [what for what, m in ((_MEASURE_TEXT, meas), ("a power control (704 or 124)", ctl),
                                        ("a state of charge (802, 713 or 124)", soc)) if not m]
        if missing:
            raise DeviceError(f"{self.id}: SunSpec battery needs {' and '.join(missing)} "
                              f"(found {sorted(models)})")
        assert meas is not None and ctl is not None
        self._meas, self._ctl, self._soc = meas, ctl, soc
        self._fast = {meas: "TotWhAbs" if meas == 701 else None,
                      ctl: "WSetRvrtTms" if ctl == 704 else None}
        self._fast.setdefault(soc[0], "CtrlHb" if soc[0] == 802 else None)
        self._slow = (1, *(m for m in (702, 802) if m in models))
        self._slow_keys = frozenset({"max_charge_kw"}) if ctl == 704 and 702 in models else frozenset()
        self._uses = {"measurement": meas, "power": ctl, "soc": list(soc)}
        if 702 in models:
            self._uses["nameplate"] = 702

    def _on_slow(self, values: dict[int, dict]) -> None:
        cap, bms = values.get(702, {}), values.get(802, {})
        self._limits_kw = tuple(  # type: ignore[assignment]
            None if (w := _first_value(cap.get(k), cap.get(f"{k}Rtg"), bms.get(k))) is None else w / 1000
            for k in ("WChaRteMax", "WDisChaRteMax"))

    async def _values(self, m: dict[int, dict]) -> dict[str, float]:
        soc = None
        for src in self._soc:
            vals = m.get(src) or await self.sunspec.read(src, "CtrlHb" if src == 802 else None)
            soc = vals.get(_SOC_POINTS[src])
            if soc is not None and math.isfinite(soc):
                break
        if soc is None or not math.isfinite(soc):
            raise DeviceError(f"{self.id}: no state of charge reported (models {list(self._soc)})")
        out = {"power_kw": _kw(m[self._meas]["W"]), "soc_pct": float(soc)}
        if self._ctl == 124:
            self._wchamax_kw = _kw(m[124]["WChaMax"])
            out["max_charge_kw"] = self._wchamax_kw
        elif self._limits_kw[0] is not None:
            out["max_charge_kw"] = self._limits_kw[0]
        return out

    async def write_power(self, kw: float, revert_s: int) -> None:
        if self._ctl == 704:
            await self._write_704(kw, revert_s)
        elif self._ctl == 124:
            await self._write_124(kw, revert_s)
        else:
            raise DeviceError(f"{self.id}: not connected yet")
        await self._beat()

    async def _write_704(self, kw: float, revert_s: int) -> None:
        charge, discharge = self._limits_kw
        if charge is not None:
            kw = max(kw, -charge)
        if discharge is not None:
            kw = min(kw, discharge)
        held = self._latest.get(704)
        revert = _implemented(held, {"WSetEnaRvrt": 1, "WSetRvrtTms": revert_s},
                              ("WSetEnaRvrt", "WSetRvrtTms"))
        if revert and any((held or {}).get(k) != v for k, v in revert.items()):
            # The reversion first, so the new setpoint never runs under an old timer.
            await self.sunspec.write(704, revert)
            self._latest.setdefault(704, {}).update(revert)
        await self.sunspec.write(704, _implemented(held, {
            "WSetEna": 1, "WSetMod": 1, "WSet": kw * 1000.0, "WSetRvrt": 0.0,
        }, ("WSetMod", "WSetRvrt")))

    async def _write_124(self, kw: float, revert_s: int) -> None:
        if self._wchamax_kw <= 0:
            self._wchamax_kw = _kw((await self.sunspec.read(124))["WChaMax"])
        if self._wchamax_kw <= 0:
            raise DeviceError(f"{self.id}: WChaMax is 0; cannot express a power setpoint")
        pct = min(100.0, 100.0 * abs(kw) / self._wchamax_kw)
        await self.sunspec.write(124, {
            "OutWRte": pct if kw > 0 else 0.0,
            "InWRte": pct if kw < 0 else 0.0,
            "InOutWRte_WinTms": 0,
            "InOutWRte_RvrtTms": revert_s,
        })
        await self.sunspec.write(124, {"StorCtl_Mod": 3})

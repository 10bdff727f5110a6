"""`pedf-edge scan`: what is behind host:port, as the first thing an integrator runs on site.

Each unit id is asked for the SunSpec marker at 40000, 0 and 50000, its model chain is
walked, and every model pysunspec2 defines is read and decoded with that definition, so the
values come out scaled and with the units the standard gives them ("not implemented" values
are left out; repeating groups such as 705's curves appear as "Crv[0].Pt[1].V"). Nothing here raises for
a device problem: a unit that is silent, not SunSpec, or has a broken chain gets a report
with a `status` and an `error` that says what to check, because on site the answer "unit 2
does not answer, unit 1 is a SunSpec inverter" is the useful one, not a traceback.

Units are scanned one after the other over one shared connection (many devices accept a
single client); after a unit drops or times out the connection, the next unit starts on a
fresh one, so one silent unit does not make its neighbours look silent too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.base import DeviceError
from drivers.modbus.endpoint import (
    GATEWAY_NO_REPLY,
    ConnectFailed,
    Endpoint,
    ModbusExceptionReply,
)
from drivers.sunspec import models as sunspec

OK, NO_ANSWER, NOT_SUNSPEC, BROKEN_CHAIN = "ok", "no_answer", "not_sunspec", "broken_chain"

_MAX_MODELS = 64

# What an integrator looks at first: power, energy, grid, state, ratings, SoC, limits.
# Shown in the text table in this order, per model; --json carries every point.
KEY_POINTS = (
    "W", "VA", "VAr", "Var", "PF", "Hz", "PhVphA", "PhVphB", "PhVphC", "LNV", "LLV", "A", "WH",
    "TotWhInj", "TotWhAbs", "DCW", "St", "InvSt", "ConnSt",
    "WRtg", "WMaxRtg", "WMax", "WHRtg", "WChaMax", "MaxChaRte", "MaxDisChaRte", "WChaRteMaxRtg",
    "WDisChaRteMaxRtg", "WChaRteMax", "WDisChaRteMax", "ChaState", "SoC", "SoH", "WHAvail",
    "StorCtl_Mod", "WMaxLimPct", "WMaxLim_Ena", "WMaxLimPctEna", "WMaxLimPctRvrtTms", "WSetEna",
    "WSet", "WSetPct", "WSetRvrtTms", "TotWhImp", "TotWhExp", "DERHb", "ControllerHb", "Hb",
    "CtrlHb",
)
# How the standard spells a unit -> how the text table shows it; energy and power values of
# a kilo or more also appear in k-units, as the controller and the platform use them.
_UNITS = {"Pct": "%", "Secs": "s", "var": "var", "Var": "var", "VAr": "var"}
_KILO = {"W": "kW", "Wh": "kWh", "WH": "kWh", "VA": "kVA", "var": "kvar", "Varh": "kvarh"}


@dataclass(frozen=True, slots=True)
class PointValue:
    value: float | int | str
    units: str | None
    symbol: str | None = None  # name of an enum value, from the model definition

    def to_json(self) -> dict:
        out: dict = {"value": self.value, "units": self.units}
        if self.symbol is not None:
            out["symbol"] = self.symbol
        return out


@dataclass(slots=True)
class ModelReport:
    id: int
    address: int  # of the model's ID register
    length: int  # the device's L register
    name: str | None = None  # None: pysunspec2 has no definition (vendor model)
    label: str | None = None
    points: dict[str, PointValue] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "label": self.label, "address": self.address,
                "length": self.length, "error": self.error,
                "points": {k: v.to_json() for k, v in self.points.items()}}


@dataclass(slots=True)
class DeviceReport:
    host: str
    port: int
    unit: int
    status: str = NO_ANSWER
    error: str | None = None
    base: int | None = None  # where "SunS" was found
    models: list[ModelReport] = field(default_factory=list)

    def _common(self, name: str) -> str | None:
        common = next((m for m in self.models if m.id == 1), None)
        pv = common.points.get(name) if common else None
        return None if pv is None else str(pv.value)

    @property
    def manufacturer(self) -> str | None:
        return self._common("Mn")

    @property
    def model(self) -> str | None:
        return self._common("Md")

    @property
    def serial(self) -> str | None:
        return self._common("SN")

    @property
    def version(self) -> str | None:
        return self._common("Vr")

    @property
    def model_ids(self) -> list[int]:
        return [m.id for m in self.models]

    def key_values(self) -> list[tuple[int, str, PointValue]]:
        """(model id, point, value) for the KEY_POINTS each model carries, in KEY_POINTS order."""
        return [(m.id, name, m.points[name]) for m in self.models for name in KEY_POINTS
                if name in m.points]

    def to_json(self) -> dict:
        return {
            "host": self.host, "port": self.port, "unit": self.unit, "status": self.status,
            "error": self.error, "base": self.base, "manufacturer": self.manufacturer,
            "model": self.model, "serial": self.serial, "version": self.version,
            "model_ids": self.model_ids, "models": [m.to_json() for m in self.models],
        }


class _Stop(Exception):
    """Ends a unit's scan with a status; the message is for people."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


async def scan(host: str, port: int, units: list[int], timeout_s: float) -> list[DeviceReport]:
    """One report per unit id, in the order given."""
    reports: list[DeviceReport] = []
    ep = Endpoint(host, port, timeout_s)
    try:
        for unit in units:
            if reports and not ep.connected:
                await ep.close()
                ep = Endpoint(host, port, timeout_s)  # no reconnect backoff left from the last unit
            report = DeviceReport(host, port, unit)
            try:
                await _scan_unit(ep, report, timeout_s)
                report.status = OK
            except _Stop as stop:
                report.status, report.error = stop.status, str(stop)
            reports.append(report)
    finally:
        await ep.close()
    return reports


async def _scan_unit(ep: Endpoint, report: DeviceReport, timeout_s: float) -> None:
    report.base = await _find_marker(ep, report.unit, timeout_s)
    chain = await _walk_chain(ep, report)
    for mid, addr, length in chain:
        report.models.append(await _read_model(ep, report.unit, mid, addr, length))


async def _find_marker(ep: Endpoint, unit: int, timeout_s: float) -> int:
    """The base holding "SunS". A base may be answered with an exception or not at all (some
    devices ignore unknown addresses), so every base is tried before judging the unit."""
    seen: list[str] = []
    answered = False
    for base in sunspec.BASES:
        try:
            regs = await ep.read(unit, base, 2)
        except ConnectFailed as exc:
            raise _Stop(NO_ANSWER, f"nothing answers at {ep.name} ({_cause(exc)}); check the "
                        "host and port, that Modbus TCP is enabled on the device, and that no firewall "
                        f"blocks port {ep.port}") from None
        except ModbusExceptionReply as exc:
            if exc.code in GATEWAY_NO_REPLY:
                raise _Stop(NO_ANSWER, f"the gateway answered but unit {unit} did not "
                            f"(Modbus exception {exc.code}); check the unit id and the bus "
                            "behind the gateway") from None
            answered = True
            seen.append(f"{base}: exception {exc.code}")
            continue
        except DeviceError:
            seen.append(f"{base}: no reply")
            continue
        if tuple(regs) == sunspec.SUNS:
            return base
        answered = True
        seen.append(f"{base}: {regs[0]:04X} {regs[1]:04X}")
    if not answered:
        raise _Stop(NO_ANSWER, f"connected, but unit {unit} never replied within "
                    f"{timeout_s:g} s; check the unit id (Modbus slave/device address)")
    raise _Stop(NOT_SUNSPEC, "answers Modbus but has no SunSpec marker 'SunS' at "
                f"40000, 0 or 50000 ({'; '.join(seen)}); it is not a SunSpec device (or SunSpec "
                "is switched off in its settings): describe it with a register map instead")


async def _walk_chain(ep: Endpoint, report: DeviceReport) -> list[tuple[int, int, int]]:
    """(model id, address, device L) for each model, from the marker to the 0xFFFF end."""
    assert report.base is not None
    chain: list[tuple[int, int, int]] = []
    addr = report.base + 2
    while True:
        found = [m for m, _, _ in chain]
        try:
            mid, length = await ep.read(report.unit, addr, 2)
        except DeviceError as exc:
            raise _Stop(BROKEN_CHAIN, f"SunSpec model chain broken at register {addr} "
                        f"after models {found}: {_cause(exc)}") from None
        if mid == sunspec.END_ID:
            return chain
        if mid == 0 or len(chain) >= _MAX_MODELS or addr + 2 + length > 0xFFFF:
            why = ("model id 0" if mid == 0 else f"more than {_MAX_MODELS} models"
                   if len(chain) >= _MAX_MODELS else f"model {mid} length {length} runs past 65535")
            raise _Stop(BROKEN_CHAIN, f"SunSpec model chain broken at register {addr} "
                        f"after models {found}: {why}; no 0xFFFF end marker")
        chain.append((mid, addr, length))
        addr += 2 + length


async def _read_model(ep: Endpoint, unit: int, mid: int, addr: int, length: int) -> ModelReport:
    """Decode one model with pysunspec2's definition; points past the device's own L (an older
    revision of the model) are left out rather than read from the next model's registers."""
    try:
        mdef = sunspec.model(mid)
    except sunspec.SunSpecError:
        return ModelReport(mid, addr, length, error="no definition in pysunspec2 (vendor model?)")
    report = ModelReport(mid, addr, length, mdef.name, mdef.label)
    # Repeating groups (705's curves ...) fill the device's L past the fixed part.
    count = length if mdef.tail else min(length, mdef.length)
    try:
        regs = await ep.read(unit, addr, count + 2)
    except DeviceError as exc:
        report.error = f"read failed: {_cause(exc)}"
        return report
    if regs[0] != mid:
        report.error = f"expected model id {mid} at {addr}, found {regs[0]}"
        return report
    fixed = sunspec.decode(mdef, regs)  # only the points inside the device's length
    found = [(name, mdef.points[name], value) for name, value in fixed.items()]
    if mdef.tail:
        found += sunspec.decode_groups(mdef, regs)
    for name, p, value in found:
        if value is None or name in ("ID", "L") or p.type in ("sunssf", "pad"):
            continue
        if isinstance(value, float):
            value = round(value, 6)  # 10**sf leaves float dust (230.00000000000003)
        enum = p.type.startswith("enum")  # bitfield symbols name bits, not values
        report.points[name] = PointValue(value, p.units, p.symbol(value) if enum else None)
    if length < mdef.length:  # longer is normal: repeating groups follow the fixed part
        report.error = (f"shorter than pysunspec2's definition ({length} < {mdef.length} "
                        "registers): an older revision; points past its end left out")
    return report


def _cause(exc: Exception) -> str:
    """The endpoint's message without its own "host:port: " prefix (the report has those)."""
    return str(exc).split(": ", 1)[-1]


def _num(v: float | int | str) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def _fmt(pv: PointValue) -> str:
    text = _num(pv.value)
    return f"{text} ({pv.symbol})" if pv.symbol else text


def _units(pv: PointValue) -> str:
    """Units for the text table: "%" for Pct, and the value in kW/kWh next to W/Wh."""
    units = _UNITS.get(pv.units or "", pv.units or "")
    kilo = _KILO.get(units)
    if kilo and isinstance(pv.value, int | float) and abs(pv.value) >= 1000:
        return f"{units}  = {_num(pv.value / 1000)} {kilo}"
    return units


def render_text(reports: list[DeviceReport]) -> str:
    """A compact table per device: identity, models, then the key values with units."""
    out: list[str] = []
    for r in reports:
        head = f"{r.host}:{r.port} unit {r.unit}"
        if r.status != OK:
            out += [f"{head}: {r.status.replace('_', ' ').upper()}", f"  {r.error}"]
            if r.models:
                out.append("  models before the break: " + ", ".join(map(str, r.model_ids)))
            out.append("")
            continue
        out.append(f"{head}: SunSpec at {r.base}  {r.manufacturer or '?'} {r.model or '?'}  "
                   f"serial {r.serial or '?'}  version {r.version or '?'}")
        for m in r.models:
            note = f"  [{m.error}]" if m.error else ""
            out.append(f"  model {m.id:<5} {m.label or m.name or 'unknown'}{note}")
        rows = [(mid, name, _fmt(pv), _units(pv)) for mid, name, pv in r.key_values()]
        if rows:
            nw = max(len(row[1]) for row in rows)
            vw = max(12, *(len(row[2]) for row in rows))
            out.append(f"  {'model':<6} {'point':<{nw}} {'value':>{vw}}  units")
            for mid, name, text, units in rows:
                out.append(f"  {mid:<6} {name:<{nw}} {text:>{vw}}  {units}".rstrip())
        out.append("")
    return "\n".join(out).rstrip() + "\n"

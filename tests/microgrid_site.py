"""A small microgrid for the island unit tests: PCC breaker, a grid-forming battery, PV, a
critical load and two non-critical loads."""

from __future__ import annotations

from datetime import UTC, datetime

from drivers.base import Quality, Reading
from edge.config import parse
from edge.image.image import DeviceState, ProcessImage

T0 = datetime(2026, 6, 22, 18, tzinfo=UTC)


def site(**breaker) -> dict:
    def dev(i, role, **kw):
        return {"id": i, "role": role, "host": "127.0.0.1", "port": 1500 + len(i), **kw}

    return {
        "site": {"id": "mg"},
        "devices": [
            dev("pcc", "meter"),
            dev("cb", "breaker", protocol="modbus-tcp", map="breaker_generic", port=1601,
                **breaker),
            dev("bess", "battery", protocol="modbus-tcp", map="pcs_generic", port=1602,
                capacity_kwh=200, max_charge_kw=60, max_discharge_kw=70, grid_forming=True),
            dev("pv", "pv", rated_kw=80),
            dev("fridge", "load", protocol="modbus-tcp", map="flexload_generic", port=1603,
                rated_kw=10, critical=True),
            dev("hvac", "load", protocol="modbus-tcp", map="flexload_generic", port=1604,
                unit_id=2, rated_kw=30, priority=5, min_off_s=0),
            dev("pump", "load", protocol="modbus-tcp", map="flexload_generic", port=1605,
                unit_id=3, rated_kw=20, priority=1, min_off_s=0),
        ],
        "tariff": {"periods": [{"name": "flat", "start": "00:00", "end": "00:00", "price": 0.5}]},
    }


CONFIG = parse(site(island={"detect_s": 1.0, "return_s": 10.0, "backup_hours": 4}))


def image(soc=80.0, pv_kw=0.0, grid_v=230.0, closed=True, bus_v=230.0, forming=0.0,
          loads=None, bess_kw=0.0) -> ProcessImage:
    loads = loads or {"fridge": 1.0, "hvac": 1.0, "pump": 1.0}
    rated = {"fridge": 10.0, "hvac": 30.0, "pump": 20.0}

    def st(i, values):
        return DeviceState(Reading(i, values), Quality.GOOD, 0)

    devs = {
        "pcc": st("pcc", {"power_kw": 10.0}),
        "cb": st("cb", {"closed": float(closed), "tripped": 0.0, "grid_v": grid_v,
                        "grid_hz": 50.0 if grid_v else 0.0, "bus_v": bus_v,
                        "bus_hz": 50.0 if bus_v else 0.0, "phase_deg": 0.0}),
        "bess": st("bess", {"power_kw": bess_kw, "soc_pct": soc, "grid_mode": forming}),
        "pv": st("pv", {"power_kw": pv_kw, "limit_kw": 80.0}),
    }
    for k, on in loads.items():
        devs[k] = st(k, {"power_kw": rated[k] * on, "on": on})
    return ProcessImage(T0, 1.0, devs)

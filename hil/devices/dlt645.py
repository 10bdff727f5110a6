"""The DL/T 645-2007 meter simulator (served by hil/serve/dlt645.py, not Modbus)."""

from __future__ import annotations

from typing import ClassVar

from pymodbus.simulator import SimDevice

from drivers.dlt645.frame import transformer_factor
from edge.config import MeterDevice
from hil.devices.base import SimulatedDevice
from hil.devices.roles import Metering
from hil.serve.dlt645 import PROTOCOLS


class Dlt645SimMeter(Metering, SimulatedDevice):
    """A DL/T 645 meter (behind a TCP gateway or on a serial bus), by its 12-digit address:
    `measures: grid` is the PCC meter (balances the site, + import), `measures: load` is the
    building load (its sim profile), as the other meters. It has no Modbus image: the site
    serves it through hil/serve/dlt645.py, which reads `dlt645_values()`."""

    role = "meter"
    models = ()
    protocols: ClassVar[tuple[str, ...]] = PROTOCOLS
    cfg: MeterDevice
    VOLTAGE_V = 230.0

    def __init__(self, cfg: MeterDevice, site_max_kw: float) -> None:
        self._init_unit(cfg)  # not SimulatedDevice.__init__: that builds a SunSpec chain image
        self._init_metering(cfg)

    @property
    def address(self) -> str:
        assert self.cfg.address is not None  # the config requires it for dlt645-*
        return self.cfg.address

    def dlt645_values(self) -> dict[str, float]:
        """By hil.serve.dlt645.FORMATS key: balanced phases, unity power factor; current
        carries the sign of the power (− reverse), as the meter's signed XXX.XXX A format.
        Secondary values, as the meter sees them behind its transformers: the site's
        primary values divided by `ct_ratio` / `pt_ratio` (1 = direct connection)."""
        v, p = self.VOLTAGE_V, self.power_kw
        amps = p * 1000 / (3 * v)
        primary = {
            "power_kw": p, "power_a_kw": p / 3, "power_b_kw": p / 3, "power_c_kw": p / 3,
            "voltage_a_v": v, "voltage_b_v": v, "voltage_c_v": v,
            "current_a_a": amps, "current_b_a": amps, "current_c_a": amps,
            "power_factor": 1.0, "power_factor_a": 1.0, "power_factor_b": 1.0,
            "power_factor_c": 1.0, "frequency_hz": 50.0,
            "import_kwh": self.import_kwh, "export_kwh": self.export_kwh,
        }
        ct, pt = self.cfg.ct_ratio, self.cfg.pt_ratio
        return {k: x / transformer_factor(k, ct, pt) for k, x in primary.items()}

    def sim_device(self) -> SimDevice:
        raise TypeError(f"{self.id} is a DL/T 645 meter; serve it with hil.serve.dlt645")

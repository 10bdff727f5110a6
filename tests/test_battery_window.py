"""The battery's energy window, the one formula DR assessment, OpenADR opt-in, dispatch
checks and M&V share."""

import pytest

from edge.config import BatteryDevice

BESS = BatteryDevice(id="b", role="battery", protocol="sunspec-tcp", host="127.0.0.1", port=1502,
                     capacity_kwh=200, max_charge_kw=100, max_discharge_kw=100, soc_min_pct=10,
                     soc_max_pct=90, charge_efficiency=0.95, discharge_efficiency=0.9)


def test_deliverable_energy_is_above_soc_min_after_discharge_losses():
    assert BESS.deliverable_kwh(60) == pytest.approx(0.5 * 200 * 0.9)  # 90 kWh at the AC side
    assert BESS.deliverable_kwh(10) == 0 and BESS.deliverable_kwh(5) == 0


def test_absorbable_energy_is_below_soc_max_before_charge_losses():
    assert BESS.absorbable_kwh(60) == pytest.approx(0.3 * 200 / 0.95)
    assert BESS.absorbable_kwh(90) == 0 and BESS.absorbable_kwh(95) == 0

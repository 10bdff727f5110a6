"""EV chargers in what the site offers (flex message, OpenADR opt decision): a car's
charging counts as sheddable only for windows its session's slack covers (hours to
departure minus the hours its remaining energy takes at full power), and a charger with a
car can be raised to its maximum. The sessions come from a real decision's `demands`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from ev_site import FULL_KW, KW_PER_A, T0, config, decide, ev, image

from edge.control.instructions import InstructionBook
from edge.control.kernel import load_kernel
from edge.roles.evsession import EvRequest
from edge.vpp import flex
from edge.vpp.capability import site_capability, slack_h
from edge.vpp.openadr.mapping import flexibility

EV2_KW = 10 * KW_PER_A


@pytest.fixture(scope="module")
def kernel():
    return load_kernel()


def sessions(kernel, cfg, img):
    """ev1 needs 10 kWh within 4 h (slack 3.5 h); ev2 20 kWh within 1 h (slack 5 min)."""
    book = InstructionBook()
    book.requests["ev1"] = EvRequest("ev1", T0, 3.0, T0 + timedelta(hours=4), 10.0)
    book.requests["ev2"] = EvRequest("ev2", T0, 5.0, T0 + timedelta(hours=1), 20.0)
    d, _ = decide(cfg, kernel, img, book)
    return d.demands


def site_now(cfg):
    return image(30.0 + FULL_KW + EV2_KW, ev1=ev(32.0, session=3.0), ev2=ev(10.0, session=5.0))


def test_slack_is_the_time_a_car_can_wait_and_still_leave_with_its_energy(kernel):
    cfg = config()
    demands = sessions(kernel, cfg, site_now(cfg))
    slack = slack_h(demands, T0)
    assert slack["ev1"] == pytest.approx(4 - 10 / FULL_KW)
    assert slack["ev2"] == pytest.approx(1 - 20 / FULL_KW)


def test_flex_counts_a_pause_only_for_the_car_with_slack_for_the_interval(kernel):
    cfg = config(vpp={"flex_horizon_h": 1})
    img = site_now(cfg)
    demands = sessions(kernel, cfg, img)
    blind = flex.build(cfg, img, T0)["intervals"][0]
    aware = flex.build(cfg, img, T0, demands=demands)["intervals"][0]
    battery_up = 50.0  # idle at 50 %: its full rating holds for a quarter hour
    assert blind["up_kw"] == pytest.approx(battery_up + FULL_KW + EV2_KW, abs=1e-3)
    # ev2 must charge nearly flat out to make its departure: pausing it is no offer
    assert aware["up_kw"] == pytest.approx(battery_up + FULL_KW, abs=1e-3)
    assert aware["up_kwh"] == pytest.approx(blind["up_kwh"] - EV2_KW * 0.25, abs=1e-3)
    # more import: ev1 is at its maximum already, ev2 can go from 10 A to 32 A
    assert aware["down_kw"] == pytest.approx(50.0 + FULL_KW - EV2_KW, abs=1e-3)


def test_a_longer_window_than_the_slack_takes_the_car_out_of_the_offer(kernel):
    cfg = config()
    img = site_now(cfg)
    demands = sessions(kernel, cfg, img)
    alone = site_capability(cfg, image(30.0), 1.0).up_kw  # no car: the battery only
    hour = flexibility(cfg, img, 1.0, demands)
    assert hour.reduce_kw == pytest.approx(alone + FULL_KW)  # ev1's 3.5 h of slack cover it
    four = flexibility(cfg, img, 4.0, demands)
    assert four.reduce_kw == pytest.approx(site_capability(cfg, image(30.0), 4.0).up_kw)
    assert flexibility(cfg, img, 4.0).reduce_kw == pytest.approx(four.reduce_kw + FULL_KW
                                                                 + EV2_KW)


def test_a_charger_without_a_car_offers_nothing_either_way(kernel):
    cfg = config()
    img = image(30.0 + FULL_KW, ev1=ev(32.0, session=3.0))  # ev2 has no car
    parts = {p.id: p for p in site_capability(cfg, img, 0.25).parts}
    assert parts["ev2"].up_kw(0.25) == 0.0 and parts["ev2"].down_kw(0.25) == 0.0
    assert parts["ev1"].up_kw(0.25) == pytest.approx(FULL_KW)  # no demand known: sheddable

"""OCPP 1.6J and 2.0.1, the CSMS side: the daemon runs the server EV chargers connect to
(csms), one driver per charger (charger.OcppCharger, role ev_charger), per-version handlers
(v16, v201) over a version-neutral state (station), and a writer per connection that keeps
the charger's current limit as charging profiles that lapse to a fail-safe (writer)."""

from drivers.ocpp.charger import OcppCharger
from drivers.ocpp.csms import Csms

__all__ = ["Csms", "OcppCharger"]

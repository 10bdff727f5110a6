"""OpenADR 2.0b VEN (openleadr): registers with the grid operator's VTN, polls it, turns
events into grid-operator DR events, decides optIn/optOut from what the site can really
deliver, and reports the measured grid power (TELEMETRY_USAGE).

Flow of one event: openleadr hands the parsed event to `Ven.on_event` -> its signals are
normalised into protocol-free `DrRequest`s (one per signal interval) -> the site's
flexibility over the event window, less what overlapping commitments already claim, decides
the opt (`dr.min_response_ratio`) -> if opted in, the requests become `DrEvent`s (one per
signal and direction, its intervals as segments) handed to DR execution (edge/vpp/dr/:
baseline, ramp-in / hold / staggered restore as instructions of source "grid_operator" in
the cycle's book, M&V, its own persistence) -> the event, its signals and the opt decision
are stored in SQLite (edge/vpp/eventstore.py). openleadr keeps events in memory only: after a
restart the stores let the daemon resume the event before it has talked to the VTN again,
and answer a re-sent event with the opt it gave before.

Signals (docs/domain.md §5):
- SIMPLE level 1-3: shed `openadr.simple_levels_kw[level]` of grid import below the baseline
  (level 0: normal operation, nothing to do).
- LOAD_DISPATCH setpoint: follow that grid power (target, and a bound on the side it moves to);
  delta: change the grid power by that much relative to the baseline (negative = reduce).
- LOAD_CONTROL x-loadControlSetpoint: as a LOAD_DISPATCH setpoint; x-loadControlCapacity:
  import at most that fraction of the baseline; x-loadControlPercentOffset: change by that
  percentage of the baseline.
Power values are kW unless the signal's itemBase says otherwise (W, kW, MW via siScaleCode).
Other signals (prices, bids) are not acted on; an event with nothing actionable is opted out.

Baselines: DR execution uses the configured method (`dr.baseline`); when the history cannot
give one yet (a new site), the grid import measured when the event arrived stands in as a flat
baseline. That measurement is also what the opt decision and the relative LOAD_CONTROL
signals are based on, stored with the event so an update keeps the same reference.

Times: OpenADR runs on the wall clock; the daemon may run on a faster simulated clock (HIL).
Event windows are mapped onto the daemon's clock when they are handed to DR execution.

Modules: mapping.py (events to requests, DR events and the opt decision; no openleadr) and
ven.py (the VEN: openleadr's client, the event handler, reports).
"""

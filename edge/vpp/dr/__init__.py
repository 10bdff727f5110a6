"""DR execution: events become shaped grid instructions (edge/vpp/shaping.py), each is
tracked by live M&V (edge/vpp/execution.py, mv.py) on its baseline (baseline.py) until its
final result, and everything about it survives a restart.

The seam: vpp/commands (MQTT `cmd/dr_event`, `cmd/cancel`) and vpp/openadr (VTN events)
build a `DrEvent` (edge/vpp/shaping.py) and call `DrManager.add(event, now)` (manager.py;
raises `DrRejected` with the reason, for the ack / optOut), `DrManager.cancel(event_id,
now)` and `DrManager.assess(event, now, image)` (assess.py: expected response ratio, for
opt-in decisions against `dr.min_response_ratio`). Lower level: `event_instructions` shapes
an event on a given baseline; `DrExecution` tracks one. The daemon owns one `DrManager`
(`Daemon.dr`), calls `tick` periodically and sends what it returns on `dr/<event_id>`
(edge/vpp/schemas/reports.py `DrReport`, plus projected_ratio, alarm, band).

Instructions carry the event's source (grid_operator or park) and combine in the book by
priority with park dispatch and the plan (edge/control/instructions.py); the planner reads the
grid-operator and park ones as commitments. The baseline is computed until the response
begins (ramp-in start) and frozen from then on; a realtime baseline waits for its reference
quarter hour. Events, frozen baselines and final results persist in `dr.sqlite` in the state
dir (store.py): a restarted daemon resumes an event mid-way and keeps event days out of
baselines.
"""

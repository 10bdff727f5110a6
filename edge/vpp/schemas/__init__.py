"""The MQTT contract with the park platform (v1), as pydantic models: one per message, in and
out. The JSON Schemas that `pedf-edge schema` prints are generated from these models, so
the documentation and the validation cannot drift apart.

Commands (platform -> site, `<prefix>/<site>/cmd/<name>`) are strict: unknown fields, wrong
types, strings for numbers, NaN/inf and times without a UTC offset are all rejected. Reports
(site -> platform) allow fields added later within v1 (consumers ignore what they do not
know); the tests check that the daemon sends no field the model does not declare.

Sign conventions: grid + import / − export, battery + discharge / − charge; kW, kWh, %, UTC.
"""

"""The operator's HTTP API inside the daemon (config section `api:`, off by default): JSON
views of the last cycle and of the services (state, devices, plan, history, DR, flex), a
live Server-Sent Events stream, commands that take the MQTT commands' path, an OpenAPI
document and Prometheus metrics.

Modules: server.py (uvicorn in the daemon's loop, the token, start and stop), routes.py
(the endpoints), views.py and reads.py (the JSON), schemas.py and openapi.py (the
contract), stream.py (the live stream), metrics.py (Prometheus)."""

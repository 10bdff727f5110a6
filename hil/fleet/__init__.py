"""A VPP fleet on loopback: a NATS cluster with MQTT (brokers.py), N lightweight sites that
run the node's real link, outbox and command code against simulated physics (sim.py,
site.py), and a reference aggregator (aggregator.py) — a reference for tests and
benchmarks, not a product platform."""

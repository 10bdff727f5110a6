"""Island operation of a microgrid: the grid state machine (machine.py), the energy balance
while islanded (balance.py) and the island event report (report.py). The PCC breaker role
(edge/roles/breaker.py) owns the machine's state; see docs/island-mode.md."""

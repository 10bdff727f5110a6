"""`pedf-edge simulate`: the controller against a scenario on the simulated clock, and what
it cost next to its references.

The run is real (`run`): the HIL (hil/site.py, driven by the scenario's series) and the
daemon (planner on unless told otherwise) share one accelerated clock; money and energy come
from the HIL ledger (metered at the PCC every simulated second, demand on 15-min means). The
references, all on the same true series, prices and end-of-run valuation: the
perfect-foresight optimum and, on a site with EV chargers, uncontrolled charging
(`references`), the rules without the planner (`replay`, its cars in `evpark`), and the
same site without its battery (the HIL's counterfactual ledger). `kpis` compares them
(`evkpis` has the car park's figures), `command` is the CLI.
"""

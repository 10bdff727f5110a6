"""The site as a VPP node: the MQTT contract with the park platform (schemas/), platform
commands into the instruction book (commands/), what the site can deliver (capability.py)
and offer (flex.py), DR execution with baselines and M&V (dr/ and its helpers) and the
OpenADR VEN (openadr/)."""

"""The site as a VPP node: the MQTT contract with the park platform (schemas.py), platform
commands into the instruction book (commands.py), what the site can offer (flex.py), DR
execution with baselines and M&V (dr.py and its helpers) and the OpenADR VEN (openadr.py)."""

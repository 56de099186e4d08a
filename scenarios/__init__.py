"""stag_sim.scenarios: the shipped YAML scenario files (installed as package data of ``stag_sim.scenarios``)."""

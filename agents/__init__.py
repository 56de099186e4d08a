"""stag_sim.agents: ego policies (log replay, pure pursuit + PID, constant velocity, random, planner adapters).

Installed as ``stag_sim.agents``. The policies land with the closed-loop evaluation issue.
"""

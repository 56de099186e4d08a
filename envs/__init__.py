"""stag_sim.envs: the Gymnasium adapter (the only stateful layer). Installed as ``stag_sim.envs``.

The StagDrive-v0 environment lands here (see the env issue); this release ships the scene layer it builds on.
"""

"""stag_sim.envs: the Gymnasium adapter (the only stateful layer). Installed as ``stag_sim.envs``.

``StagDrive-v0`` (:class:`stag_sim.envs.stag_drive.StagDriveEnv`) is registered when ``stag_sim`` is imported;
:mod:`stag_sim.envs.vector` is the batched vector env and :mod:`stag_sim.envs.carla_env` the CARLA co-simulation.
"""

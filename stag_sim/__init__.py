"""StagDrive (stag_sim): closed-loop driving simulation on logged surround-view camera data.

``import stag_sim`` stays light: heavy dependencies (torch, diffusers, carla, nuscenes-devkit, ray) are
imported lazily by the one module that needs each.
"""

from __future__ import annotations

from stag_sim.version import __version__

ENV_ID = "StagDrive-v0"


def _register_envs() -> None:
    """Register StagDrive-v0 with Gymnasium (idempotent; gymnasium's registry is light to import)."""
    from gymnasium.envs.registration import register, registry

    if ENV_ID not in registry:
        register(
            id=ENV_ID,
            entry_point="stag_sim.envs.stag_drive:StagDriveEnv",
            vector_entry_point="stag_sim.envs.vector:StagDriveVectorEnv",
        )


_register_envs()

__all__ = ["ENV_ID", "__version__"]

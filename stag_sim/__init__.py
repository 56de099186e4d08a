"""StagDrive (stag_sim): closed-loop driving simulation on logged surround-view camera data.

``import stag_sim`` stays light: heavy dependencies (torch, diffusers, carla, nuscenes-devkit, ray) are
imported lazily by the one module that needs each.
"""

from __future__ import annotations

from pathlib import Path as _Path

from stag_sim.version import __version__

# In a source checkout the folders envs/, agents/ and scenarios/ sit beside this package; an install maps them
# to stag_sim.envs, stag_sim.agents and stag_sim.scenarios (setup.py package_dir). When this package is imported
# straight from a checkout (the repository root on sys.path), search the root too so the same names resolve.
_ROOT = _Path(__file__).resolve().parent.parent
if (_ROOT / "setup.py").is_file() and (_ROOT / "envs" / "__init__.py").is_file() and str(_ROOT) not in __path__:
    __path__.append(str(_ROOT))

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

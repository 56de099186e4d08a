"""Where stag_sim keeps things on disk, and the embedded default scene."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable overriding the user cache directory.
CACHE_ENV = "STAG_SIM_CACHE"


def user_cache_dir() -> Path:
    """``$STAG_SIM_CACHE``, else ``$XDG_CACHE_HOME/stag_sim``, else ``~/.cache/stag_sim``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "stag_sim"


def default_scene_dir(seed: int = 0, duration_s: float = 20.0, width: int = 400, height: int = 224) -> Path:
    """Cache path of the synthetic town scene generated with these settings."""
    from stag_sim.cache import FORMAT_VERSION
    from stag_sim.synth import GENERATOR_VERSION

    # the cache format version is part of the name, so a newer stag_sim regenerates instead of failing on an old cache
    return (user_cache_dir() / "scenes"
            / f"synth-town-s{seed}-d{duration_s:g}-{width}x{height}-g{GENERATOR_VERSION}-c{FORMAT_VERSION}")


def ensure_default_scene(seed: int = 0, duration_s: float = 20.0, width: int = 400, height: int = 224,
                         progress: bool = True) -> Path:
    """Return the cached synthetic town scene, generating it first if it is not there (atomic write)."""
    from stag_sim.cache import write_scene_cache
    from stag_sim.synth import generate_scene

    path = default_scene_dir(seed, duration_s, width, height)
    if not (path / "scene.json").is_file():
        log = generate_scene(seed=seed, duration_s=duration_s, width=width, height=height, progress=progress)
        write_scene_cache(log, path, overwrite=True)
    return path

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


#: Suffix of the cache directory of a layout-only town (``ensure_default_scene(..., sensors=False)``).
LAYOUT_SUFFIX = "-layout"


def default_scene_dir(seed: int = 0, duration_s: float = 20.0, width: int = 400, height: int = 224,
                      sensors: bool = True) -> Path:
    """Cache path of the synthetic town scene generated with these settings (``sensors=False``: the layout-only
    log, in a directory of its own named with :data:`LAYOUT_SUFFIX`)."""
    from stag_sim.cache import FORMAT_VERSION
    from stag_sim.synth import GENERATOR_VERSION

    # the cache format version is part of the name, so a newer stag_sim regenerates instead of failing on an old cache
    name = f"synth-town-s{seed}-d{duration_s:g}-{width}x{height}-g{GENERATOR_VERSION}-c{FORMAT_VERSION}"
    return user_cache_dir() / "scenes" / (name if sensors else name + LAYOUT_SUFFIX)


def ensure_default_scene(seed: int = 0, duration_s: float = 20.0, width: int = 400, height: int = 224,
                         progress: bool = True, sensors: bool = True) -> Path:
    """Return the cached synthetic town scene, generating it first if it is not there (atomic write).

    ``sensors=False``: the layout-only town (no images, depth or LiDAR; see ``generate_scene``), for camera-free
    envs: under a second and ~1 MB instead of minutes and ~130 MB. It is always its own directory
    (:func:`default_scene_dir` with ``sensors=False``), whether or not the full town is cached.

    Processes that generate the same town at once (the workers of a vector env on a new seed) are safe: the first
    to finish publishes it, the others use theirs (the same bytes), and a published cache is never replaced.
    """
    from stag_sim.synth import generate_scene

    path = default_scene_dir(seed, duration_s, width, height, sensors)
    if not (path / "scene.json").is_file():
        log = generate_scene(seed=seed, duration_s=duration_s, width=width, height=height, progress=progress,
                             sensors=sensors)
        _publish_once(log, path)
    return path


def _publish_once(log, path: Path) -> None:
    """Write ``log``'s scene cache at ``path`` unless another process publishes one first: the cache is written
    aside, then renamed into place, which fails (and ours is dropped) where a complete cache already is."""
    import shutil
    import tempfile

    from stag_sim.cache import write_scene_cache
    from stag_sim.errors import SceneError

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    try:
        os.rename(write_scene_cache(log, staging / "scene"), path)  # replaces an empty directory, never a full one
    except OSError as e:
        if not (path / "scene.json").is_file():
            raise SceneError(f"{path}: could not publish the generated scene there ({e.strerror}); remove it") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""Where an env's scenes come from: one scene, or a list drawn per reset, loaded lazily and shared in a process.

``scene`` values: None (the embedded synthetic town), ``"synthetic:SEED"`` (the town of another seed, generated
into the cache on first use), a scene cache path, or a :class:`~stag_sim.scene_log.SceneLog`. A camera-free env
(``sensors=False``) takes a synthetic town's layout-only log (ego, tracks and map; no images, depth or LiDAR),
which builds in seconds where the full town renders for minutes.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

from stag_sim.errors import ValidationError
from stag_sim.scene_log import SceneLog

#: (scene spec, sensors, cache stamp) -> log, while an env holds it (every env of a process shares a loaded scene;
#: nothing is pinned after its envs are gone), and -> its cache dir
_LOADED: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
_DIRS: dict = {}


def load_scene(scene, sensors: bool = True) -> tuple[SceneLog, Path | None]:
    """A SceneLog and its cache dir from ``scene`` (see the module docstring); ``sensors=False`` takes a synthetic
    town's layout-only log. Loaded once while any env of the process holds it."""
    if isinstance(scene, SceneLog):
        return scene, None
    if scene is not None and not isinstance(scene, (str, os.PathLike)):
        raise ValidationError(f"scene: expected None, 'synthetic:SEED', a scene cache path or a SceneLog, "
                              f"got {type(scene).__name__}")
    synthetic = scene is None or str(scene).startswith("synthetic:")
    stamp = None
    if not synthetic:  # a cache rewritten in place is loaded again
        meta = Path(scene) / "scene.json"
        stamp = meta.stat().st_mtime_ns if meta.is_file() else None
    key = (None if scene is None else str(scene), bool(sensors) or not synthetic, stamp)
    log = _LOADED.get(key)
    if log is None:
        log, _DIRS[key] = _load(scene, key[1])
        _LOADED[key] = log
    return log, _DIRS[key]


def _load(scene, sensors: bool) -> tuple[SceneLog, Path | None]:
    from stag_sim.cache import load_scene_cache
    from stag_sim.paths import ensure_default_scene

    if scene is None:
        path = ensure_default_scene(progress=True, sensors=sensors)
        return load_scene_cache(path, verify=False), path
    if str(scene).startswith("synthetic:"):
        try:
            seed = int(str(scene).split(":", 1)[1])
        except ValueError:
            raise ValidationError(f"scene: {scene!r}: expected synthetic:SEED with an integer seed") from None
        path = ensure_default_scene(seed=seed, progress=True, sensors=sensors)
        return load_scene_cache(path, verify=False), path
    return load_scene_cache(scene), Path(scene)


class SceneList:
    """Scenes drawn per reset: the first loaded at once (it sets the env's spaces), the others on first draw."""

    def __init__(self, scenes, sensors: bool = True) -> None:
        self.specs = list(scenes)
        if not self.specs:
            raise ValidationError("scene: an empty list (give scene caches, SceneLogs or 'synthetic:SEED')")
        self.sensors = sensors
        self._loaded = {0: load_scene(self.specs[0], sensors)}

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> tuple[SceneLog, Path | None]:
        if i not in self._loaded:
            self._loaded[i] = load_scene(self.specs[i], self.sensors)
        return self._loaded[i]

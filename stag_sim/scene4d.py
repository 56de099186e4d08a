"""Scene4D: the logged drive as a 4D point cloud, the geometric core of Stag-1. Space and time are decoupled: the
static world is one fused point cloud in the world frame and every tracked object is a point cloud in its own box
frame, placed at whatever pose the simulator asks for, so the scene can be re-rendered at any time and from any
camera pose. This is the public module: the types (:mod:`stag_sim.scene4d_types`), the build
(:mod:`stag_sim.scene4d_build`), the voxel fusion (:mod:`stag_sim.voxels`) and the build cache
(:func:`load_scene4d`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from stag_sim.errors import SceneError
from stag_sim.scene4d_build import EGO_PAIRS, box_proxy_points, build_scene4d, working_camera
from stag_sim.scene4d_types import SCENE4D_VERSION, SKY_BINS, ObjectCloud, Scene4D, Scene4DConfig
from stag_sim.scene_log import SceneLog
from stag_sim.voxels import VoxelAccumulator

__all__ = [
    "EGO_PAIRS", "SCENE4D_VERSION", "SKY_BINS", "ObjectCloud", "Scene4D", "Scene4DConfig", "VoxelAccumulator",
    "box_proxy_points", "build_scene4d", "load_scene4d", "scene4d_cache_path", "working_camera",
]


# --- cache ------------------------------------------------------------------------------------------------------


def scene4d_cache_path(scene_dir: str | os.PathLike, config: Scene4DConfig | None = None) -> Path:
    """Where :func:`load_scene4d` keeps the build of ``scene_dir`` with ``config``."""
    from stag_sim.cache import META_FILE

    scene_dir = Path(scene_dir)
    meta = scene_dir / META_FILE
    if not meta.is_file():
        raise SceneError(f"{meta}: missing; {scene_dir} is not a scene cache")
    h = hashlib.sha256()
    h.update(meta.read_bytes())
    h.update(json.dumps({"v": SCENE4D_VERSION, "cfg": (config or Scene4DConfig()).validate().key()}, sort_keys=True).encode())
    return scene_dir / f"scene4d-{h.hexdigest()[:16]}.npz"


def load_scene4d(scene_dir: str | os.PathLike, config: Scene4DConfig | None = None, progress: bool = True,
                 rebuild: bool = False, log: SceneLog | None = None) -> Scene4D:
    """The :class:`Scene4D` of a scene cache, built once and cached beside it.

    The build is kept as ``<scene_dir>/scene4d-<key>.npz`` (written atomically), where the key hashes the build
    parameters, the scene's ``scene.json`` and :data:`SCENE4D_VERSION`; changed inputs or parameters give a new key
    and a rebuild.

    Args:
        scene_dir: scene cache directory.
        config: build parameters (default :class:`Scene4DConfig`).
        progress: show a progress bar while building.
        rebuild: ignore an existing cached build.
        log: the already-loaded scene log of ``scene_dir`` (saves loading it again).
    """
    from stag_sim.cache import load_scene_cache

    path = scene4d_cache_path(scene_dir, config)
    if path.is_file() and not rebuild:
        return Scene4D.load(path)
    scene = build_scene4d(log if log is not None else load_scene_cache(scene_dir), config, progress=progress)
    try:
        scene.save(path)
    except OSError as e:
        raise SceneError(f"{path}: could not write the Scene4D cache ({e})") from None
    return scene

import os
import stat

from stag_sim.cache import write_scene_cache
from stag_sim.viz import write_png
import numpy as np


def test_atomic_outputs_get_normal_permissions(tmp_path, tiny_log):
    old = os.umask(0o022)
    try:
        scene = write_scene_cache(tiny_log, tmp_path / "scene")
        png = write_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(scene.stat().st_mode) == 0o755
    assert stat.S_IMODE(png.stat().st_mode) == 0o644

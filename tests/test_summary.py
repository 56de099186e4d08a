"""``scene_summary`` (what ``stag-sim info`` prints), including the one-frame logs a single nuScenes keyframe gives."""

import dataclasses

from click.testing import CliRunner

from stag_sim.cache import write_scene_cache
from stag_sim.cli import main
from stag_sim.summary import scene_summary
from stag_sim.testing import tiny_scene_log


def test_one_frame_log_has_no_rate_and_no_nan():
    log = tiny_scene_log(num_frames=1).validate()
    text = scene_summary(log)
    assert "frames     1 frame (single keyframe: no duration, no frame rate)" in text
    assert "nan" not in text.lower() and "Hz" not in text
    assert "lidar      1 sweep," in text


def test_multi_frame_log_keeps_duration_rate_and_path():
    text = scene_summary(tiny_scene_log(num_frames=3))
    # 3 frames 0.1 s apart, ego at 5 m/s
    assert "frames     3 over 0.20 s  (~10.0 Hz); ego drives 1.0 m" in text
    assert "lidar      3 sweeps, 50 points/sweep" in text and "merging" not in text


def test_merged_lidar_sweeps_are_reported():
    log = tiny_scene_log(num_frames=3)
    log = dataclasses.replace(log, metadata={**log.metadata, "lidar_sweeps": 5})
    assert "lidar      3 sweeps (merging 5 sensor sweeps, motion-compensated)" in scene_summary(log)


def test_info_on_a_one_frame_scene_cache(tmp_path):
    scene = write_scene_cache(tiny_scene_log(num_frames=1), tmp_path / "scene")
    res = CliRunner().invoke(main, ["info", str(scene), "--sheet", str(tmp_path / "sheet.png")])
    assert res.exit_code == 0, res.output
    assert "1 frame (single keyframe" in res.output and "nan" not in res.output.lower()
    assert (tmp_path / "sheet.png").is_file()

"""The layout-only synthetic town (``generate_scene(sensors=False)``): the full town's poses, tracks and map without
rendering a pixel, its scene cache, its own cache directory, and the clear refusal of whatever needs images."""

import dataclasses
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from stag_sim.cache import load_scene_cache, write_scene_cache
from stag_sim.errors import SceneError, ValidationError
from stag_sim.paths import LAYOUT_SUFFIX, _publish_once, default_scene_dir, ensure_default_scene
from stag_sim.synth import build_town, generate
from stag_sim.synth.ground import GROUND_MARGIN, GROUND_RES

W, H = 48, 32  # [px] tiny images: only the full log's render costs anything
DURATION = 1.0  # [s]
SEED = 7


@pytest.fixture(scope="module")
def full():
    return generate.generate_scene(seed=SEED, duration_s=DURATION, width=W, height=H, workers=1)


@pytest.fixture(scope="module")
def layout():
    return generate.generate_scene(seed=SEED, duration_s=DURATION, width=W, height=H, sensors=False)


def test_layout_only_log_is_the_full_town_without_sensor_data(full, layout):
    layout.validate()
    assert layout.layout_only and not full.layout_only
    assert layout.images is None and layout.depth is None and layout.lidar is None
    assert layout.diff(full) == ["metadata", "images", "depth", "lidar"]
    assert layout.metadata == {**full.metadata, "sensors": False} and "sensors" not in full.metadata
    for f in ("timestamps_us", "ego_poses", "camera_timestamps_us", "camera_ego_poses"):
        a, b = getattr(layout, f), getattr(full, f)
        assert a.dtype == b.dtype and np.array_equal(a, b), f
    o, p = layout.objects, full.objects
    assert (o.instance_ids, o.categories) == (p.instance_ids, p.categories) and len(o) > 0
    for f in ("sizes", "poses", "valid"):
        assert np.array_equal(getattr(o, f), getattr(p, f)), f
    assert layout.map.drivable_area.equals_exact(full.map.drivable_area, 0.0)
    assert layout.map.lane_ids == full.map.lane_ids and layout.map.successors == full.map.successors
    assert all(a.equals_exact(b, 0.0) for a, b in zip(layout.map.lanes, full.map.lanes))
    assert layout.rig.cameras == full.rig.cameras  # intrinsics at the requested size: observation shapes
    assert layout.rig[0].intrinsics.width == W and layout.rig[0].intrinsics.height == H


def test_layout_only_generation_renders_nothing(monkeypatch):
    def no_oracle(*args, **kwargs):
        raise AssertionError("a layout-only scene must not build the ray-casting oracle")

    monkeypatch.setattr(generate, "TownOracle", no_oracle)
    log = generate.generate_scene(seed=SEED + 1, duration_s=20.0, sensors=False)  # the default 20 s drive
    assert log.num_frames == 200 and log.layout_only
    assert "ground_mips" not in vars(build_town(SEED + 1))  # the ground textures are rasterised for renders only


def test_ground_textures_are_rasterised_once_on_first_use(full):
    town = build_town(SEED)  # rendered by the full log's oracle
    mips = town.ground_mips
    assert town.ground_mips is mips and not mips[0].flags.writeable
    assert mips[0].shape[:2] == (int(np.ceil(2 * (town.half_extent[1] + GROUND_MARGIN) / GROUND_RES)),
                                 int(np.ceil(2 * (town.half_extent[0] + GROUND_MARGIN) / GROUND_RES)))


def test_a_log_without_images_may_not_carry_depth(full, layout):
    with pytest.raises(ValidationError, match="depth"):
        dataclasses.replace(layout, depth=full.depth).validate()


def test_scene_cache_round_trips_a_layout_only_log(layout, tmp_path):
    out = write_scene_cache(layout, tmp_path / "scene")
    assert not any(p.name.startswith(("images", "depth", "lidar")) for p in out.iterdir())
    back = load_scene_cache(out)
    assert back.layout_only and back.diff(layout) == []
    assert load_scene_cache(out, mmap=False).diff(layout) == []


def test_ensure_default_scene_caches_the_layout_only_town_in_its_own_directory(monkeypatch, tmp_path, layout):
    monkeypatch.setenv("STAG_SIM_CACHE", str(tmp_path))
    path = ensure_default_scene(seed=SEED, duration_s=DURATION, width=W, height=H, progress=False, sensors=False)
    full_dir = default_scene_dir(SEED, DURATION, W, H)
    assert path == default_scene_dir(SEED, DURATION, W, H, sensors=False) != full_dir
    assert path.name == full_dir.name + LAYOUT_SUFFIX and path.parent == full_dir.parent
    assert not full_dir.exists() and [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    assert load_scene_cache(path).diff(layout) == []

    def no_generation(**kwargs):
        raise AssertionError("a cached scene is not generated again")

    monkeypatch.setattr("stag_sim.synth.generate_scene", no_generation)
    assert ensure_default_scene(seed=SEED, duration_s=DURATION, width=W, height=H, sensors=False) == path


def test_concurrent_generation_keeps_the_first_published_cache(monkeypatch, tmp_path, layout):
    import stag_sim.synth

    monkeypatch.setenv("STAG_SIM_CACHE", str(tmp_path))
    path = default_scene_dir(SEED, DURATION, W, H, sensors=False)
    path.mkdir(parents=True)  # an empty directory (a crashed mkdir) is replaced
    assert ensure_default_scene(SEED, DURATION, W, H, progress=False, sensors=False) == path
    assert load_scene_cache(path).diff(layout) == []

    real, inodes = stag_sim.synth.generate_scene, {}

    def racing(**kwargs):  # another process publishes the same town while this one generates it
        log = real(**kwargs)
        write_scene_cache(log, path)
        inodes.update({p.name: p.stat().st_ino for p in path.iterdir()})
        return log

    shutil.rmtree(path)
    monkeypatch.setattr(stag_sim.synth, "generate_scene", racing)
    assert ensure_default_scene(SEED, DURATION, W, H, progress=False, sensors=False) == path
    assert {p.name: p.stat().st_ino for p in path.iterdir()} == inodes  # the first cache stays, untouched
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # and ours left no staging directory behind
    junk = path.parent / "junk"  # a directory that is not a scene cache is left alone
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(SceneError, match="could not publish"):
        _publish_once(layout, junk)
    assert [p.name for p in junk.iterdir()] == ["notes.txt"]


def _one_line_refusal(excinfo, what: str, name: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.startswith(what) and repr(name) in msg and "layout-only" in msg


def test_what_needs_images_refuses_a_layout_only_log_in_one_line(layout, tmp_path):
    from stag_sim.ingest import export_nuscenes
    from stag_sim.refiner.renderer import make_reference_provider
    from stag_sim.render.fidelity import fidelity_views
    from stag_sim.scene4d import build_scene4d

    calls = {
        "build_scene4d": lambda: build_scene4d(layout),
        "fidelity_views": lambda: fidelity_views(layout, hold_out_frames=[1]),
        "the refined renderer": lambda: make_reference_provider(layout, [0]),
        "export_nuscenes": lambda: export_nuscenes(layout, tmp_path / "nusc"),
    }
    for what, call in calls.items():
        with pytest.raises(ValidationError) as e:
            call()
        _one_line_refusal(e, what, layout.name)


def test_summary_and_info_of_a_layout_only_scene(layout, tmp_path):
    from stag_sim.cli import main

    scene = write_scene_cache(layout, tmp_path / "scene")
    res = CliRunner().invoke(main, ["info", str(scene), "--sheet", str(tmp_path / "sheet.png")])
    assert res.exit_code == 0, res.output
    assert "images     none (layout-only" in res.output and "contact sheet: none" in res.output
    assert not (tmp_path / "sheet.png").exists()

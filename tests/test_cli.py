import subprocess
import sys

from click.testing import CliRunner

from stag_sim.cache import write_scene_cache
from stag_sim.cli import main


def test_info_prints_summary_and_writes_contact_sheet(tmp_path, tiny_log):
    import cv2

    scene = write_scene_cache(tiny_log, tmp_path / "scene")
    sheet = tmp_path / "sheet.png"
    res = CliRunner().invoke(main, ["info", str(scene), "--time", "0.1", "--sheet", str(sheet)])
    assert res.exit_code == 0, res.output
    assert "tiny-s0" in res.output and "frames     3 over 0.20 s" in res.output and "CAM_BACK_LEFT" in res.output
    assert "2 tracked" in res.output and "lanes" in res.output
    img = cv2.imread(str(sheet))
    # 2 rows x 3 cameras of 18x32 plus a 24 px caption bar
    assert img.shape == (2 * 18 + 24, 3 * 32, 3)


def test_info_on_a_missing_scene_is_one_line(tmp_path):
    res = CliRunner().invoke(main, ["info", str(tmp_path / "nope")])
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0 and "no such scene cache directory" in res.output


def test_info_on_a_corrupt_scene_names_the_file(tmp_path, tiny_log):
    scene = write_scene_cache(tiny_log, tmp_path / "scene")
    (scene / "depth.bin").write_bytes(b"")
    res = CliRunner().invoke(main, ["info", str(scene)])
    assert res.exit_code == 1 and "depth.bin: corrupt" in res.output


def test_synth_refuses_to_overwrite(tmp_path):
    (tmp_path / "s").mkdir()
    res = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "s")])
    assert res.exit_code == 1 and "already exists" in res.output


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "stag_sim.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("synth", "info", "ingest", "demo"):
        assert cmd in out


def test_import_stag_sim_stays_light():
    code = "import sys, stag_sim, stag_sim.cache, stag_sim.camera; print(sorted(m for m in ('torch', 'cv2', 'nuscenes', 'carla', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_synth_then_info_end_to_end(tmp_path):
    out = tmp_path / "town"
    res = CliRunner().invoke(main, ["synth", "--out", str(out), "--duration", "1", "--width", "64", "--height", "36",
                                    "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "10 frames x 6 cameras" in res.output
    res = CliRunner().invoke(main, ["info", str(out), "--sheet", str(tmp_path / "sheet.png")])
    assert res.exit_code == 0, res.output
    assert "synth-town-s0" in res.output and "source: synthetic" in res.output and "lanes" in res.output
    assert (tmp_path / "sheet.png").stat().st_size > 1000

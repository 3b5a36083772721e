"""Every bad input gives one line naming the file and the problem, exit code 2, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.cli import main


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["orbit-info", *argv, "--sheet", str(Path(argv[0]).parent / "sheet.png")])
    err = capsys.readouterr().err
    return code, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("orbitmesh: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _expect(capsys, path: Path, *fragments: str, named: Path | None = None) -> None:
    code, err = _run(capsys, str(path))
    assert code == 2, err
    line = _error_line(err)
    assert str(named or path) in line, line
    for frag in fragments:
        assert frag in line, line


def test_missing_folder(capsys, tmp_path: Path):
    _expect(capsys, tmp_path / "nope", "no such file or folder")


def test_folder_without_images(capsys, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    _expect(capsys, tmp_path / "empty", "no images")


def test_corrupt_image(capsys, sphere_dir: Path):
    (sphere_dir / "003.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    _expect(capsys, sphere_dir, "cannot read image", named=sphere_dir / "003.png")


def test_images_of_different_sizes(capsys, sphere_dir: Path):
    Image.open(sphere_dir / "005.png").resize((40, 40)).save(sphere_dir / "005.png")
    _expect(capsys, sphere_dir, "40x40 differs", named=sphere_dir / "005.png")


def test_non_square_orbit_frames(capsys, sphere_dir: Path):
    for p in sphere_dir.glob("*.png"):
        Image.open(p).crop((0, 0, 48, 40)).save(p)
    _expect(capsys, sphere_dir, "must be square", named=sphere_dir / "000.png")


def test_frame_count_does_not_match_orbit_json(capsys, sphere_dir: Path):
    (sphere_dir / "020.png").unlink()
    _expect(capsys, sphere_dir, "lists 21", "20 frames", named=sphere_dir / "orbit.json")


def test_other_frame_count_without_orbit_json(capsys, sphere_dir: Path):
    (sphere_dir / "orbit.json").unlink()
    (sphere_dir / "020.png").unlink()
    _expect(capsys, sphere_dir, "missing", named=sphere_dir / "orbit.json")


def test_invalid_orbit_json(capsys, sphere_dir: Path):
    (sphere_dir / "orbit.json").write_text("{not json")
    _expect(capsys, sphere_dir, "not valid JSON", named=sphere_dir / "orbit.json")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_pose(capsys, toy_orbit, tmp_path: Path, bad: float):
    from recon.data.orbit import write_orbit

    folder = write_orbit(toy_orbit, tmp_path / "t", transforms=True)
    (folder / "orbit.json").unlink()
    data = json.loads((folder / "transforms.json").read_text())
    data["frames"][2]["transform_matrix"][0][3] = bad
    (folder / "transforms.json").write_text(json.dumps(data))
    _expect(capsys, folder, "frame 2", "NaN or inf", named=folder / "transforms.json")


def test_non_orthonormal_pose(capsys, toy_orbit, tmp_path: Path):
    from recon.data.orbit import write_orbit

    folder = write_orbit(toy_orbit, tmp_path / "t", transforms=True)
    (folder / "orbit.json").unlink()
    data = json.loads((folder / "transforms.json").read_text())
    m = np.asarray(data["frames"][4]["transform_matrix"])
    m[:3, :3] *= 1.3  # a scaled rotation is not a camera pose
    data["frames"][4]["transform_matrix"] = m.tolist()
    (folder / "transforms.json").write_text(json.dumps(data))
    _expect(capsys, folder, "frame 4", "not a rigid", named=folder / "transforms.json")


def test_empty_mask(capsys, sphere_dir: Path):
    Image.fromarray(np.full((48, 48, 3), 255, np.uint8)).save(sphere_dir / "007.png")
    _expect(capsys, sphere_dir, "no object found", named=sphere_dir / "007.png")


def test_object_touching_border_warns_but_loads(capsys, sphere_dir: Path):
    img = np.asarray(Image.open(sphere_dir / "002.png")).copy()
    img[:, :3] = (200, 30, 30)  # object reaching the left border
    Image.fromarray(img).save(sphere_dir / "002.png")
    code, err = _run(capsys, str(sphere_dir))
    assert code == 0
    assert "touches the image border" in err and "002.png" in err


def test_undecodable_video(capsys, sphere_dir: Path, tmp_path: Path):
    folder = tmp_path / "vid"
    folder.mkdir()
    (folder / "orbit.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    shutil.copy(sphere_dir / "orbit.json", folder / "orbit.json")
    _expect(capsys, folder, "cannot decode video", named=folder / "orbit.mp4")


def test_debug_flag_shows_traceback(capsys, tmp_path: Path):
    code = main(["orbit-info", str(tmp_path / "nope"), "--debug"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err

"""The orbitmesh command: subcommands exist and work; demo and orbit-info report what they made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recon.cli import COMMANDS, build_parser, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_orbit_info_reports_sv3d_orbit(capsys, sphere_dir: Path, tmp_path: Path):
    sheet = tmp_path / "sheet.png"
    summary = tmp_path / "summary.json"
    assert main(["orbit-info", str(sphere_dir), "--sheet", str(sheet), "--json", str(summary)]) == 0
    out = capsys.readouterr().out
    assert "10.00" in out and "17.14" in out and "342.86" in out and "fov 33.8" in out
    data = json.loads(summary.read_text())
    assert data["frames"] == 21 and data["fov_deg"] == 33.8 and data["radius"] == 2.0
    assert all(e == 10.0 for e in data["elevations_deg"])
    assert data["azimuths_deg"][0] == pytest.approx(360 / 21, abs=1e-3) and data["azimuths_deg"][-1] == 0
    from PIL import Image

    assert Image.open(sheet).size[0] > 0


def test_contact_sheet_shows_masks(sphere_orbit, tmp_path: Path):
    import numpy as np
    from PIL import Image

    from recon.data.report import contact_sheet

    sheet = np.asarray(Image.open(contact_sheet(sphere_orbit, tmp_path / "s.png", tile=96, columns=7)))
    # Background is tinted blue; the mask outline is yellow.
    yellow = (sheet[..., 0] > 230) & (sheet[..., 1] > 190) & (sheet[..., 2] < 40)
    assert yellow.sum() > 21 * 100
    tile = sheet[14 + 2 : 14 + 10, 2:10]  # top-left corner of frame 0: background
    assert (tile[..., 2] > tile[..., 0] + 30).all()


def test_demo_runs_every_stage_and_lists_outputs(capsys, tmp_path: Path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--preset", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "Demo finished" in printed
    for name in ("config.yaml", "metrics.json", "orbit_summary.json", "transforms.json", "orbit.json",
                 "previews/orbit_contact_sheet.png", "asset.glb", "previews/turntable.mp4"):
        assert (out / name).is_file(), name
        assert name.split("/")[-1] in printed


def test_warmup_runs_every_stage_on_a_tiny_orbit(tmp_path: Path):
    """``orbitmesh warmup`` (run by ``make setup``) goes through every stage, so every kernel a fit calls
    is compiled and cached before the first fit."""
    from recon.warmup import compile_kernels

    seconds = compile_kernels(tmp_path)
    for name in ("run/coarse.ply", "run/refined.ply", "run/asset.glb"):
        assert (tmp_path / name).is_file(), name
    assert seconds > 0
    assert build_parser().parse_args(["warmup"]).command == "warmup"


def test_convert_writes_transforms(capsys, sphere_dir: Path, tmp_path: Path):
    out = tmp_path / "conv"
    assert main(["convert", str(sphere_dir), "-o", str(out), "--alpha"]) == 0
    data = json.loads((out / "transforms.json").read_text())
    assert len(data["frames"]) == 21 and "orbit" in data


def test_synth_writes_orbit_and_ground_truth(capsys, tmp_path: Path):
    out = tmp_path / "torus"
    assert main(["synth", "torus", "-o", str(out), "--size", "24", "--supersample", "1", "--dynamic", "15"]) == 0
    assert (out / "ground_truth.ply").is_file() and len(list(out.glob("*.png"))) == 21
    orbit = json.loads((out / "orbit.json").read_text())
    assert max(orbit["elevations_deg"]) > 20


def test_config_prints_documented_yaml(capsys):
    assert main(["config", "--preset", "fast", "--set", "seed=5"]) == 0
    out = capsys.readouterr().out
    assert "seed: 5" in out and "# Seed for torch" in out


def test_seed_and_bad_override_errors(capsys):
    assert main(["config", "--set", "data.nope=1"]) == 2
    assert "unknown key 'nope'" in capsys.readouterr().err


def test_python_dash_m_recon_runs():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "recon", "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "orbitmesh" in proc.stdout

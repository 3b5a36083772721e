"""Refinement stage: runs, improves a wrong start, is deterministic, resumes, saves, hooks, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import trimesh

from recon.cli import main
from recon.config import load_config
from recon.refine.render import render_asset
from recon.refine.train import HookContext, fit_refined
from recon.types import Mesh, RefinedAsset


def _sphere_mesh(radius: float) -> Mesh:
    m = trimesh.creation.icosphere(3, radius=radius)
    return Mesh(torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int64),
                torch.full((len(m.vertices), 3), 0.5))


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config("tiny").refine


def _mean_radius(mesh: Mesh) -> float:
    return float(mesh.verts.norm(dim=-1).mean())


def test_refinement_moves_a_too_small_start_towards_the_true_sphere(sphere_orbit, tiny_cfg):
    start = _sphere_mesh(0.47)  # the orbit shows a sphere of radius 0.5
    asset = fit_refined(tiny_cfg, sphere_orbit, start, seed=0, progress=False)
    m = trimesh.Trimesh(asset.mesh.verts.numpy(), asset.mesh.faces.numpy())
    assert m.is_watertight and m.volume > 0
    assert abs(_mean_radius(asset.mesh) - 0.5) < 0.5 * abs(0.47 - 0.5)
    assert asset.metrics["faces"] == len(asset.mesh.faces) > 100
    assert 0 < asset.metrics["band_fraction"] < 0.6
    assert asset.mesh.colors.shape == asset.mesh.verts.shape


def test_refinement_is_deterministic_with_a_seed(sphere_orbit, tiny_cfg):
    from dataclasses import replace

    cfg = replace(tiny_cfg, steps=8)
    a = fit_refined(cfg, sphere_orbit, _sphere_mesh(0.47), seed=3, progress=False)
    b = fit_refined(cfg, sphere_orbit, _sphere_mesh(0.47), seed=3, progress=False)
    assert torch.equal(a.mesh.verts, b.mesh.verts) and torch.equal(a.sdf, b.sdf)


def test_extra_loss_hook_is_called_and_changes_the_result(sphere_orbit, tiny_cfg):
    from dataclasses import replace

    cfg = replace(tiny_cfg, steps=12)
    seen: list[int] = []

    def shrink(ctx: HookContext) -> torch.Tensor:
        seen.append(ctx.step)
        assert ctx.verts.requires_grad and ctx.faces.shape[1] == 3 and ctx.steps == 12
        return 5.0 * ctx.verts.norm(dim=-1).mean()

    plain = fit_refined(cfg, sphere_orbit, _sphere_mesh(0.5), seed=0, progress=False)
    hooked = fit_refined(cfg, sphere_orbit, _sphere_mesh(0.5), seed=0, progress=False, extra_losses=[shrink])
    assert seen == list(range(12))
    assert _mean_radius(hooked.mesh) < _mean_radius(plain.mesh) - 0.005


def test_interrupted_refinement_resumes_from_its_checkpoint(sphere_orbit, tiny_cfg, tmp_path: Path):
    ckpt = tmp_path / "refine.pt"

    def crash(ctx: HookContext) -> None:
        if ctx.step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_refined(tiny_cfg, sphere_orbit, _sphere_mesh(0.48), checkpoint=ckpt, progress=False, extra_losses=[crash])
    assert torch.load(ckpt, weights_only=False)["step"] == 10
    resumed = fit_refined(tiny_cfg, sphere_orbit, _sphere_mesh(0.48), checkpoint=ckpt, progress=False)
    assert resumed.metrics["steps"] == tiny_cfg.steps - 10


def test_refined_asset_round_trip(sphere_orbit, tiny_cfg, tmp_path: Path):
    from dataclasses import replace

    asset = fit_refined(replace(tiny_cfg, steps=5), sphere_orbit, _sphere_mesh(0.5), progress=False)
    asset.save(tmp_path / "asset.pt")
    again = RefinedAsset.load(tmp_path / "asset.pt")
    cams = sphere_orbit.cameras.subset([0, 5]).scaled(32, 32)
    a = render_asset(asset, cams, shaded=True)
    b = render_asset(again, cams, shaded=True)
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(again.mesh.faces, asset.mesh.faces)
    assert float(a["alpha"].mean()) > 0.1


def test_fit_until_refine_and_from_stage(sphere_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(sphere_dir), "-o", str(out), "--preset", "tiny", "--until", "refine"]) == 0
    printed = capsys.readouterr().out
    assert "refine:" in printed
    for name in ("coarse.ply", "refined.ply", "previews/refine.png"):
        assert (out / name).is_file(), name
    coarse_time = (out / "coarse.ply").stat().st_mtime_ns
    assert main(["fit", str(sphere_dir), "-o", str(out), "--preset", "tiny", "--from-stage", "refine",
                 "--set", "refine.steps=10"]) == 0
    assert (out / "coarse.ply").stat().st_mtime_ns == coarse_time  # the coarse stage did not run again
    empty = tmp_path / "empty"
    assert main(["fit", str(sphere_dir), "-o", str(empty), "--preset", "tiny", "--from-stage", "refine"]) == 2
    err = capsys.readouterr().err
    assert "coarse.ply" in err and "--from-stage" in err


def test_rerun_reuses_the_extracted_coarse_mesh_and_reports_stage_resources(sphere_dir: Path, tmp_path: Path,
                                                                            monkeypatch):
    import json

    import recon.extract

    out = tmp_path / "run"
    assert main(["fit", str(sphere_dir), "-o", str(out), "--preset", "tiny", "--until", "coarse"]) == 0
    first = (out / "coarse.ply").read_bytes()
    resources = json.loads((out / "metrics.json").read_text())["resources"]
    assert set(resources) == {"coarse"} and resources["coarse"]["seconds"] > 0

    def no_extraction(*args, **kwargs):
        raise AssertionError("the coarse mesh was extracted again")

    monkeypatch.setattr(recon.extract, "extract_mesh", no_extraction)
    assert main(["fit", str(sphere_dir), "-o", str(out), "--preset", "tiny", "--until", "coarse"]) == 0
    assert (out / "coarse.ply").read_bytes() == first

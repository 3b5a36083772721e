"""The GSO benchmark runner: finds objects, perturbs orbits as documented, scores every variant the way an
independent scorer does, caches per (object, config), reports, and runs in processes or Ray tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from recon.eval.gso import BenchObject, BenchSettings, discover_objects, run_all, write_reports
from recon.eval.realism import REALISM_LEVELS, Realism, perturb_images

TINY = ["data.max_resolution=48", "export.faces=1500", "export.texture_size=128", "export.eval_views=0",
        "export.turntable_frames=0"]


def _scene_mesh(name: str, path: Path, coloured: bool = True) -> Path:
    from recon.data.synthetic import make_scene

    path.parent.mkdir(parents=True, exist_ok=True)
    mesh = make_scene(name).mesh(detail=4)
    if not coloured:
        mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    mesh.export(path)
    return path


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[Path, BenchSettings, list[BenchObject], list[dict]]:
    root = tmp_path_factory.mktemp("bench")
    objects = [BenchObject("sphere", _scene_mesh("sphere", root / "src" / "sphere.ply")),
               BenchObject("torus", _scene_mesh("torus", root / "src" / "torus.ply", coloured=False))]
    settings = BenchSettings(preset="tiny", overrides=TINY, size=48, realism="mild",
                             variants=("visual-hull", "coarse", "full", "sds"), heldout_views=6, samples=20_000)
    results = run_all(objects, settings, root / "out")
    return root / "out", settings, objects, results


def test_discovers_gso_roots_files_and_globs_and_picks_with_a_seed(tmp_path: Path):
    root = tmp_path / "gso"
    for name in ("mug", "shoe", "toy_car"):
        model = root / name / "meshes" / "model.obj"
        model.parent.mkdir(parents=True)
        trimesh.creation.box().export(model)
    (tmp_path / "loose").mkdir()
    trimesh.creation.icosphere(1).export(tmp_path / "loose" / "ball.glb")
    found = discover_objects([str(root), str(tmp_path / "loose" / "*.glb")])
    assert [o.name for o in found] == ["ball", "mug", "shoe", "toy_car"]
    assert discover_objects([str(root / "shoe")])[0].mesh == root / "shoe" / "meshes" / "model.obj"
    pick = discover_objects([str(root)], count=2, seed=3)
    assert pick == discover_objects([str(root)], count=2, seed=3) and len(pick) == 2
    from recon.errors import InputError

    with pytest.raises(InputError, match="matches no object"):
        discover_objects([str(tmp_path / "nothing*.obj")])


def test_realism_levels_perturb_within_their_documented_strengths():
    rng = np.random.default_rng(0)
    rgb = np.full((3, 32, 32, 3), 0.5, np.float32)
    alpha = np.zeros((3, 32, 32), np.float32)
    alpha[:, 8:24, 8:24] = 1
    clean = perturb_images(rgb, alpha, Realism(), rng)
    np.testing.assert_array_equal(clean, rgb)  # 'none' changes nothing
    strong = perturb_images(rgb, alpha, REALISM_LEVELS["strong"], np.random.default_rng(0))
    inside = strong[:, 12:20, 12:20]
    # Per-view gains differ, within colour + exposure shift (and noise, blur, JPEG on top).
    means = inside.mean(axis=(1, 2))
    assert np.ptp(means[:, 0]) > 0.005 and np.abs(means - 0.5).max() < 0.5 * (0.10 + 0.05) + 0.03
    np.testing.assert_array_equal(strong, perturb_images(rgb, alpha, REALISM_LEVELS["strong"],
                                                         np.random.default_rng(0)))  # seeded


def test_runner_scores_like_an_independent_scorer(bench_run):
    out, _settings, objects, results = bench_run
    from recon.eval.metrics import EvalConfig, evaluate_meshes
    from recon.render.mesh import load_render_mesh

    for obj, res in zip(objects, results, strict=True):
        assert set(res["variants"]) == {"visual-hull", "coarse", "full", "sds"}
        assert "skipped" in res["variants"]["sds"]
        assert set(res["stages"]) == {"coarse", "refine", "export"}
        assert all(s["seconds"] > 0 and s["peak_mb"] >= 0 for s in res["stages"].values())
        glb = out / "objects" / obj.name / res["key"] / "run" / "asset.glb"
        gt = load_render_mesh(obj.mesh).normalized()
        mine = evaluate_meshes(load_render_mesh(glb), gt, EvalConfig(views=0, samples=20_000, seed=7))
        full = res["variants"]["full"]
        assert full["chamfer_area"] == pytest.approx(mine["chamfer_area"], rel=0.1)  # other samples
        assert full["iou"] == pytest.approx(mine["iou"], abs=1e-9)
        assert full["chamfer_vertex"] == pytest.approx(mine["chamfer_vertex"], rel=1e-9)
        if res["textured"]:
            assert 10 < full["psnr"] < 60 and 0 < full["ssim"] <= 1
        else:
            assert full["psnr"] is None and full["ssim"] is None
        assert res["variants"]["coarse"]["seconds"] < full["seconds"]
    assert [r["textured"] for r in results] == [True, False]


def test_results_are_cached_and_reports_written(bench_run, monkeypatch):
    out, settings, objects, results = bench_run
    import recon.pipeline

    def no_fit(*args, **kwargs):
        raise AssertionError("a cached object was reconstructed again")

    monkeypatch.setattr(recon.pipeline, "run", no_fit)
    again = run_all(objects, settings, out)
    assert again == results
    files = write_reports(results, settings, out)
    md = files["markdown"].read_text()
    assert "| full | 2 |" in md and "0.024" in md and "0.689" in md and "skipped" in md
    rows = files["csv"].read_text().splitlines()
    assert len(rows) == 1 + 2 * 4
    assert json.loads(files["json"].read_text())["results"][0]["object"] == "sphere"
    assert files["plot"].stat().st_size > 1000
    from PIL import Image

    for res in results:
        sheet = np.asarray(Image.open(res["contact_sheet"]).convert("L"), dtype=np.float32) / 255
        assert sheet.shape == (4 * 48, 4 * 48)  # truth, visual hull, coarse, full x 4 held-out views
        # every row shows its object, the white untextured torus too (shaded, on grey)
        assert all(np.ptp(sheet[48 * r:48 * (r + 1)]) > 0.2 for r in range(4)), res["object"]


def test_bench_command_rejects_bad_variants(bench_run, capsys):
    out, _settings, objects, _ = bench_run
    from recon.cli import main

    args = ["bench", *(str(o.mesh) for o in objects), "-o", str(out), "--preset", "tiny", "--size", "48",
            "--realism", "mild", "--variants", "visual-hull,coarse,full,sds"]
    for o in TINY:
        args += ["--set", o]
    assert main([*args, "--variants", "coarse,bogus"]) == 2
    assert "--variants: bogus" in capsys.readouterr().err


@pytest.mark.slow
def test_local_processes_and_ray_give_the_cached_results(bench_run, tmp_path: Path):
    out, settings, objects, results = bench_run
    assert run_all(objects, settings, out, workers=2) == results
    pytest.importorskip("ray")
    import ray

    try:
        assert run_all(objects, settings, out, workers=2, ray_address="local") == results
        fresh = run_all(objects[:1], BenchSettings(**{**settings.__dict__, "variants": ("coarse",)}), tmp_path,
                        workers=2, ray_address="local")
        assert fresh[0]["variants"]["coarse"]["iou"] > 0.5
    finally:
        ray.shutdown()


def test_sds_variant_runs_with_a_model_and_reuses_the_coarse_stage(tmp_path: Path):
    pytest.importorskip("diffusers")
    from tests.test_guidance import build_tiny_sv3d

    model = build_tiny_sv3d(tmp_path / "sv3d")
    obj = BenchObject("sphere", _scene_mesh("sphere", tmp_path / "src" / "sphere.ply"))
    overrides = [*TINY, "guidance.sds_resolution=48", "guidance.sds_ramp_steps=4"]
    settings = BenchSettings(preset="tiny", overrides=overrides, size=48, variants=("coarse", "full", "sds"),
                             heldout_views=4, samples=5000, sds_model=str(model))
    res = run_all([obj], settings, tmp_path / "out")[0]
    sds, full = res["variants"]["sds"], res["variants"]["full"]
    assert "skipped" not in sds and 0 < sds["iou"] <= 1 and np.isfinite(sds["psnr"])
    assert sds["chamfer_area"] != full["chamfer_area"]  # SDS changed the refinement
    run_sds = tmp_path / "out" / "objects" / "sphere" / res["key"] / "run_sds"
    assert (run_sds / "asset.glb").is_file()
    assert sorted(p.name for p in (run_sds / "checkpoints").glob("coarse_field_*.pt")) == sorted(
        p.name for p in (run_sds.parent / "run" / "checkpoints").glob("coarse_field_*.pt"))


def test_every_offline_name_resolves_without_downloads(tmp_path: Path):
    from recon.eval.objects import ANALYTIC, object_mesh

    assert object_mesh("demo", tmp_path).is_file()
    for name in ANALYTIC:
        assert object_mesh(name, tmp_path).is_file()


def test_rgb_orbits_take_their_masks_from_the_background(tmp_path: Path):
    """``--rgb``: the input frames are RGB on white (raw SV3D frames), so masks come from the background
    colour; the results get their own key and orbit folder, and the RGBA runs keep theirs."""
    from PIL import Image

    obj = BenchObject("sphere", _scene_mesh("sphere", tmp_path / "src" / "sphere.ply"))
    rgba = BenchSettings(preset="tiny", overrides=TINY, size=48, realism="mild", variants=("visual-hull",),
                         heldout_views=4, samples=5_000)
    rgb = BenchSettings(**{**rgba.__dict__, "rgb": True})
    assert rgb.key() != rgba.key()
    (result,) = run_all([obj], rgb, tmp_path / "out")
    orbit_dir = tmp_path / "out" / "objects" / "sphere" / "orbit_48_mild_0_rgb"
    frames = sorted(orbit_dir.glob("*.png"))
    assert len(frames) == 21 and Image.open(frames[0]).mode == "RGB"
    assert result["variants"]["visual-hull"]["iou"] > 0.5

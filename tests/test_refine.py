"""Refinement stage: runs, improves a wrong start, is deterministic, resumes, saves, hooks, CLI."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from recon.cli import main
from recon.config import load_config
from recon.errors import ConfigError
from recon.refine.render import render_asset
from recon.refine.train import HookContext, fit_refined
from recon.types import Mesh, RefinedAsset


def _grey_mesh(m: trimesh.Trimesh) -> Mesh:
    return Mesh(torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int64),
                torch.full((len(m.vertices), 3), 0.5))


def _sphere_mesh(radius: float) -> Mesh:
    return _grey_mesh(trimesh.creation.icosphere(3, radius=radius))


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


def test_edge_topology_is_reused_only_while_the_faces_stay_the_same(sphere_orbit, tiny_cfg):
    from dataclasses import replace

    # Frozen geometry: the faces never change, so every step after the first reuses the topology.
    frozen = replace(tiny_cfg, steps=6, lr_sdf=0.0, lr_deform=0.0, offset_grid_steps=0)
    asset = fit_refined(frozen, sphere_orbit, _sphere_mesh(0.47), seed=0, progress=False)
    assert asset.metrics["topology_reused_steps"] == 5
    # A surface moving through the lattice changes its faces: the topology is recomputed.
    moving = replace(tiny_cfg, steps=6, warmup_steps=0, lr_sdf=0.5)
    asset = fit_refined(moving, sphere_orbit, _sphere_mesh(0.47), seed=0, progress=False)
    assert asset.metrics["topology_reused_steps"] < 5


def test_fitted_lobes_capped_below_their_start_are_refused(tiny_cfg, sphere_orbit):
    cfg = dataclasses.replace(tiny_cfg, sg_learn_lobes=True, sg_sharpness=12.0, sg_max_sharpness=8.0)
    with pytest.raises(ConfigError, match="sg_max_sharpness"):
        fit_refined(cfg, sphere_orbit, _sphere_mesh(0.47), seed=0, progress=False)


def test_fitted_lobes_move_and_survive_save_and_load(tiny_cfg, sphere_orbit, tmp_path: Path):
    cfg = dataclasses.replace(tiny_cfg, steps=8, sg_learn_lobes=True)
    asset = fit_refined(cfg, sphere_orbit, _sphere_mesh(0.47), seed=0, progress=False)
    assert float(asset.light.axis_offsets.detach().abs().max()) > 0  # the lobes were optimised
    asset.save(tmp_path / "asset.pt")
    again = RefinedAsset.load(tmp_path / "asset.pt")
    normals = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(again.light.irradiance(normals), asset.light.irradiance(normals))


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


def test_illumination_target_is_the_pixels_own_luminance_unless_blurred(sphere_orbit):
    """The irradiance is a function of the normal only, so the pixel's own linear luminance is its target.

    A blur mixes in the luminance of pixels with other normals (across a crease, the terminator), which
    flattened the light fitted to the lit duck; ``illumination_blur`` sets it, 0 leaves the luminance as is.
    """
    from recon.refine.train import _level
    from recon.shading.sg import srgb_to_linear

    lum = (srgb_to_linear(sphere_orbit.images) * torch.tensor([0.2126, 0.7152, 0.0722])).sum(-1)
    inside = sphere_orbit.masks > 0.999
    sharp = _level(sphere_orbit, sphere_orbit.width, 0.0)
    torch.testing.assert_close(sharp.luminance[inside], lum[inside])
    blurred = _level(sphere_orbit, sphere_orbit.width, 0.04)
    assert float((blurred.luminance - lum)[inside].abs().max()) > 0.02  # the checker's squares are smeared


def _light_error_after(loss_of_irradiance, normals: torch.Tensor, truth: torch.Tensor) -> float:
    """Log-irradiance rms error against ``truth`` [P] of a 24-lobe light whose irradiance at ``normals``
    [P, 3] was fitted by ``loss_of_irradiance`` alone (600 Adam steps)."""
    from recon.shading.sg import SGLight

    torch.manual_seed(0)
    light = SGLight(count=24, sharpness=12.0)
    opt = torch.optim.Adam(light.parameters(), lr=0.1)
    for _ in range(600):
        loss = loss_of_irradiance(light.irradiance(normals))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        d = torch.log(light.irradiance(normals)) - torch.log(truth)
    return float((d - d.mean()).pow(2).mean().sqrt())


def _light_error_after_fitting(normals: torch.Tensor, luminance: torch.Tensor, truth: torch.Tensor, penalty: str,
                               groups: torch.Tensor | None = None) -> float:
    """``_light_error_after`` fitting to ``luminance`` [P] by ``illumination_loss``."""
    from recon.refine.train import illumination_loss

    return _light_error_after(lambda irr: illumination_loss(irr, luminance, penalty, groups), normals, truth)


def test_l1_illumination_loss_keeps_texture_out_of_the_light():
    """The irradiance depends on the normal only, and an object shows each normal in several places: a dark
    patch of albedo in one of them (a beak, facing forward like part of the body) is an outlier among the
    pixels of that normal. Under l1 the light fitted to the luminance stays at the true one, under l2 it
    darkens towards the patch."""
    from recon.shading.sg import fibonacci_sphere
    from recon.shading.soft_light import SoftLight

    # Each normal seen in three places; the patch covers the normals within ~37 degrees of one direction
    # in the first place only.
    normals = fibonacci_sphere(2000).repeat(3, 1)
    truth = SoftLight().factor(normals)
    facing = normals @ torch.nn.functional.normalize(torch.tensor([0.0, -0.2, 1.0]), dim=0) > 0.8
    patch = facing & (torch.arange(len(normals)) < 2000)
    luminance = truth * torch.where(patch, 0.15, 0.8)

    l1 = _light_error_after_fitting(normals, luminance, truth, "l1")
    l2 = _light_error_after_fitting(normals, luminance, truth, "l2")
    # 24 fixed lobes at sharpness 12 represent this light to 0.047 at best (l1: 0.050, l2: 0.088).
    assert l1 < 0.7 * l2, (l1, l2)
    assert l1 < 0.06, l1


def _light_error_after_pairwise_fitting(normals: torch.Tensor, luminance: torch.Tensor, truth: torch.Tensor,
                                        pairs: torch.Tensor) -> float:
    """``_light_error_after`` fitting to ``luminance`` [P] by ``pairwise_illumination_loss`` over ``pairs``
    [Q, 2] (indices into ``normals``)."""
    from recon.refine.train import pairwise_illumination_loss

    a, b = pairs.unbind(-1)
    return _light_error_after(lambda irr: pairwise_illumination_loss(irr[a], irr[b], luminance[a], luminance[b]),
                              normals, truth)


def test_pairwise_illumination_loss_keeps_a_texture_of_one_hue_out_of_the_light():
    """Light grey above, dark grey below (one hue: chromaticity groups cannot tell them apart; the bunny's
    texture is like this). The grouped l2 loss bends the light to follow the two greys; pairs of nearby
    normals see the step only where they straddle it, where the Cauchy penalty caps its pull, so the light
    stays at the truth. Under a real light on a uniform albedo, pairs recover it as the grouped loss does."""
    from recon.shading.sg import fibonacci_sphere
    from recon.shading.soft_light import SoftLight

    normals = fibonacci_sphere(3000)
    near = (normals @ normals.t()) > math.cos(math.radians(20))
    pairs = near.triu(diagonal=1).nonzero()
    pairs = pairs[torch.randperm(pairs.shape[0], generator=torch.Generator().manual_seed(0))[:40000]]
    uniform = torch.ones(len(normals))
    two_greys = torch.where(normals[:, 1] > 0, 0.45, 0.12)
    grouped = _light_error_after_fitting(normals, two_greys, uniform, "l2")
    pairwise = _light_error_after_pairwise_fitting(normals, two_greys, uniform, pairs)
    assert pairwise < 0.3 * grouped and pairwise < 0.1, (pairwise, grouped)  # measured 0.035 and 0.65
    lit = SoftLight().factor(normals)
    assert _light_error_after_pairwise_fitting(normals, 0.5 * lit, lit, pairs) < 0.06  # 0.048; grouped: 0.050


def test_initial_smoothing_fills_a_dent_of_the_coarse_mesh():
    import dataclasses

    import trimesh

    from recon.config import load_config
    from recon.refine.train import initial_sdf
    from recon.types import Mesh

    # A sphere of radius 0.4 with a pit 1.6 cells deep and about 3 cells across around +x (grid 48 over
    # [-0.6, 0.6]: cell 0.025), like the coarse mesh's dents from depth noise.
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.4)
    v = torch.tensor(sphere.vertices, dtype=torch.float32)
    dent = (v[:, 0] > 0.398).float()[:, None] * torch.tensor([[0.04, 0.0, 0.0]])
    coarse = Mesh(v - dent, torch.tensor(sphere.faces, dtype=torch.int64), torch.full_like(v, 0.5))
    cfg = dataclasses.replace(load_config("tiny").refine, grid=48, bound=0.6)

    def surface_on_x_axis(sdf, sign):
        """|x| where the SDF's row through the centre (y = z = 0) crosses zero on the +x or -x side."""
        n = cfg.grid + 1
        row = sdf.reshape(n, n, n)[:, n // 2, n // 2]
        x = torch.linspace(-cfg.bound, cfg.bound, n)
        idx = torch.arange(n // 2, n - 1) if sign > 0 else torch.arange(n // 2, 0, -1)
        for i in idx.tolist():
            j = i + sign
            if row[i] > 0 >= row[j]:
                return float(abs(x[i] + (x[j] - x[i]) * row[i] / (row[i] - row[j])))
        raise AssertionError("no crossing")

    raw = initial_sdf(dataclasses.replace(cfg, init_smoothing=0.0), coarse)
    smooth = initial_sdf(dataclasses.replace(cfg, init_smoothing=1.0), coarse)
    dent_raw, dent_smooth = 0.4 - surface_on_x_axis(raw, 1), 0.4 - surface_on_x_axis(smooth, 1)
    assert dent_raw > 0.03 and dent_smooth < 0.75 * dent_raw, (dent_raw, dent_smooth)  # measured 0.040 -> 0.026
    # Where the mesh is smooth the blur leaves the surface within a fifth of a cell.
    assert abs(surface_on_x_axis(smooth, -1) - 0.4) < 0.005


def test_initial_smoothing_keeps_thin_parts():
    """A wing-like plate 1.2 cells thick on a ball must survive the blur (it erased the benchmark airplane's
    wings: Chamfer 0.0075 with the blur, 0.0047 when thin parts are kept)."""
    import dataclasses

    from scipy import ndimage

    from recon.config import load_config
    from recon.refine.train import initial_sdf, thin_inside
    from recon.types import Mesh

    cfg = dataclasses.replace(load_config("tiny").refine, grid=48, bound=0.6, init_smoothing=1.0)
    cell = 2 * cfg.bound / cfg.grid
    ball = trimesh.creation.icosphere(subdivisions=4, radius=0.2)
    plate = trimesh.creation.box(extents=(0.9, 1.2 * cell, 0.3))
    both = trimesh.boolean.union([ball, plate])
    coarse = Mesh(torch.tensor(both.vertices, dtype=torch.float32), torch.tensor(both.faces, dtype=torch.int64),
                  torch.full((len(both.vertices), 3), 0.5))
    sdf = initial_sdf(cfg, coarse)
    n = cfg.grid + 1
    grid = sdf.reshape(n, n, n)
    x = torch.linspace(-cfg.bound, cfg.bound, n)
    tip = int(torch.argmin((x - 0.38).abs()))  # on the plate, well away from the ball
    assert grid[tip, n // 2, n // 2] > 0, "the plate was blurred away"
    raw = initial_sdf(dataclasses.replace(cfg, init_smoothing=0.0), coarse).reshape(n, n, n).numpy()
    thin = thin_inside(raw, 2.0, 3)
    assert thin[tip, n // 2, n // 2] and not thin[n // 2, n // 2, n // 2]  # the plate is thin, the ball is not
    blurred = ndimage.gaussian_filter(raw, 1.0, mode="nearest")
    assert blurred[tip, n // 2, n // 2] <= 0  # what a plain blur does to it


def test_the_surface_cannot_sink_below_the_floor():
    """Below the coarse mesh's lowest point (minus the margin) no surface forms: a ball whose SDF reaches
    below the floor is cut flat there, and the cut mesh stays closed (the band follows the capped SDF)."""
    from dataclasses import replace

    from recon.geometry.tets import lattice_vertices
    from recon.refine.train import _Geometry

    cfg = replace(load_config("tiny").refine, grid=32)
    cell = 2 * cfg.bound / cfg.grid
    lattice = lattice_vertices(cfg.grid, cfg.bound)
    sdf = (0.4 - lattice.norm(dim=-1)) / cell
    floor = -0.2
    geometry = _Geometry(sdf, cfg, floor)
    geometry.rebuild_band(1)
    verts, faces, _, _ = geometry.extract()
    mesh = trimesh.Trimesh(verts.detach().numpy(), faces.numpy(), process=True)
    assert float(verts.detach()[:, 1].min()) == pytest.approx(floor, abs=1e-5)
    assert float(verts.detach()[:, 1].max()) == pytest.approx(0.4, abs=cell)
    assert mesh.is_watertight
    free = _Geometry(sdf, cfg)
    free.rebuild_band(1)
    assert float(free.extract()[0].detach()[:, 1].min()) == pytest.approx(-0.4, abs=cell)
    geometry.set_floor(-0.1)  # the floor moves (a centred object's top moved): the next band is cut there
    with torch.no_grad():
        geometry.deform[:, 1] = -10.0  # the deformation pushes every vertex down by its largest step
    geometry.rebuild_band(1)
    verts, faces, _, _ = geometry.extract()
    assert float(verts.detach()[:, 1].min()) == pytest.approx(-0.1, abs=1e-5)
    assert trimesh.Trimesh(verts.detach().numpy(), faces.numpy(), process=True).is_watertight


def test_the_surface_closes_inside_the_lattice():
    """An inside that reaches the lattice's border (an object wider than the views' frame, whose hull runs
    out of the grid) still bounds a closed surface: it crosses the border cells halfway. Without the cap the
    surface is open there, and an open surface is rasterized with its back faces."""
    from dataclasses import replace

    from recon.geometry.tets import border_cap, lattice_vertices
    from recon.refine.train import _Geometry

    cfg = replace(load_config("tiny").refine, grid=24)
    cell = 2 * cfg.bound / cfg.grid
    lattice = lattice_vertices(cfg.grid, cfg.bound)
    sdf = (0.77 - lattice.norm(dim=-1)) / cell  # a ball wider than the grid: cut by all six faces
    geometry = _Geometry(sdf, cfg)
    geometry.rebuild_band(1)
    verts, faces, _, _ = geometry.extract()
    mesh = trimesh.Trimesh(verts.detach().numpy(), faces.numpy(), process=True)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    extent = verts.detach().abs().max(dim=0).values
    torch.testing.assert_close(extent, torch.full((3,), cfg.bound - cell / 2), rtol=0, atol=1e-5)
    cap = border_cap(cfg.grid).reshape((cfg.grid + 1,) * 3)
    assert float(cap[0, 5, 7]) == -0.5 and float(cap[1, 5, 7]) == 0.5 and float(cap[12, 12, 12]) == 11.5
    uncapped = _Geometry(sdf, cfg)
    with torch.no_grad():
        uncapped.sdf_cap.fill_(float("inf"))
    uncapped.rebuild_band(1)
    v_open, f_open, _, _ = uncapped.extract()
    assert not trimesh.Trimesh(v_open.detach().numpy(), f_open.numpy(), process=True).is_watertight


def test_a_centred_objects_floor_is_opposite_its_top():
    """Not centred: the coarse mesh's lowest point minus the margin. Centred: no lower than minus the top
    (the union's hidden bottom sank the full margin); while the top has not settled, never above what the
    coarse stage observed; once it has (``floor_follows_top``), exactly minus the top."""
    from dataclasses import replace

    from recon.refine.train import refine_floor

    cfg = replace(load_config("default").refine, floor_margin=1.0)
    assert cfg.floor_follows_top
    settled = cfg.offset_grid_steps  # the first step after the offset-grid phase
    assert refine_floor(cfg, -0.45, 0.5, False) == pytest.approx(-0.45 - cfg.cell)
    assert refine_floor(cfg, -0.45, 0.5, False, step=settled) == pytest.approx(-0.45 - cfg.cell)
    assert refine_floor(cfg, -0.45, 0.5, True) == pytest.approx(-0.5)  # filled down to the centred box
    assert refine_floor(cfg, -0.45, 0.5, True, step=settled) == pytest.approx(-0.5)
    assert refine_floor(cfg, -0.5, 0.45, True) == pytest.approx(-0.5)  # the coarse bottom, until the top settles
    assert refine_floor(cfg, -0.5, 0.45, True, step=settled - 1) == pytest.approx(-0.5)
    assert refine_floor(cfg, -0.5, 0.45, True, step=settled) == pytest.approx(-0.45)  # then the centred box
    off = replace(cfg, floor_follows_top=False)
    assert refine_floor(off, -0.5, 0.45, True, step=settled) == pytest.approx(-0.5)
    assert refine_floor(replace(cfg, floor_margin=-1.0), -0.45, 0.5, True, step=settled) == -math.inf


def test_refinement_cuts_a_centred_objects_low_coarse_bottom_at_minus_its_top(sphere_orbit, tiny_cfg):
    """``fit_refined`` passes its step to ``refine_floor``: a coarse sphere whose bottom bled 2 cells low
    (its top at 0.5) comes out cut at minus its top once the offset-grid phase is over, and keeps its low
    bottom while that phase lasts or without ``floor_follows_top``. The geometry is frozen (learning rates 0)
    so that only the floor can move the bottom."""
    from dataclasses import replace

    verts = trimesh.creation.icosphere(3, radius=0.5).vertices.copy()
    verts[:, 1] = np.where(verts[:, 1] < 0, 1.15 * verts[:, 1], verts[:, 1])  # bottom at -0.575
    start = _grey_mesh(trimesh.Trimesh(verts, trimesh.creation.icosphere(3).faces))
    frozen = replace(tiny_cfg, steps=6, lr_sdf=0.0, lr_deform=0.0, lr_offset_grid=0.0, offset_grid_steps=2,
                     denoise_iterations=0)
    cell = frozen.cell

    def bottom_and_top(cfg, centred: bool = True) -> tuple[float, float]:
        y = fit_refined(cfg, sphere_orbit, start, seed=0, progress=False, centred_object=centred).mesh.verts[:, 1]
        return float(y.min()), float(y.max())

    low, top = bottom_and_top(frozen)
    assert top == pytest.approx(0.5, abs=0.5 * cell)
    assert low == pytest.approx(-top, abs=1e-4)
    for unsettled in (replace(frozen, offset_grid_steps=10), replace(frozen, floor_follows_top=False)):
        low, top = bottom_and_top(unsettled)
        assert low < -top - cell  # the coarse bottom (-0.575, less the initial smoothing) is kept
    assert bottom_and_top(frozen, centred=False)[0] < -0.5 - cell


def test_no_surface_forms_outside_the_unit_box():
    """A ball of radius 0.55 is cut flat by the unit box's sides and top (not its bottom: that is the floor's),
    and stays closed; a deformation pushing every vertex outward cannot carry it past the box either."""
    from dataclasses import replace

    from recon.geometry.tets import lattice_vertices
    from recon.refine.train import _Geometry

    cfg = replace(load_config("tiny").refine, grid=32)
    cell = 2 * cfg.bound / cfg.grid
    lattice = lattice_vertices(cfg.grid, cfg.bound)
    sdf = (0.55 - lattice.norm(dim=-1)) / cell
    geometry = _Geometry(sdf, cfg, box=0.5)
    geometry.rebuild_band(1)
    verts, faces, _, _ = geometry.extract()
    v = verts.detach()
    assert float(v[:, [0, 2]].abs().max()) == pytest.approx(0.5, abs=1e-5)
    assert float(v[:, 1].max()) == pytest.approx(0.5, abs=1e-5)
    assert float(v[:, 1].min()) == pytest.approx(-0.55, abs=cell)  # below: no box
    assert trimesh.Trimesh(v.numpy(), faces.numpy(), process=True).is_watertight
    with torch.no_grad():
        geometry.deform.copy_(10.0 * torch.sign(geometry.lattice))  # every vertex pushed out by its largest step
    verts, _, _, _ = geometry.extract()
    assert float(verts.detach()[:, [0, 2]].abs().max()) <= 0.5 and float(verts.detach()[:, 1].max()) <= 0.5
    free = _Geometry(sdf, cfg)
    free.rebuild_band(1)
    assert float(free.extract()[0].detach()[:, 0].max()) == pytest.approx(0.55, abs=cell)


def test_refinement_keeps_a_centred_object_inside_the_unit_box(sphere_orbit, tiny_cfg, caplog):
    """``refine_box``: a centred object's coarse mesh reaching 0.52 is cut at the unit box (0.5); one reaching
    beyond the tolerance (0.6: the orbit shows another scale), an object not centred, or ``unit_box`` off
    are not. Through ``fit_refined`` with frozen geometry, the sphere started at radius 0.52 ends inside."""
    from dataclasses import replace

    from recon.refine.train import refine_box

    cfg = load_config("default").refine
    assert cfg.unit_box
    assert refine_box(cfg, _sphere_mesh(0.52), True) == 0.5
    assert refine_box(cfg, _sphere_mesh(0.52), False) == math.inf
    assert refine_box(replace(cfg, unit_box=False), _sphere_mesh(0.52), True) == math.inf
    with caplog.at_level("WARNING"):
        assert refine_box(cfg, _sphere_mesh(0.6), True) == math.inf
    assert "beyond the unit box" in caplog.text
    frozen = replace(tiny_cfg, steps=4, lr_sdf=0.0, lr_deform=0.0, lr_offset_grid=0.0, denoise_iterations=0)

    def reach(cfg) -> float:
        v = fit_refined(cfg, sphere_orbit, _sphere_mesh(0.52), seed=0, progress=False, centred_object=True).mesh.verts
        return float(torch.maximum(v[:, [0, 2]].abs().max(dim=1).values, v[:, 1]).max())

    assert reach(frozen) == pytest.approx(0.5, abs=1e-5)
    assert reach(replace(frozen, unit_box=False)) > 0.51


def _box_lattice_sdf(lattice: torch.Tensor, half: float, bottom: float, top: float, cell: float) -> torch.Tensor:
    """[P] SDF (in cells, inside > 0) of the box |x|, |z| <= half, bottom <= y <= top (max-norm distance)."""
    x, y, z = lattice.unbind(-1)
    inside = torch.minimum(torch.minimum(half - x.abs(), half - z.abs()), torch.minimum(y - bottom, top - y))
    return inside / cell


def test_a_hidden_base_follows_the_floor_down():
    """A box whose flat base lies 1.5 cells above the floor, seen from an SV3D orbit (elevation 10 deg): the
    base is filled down to the floor, and only under the box. A gap wider than ``max_cells``, a mask that
    does not cover the fill, or cameras below the base (the fill would stand in front of the base they see)
    leave the base where it is."""
    from dataclasses import replace

    from recon.data.cameras import orbit_cameras
    from recon.geometry.tets import lattice_vertices
    from recon.refine.train import _Geometry, hidden_base_fill, hidden_from_views, surface_depths

    cfg = replace(load_config("tiny").refine, grid=32)
    cell = 2 * cfg.bound / cfg.grid
    lattice = lattice_vertices(cfg.grid, cfg.bound)
    floor = -0.3 - 0.25 * cell  # between lattice layers, as it usually is
    base, top = floor + 1.5 * cell, 0.31

    def box_depths(cameras, bottom: float = base) -> torch.Tensor:
        box = trimesh.creation.box(extents=(0.5, top - bottom, 0.5))
        box.apply_translation((0.0, (top + bottom) / 2, 0.0))
        return surface_depths(torch.from_numpy(box.vertices).float(), torch.from_numpy(box.faces), cameras)

    def true_masks(cameras) -> torch.Tensor:  # the views show the true box, whose base is on the floor
        return torch.isfinite(box_depths(cameras, floor)).float()

    cams = orbit_cameras(torch.full((21,), 10.0), torch.arange(21) * 360 / 21, 2.0, 33.8, 64)
    covered, depths = true_masks(cams), box_depths(cams)

    geometry = _Geometry(_box_lattice_sdf(lattice, 0.25, base, top, cell), cfg, floor)
    filled = geometry.fill_hidden_base(2.0, cams, covered, depths)
    first = math.ceil((floor + cfg.bound) / cell)
    n = cfg.grid + 1
    layers = lattice.reshape(n, n, n, 3)[:, first - 1:first + 3].reshape(-1, 3)
    hidden = hidden_from_views(layers, cams, covered, depths, 0.5 * cell).reshape(n, 4, n)
    x, y, z = lattice[hidden_base_fill(_box_lattice_sdf(lattice, 0.25, base, top, cell), first, hidden)].unbind(-1)
    assert filled > 0 and filled == x.numel()
    # Under the box only: between the floor and the base, and the first vertices below the floor.
    assert bool(((x.abs() <= 0.25) & (z.abs() <= 0.25) & (y >= floor - cell) & (y < base)).all())
    assert geometry.fill_hidden_base(2.0, cams, covered, depths) == 0  # done: a second pass changes nothing
    geometry.rebuild_band(1)
    verts, faces, _, _ = geometry.extract()
    v = verts.detach()
    bottom = v[(v[:, 0].abs() < 0.2) & (v[:, 2].abs() < 0.2) & (v[:, 1] < 0)]
    middle = v[(v[:, 0].abs() < 0.1) & (v[:, 2].abs() < 0.1) & (v[:, 1] < 0)]
    assert float(middle[:, 1].max()) == pytest.approx(floor, abs=1e-5)  # the base's middle lies on the floor
    # Near the rim, the vertex below the floor is outside the views' masks and keeps its SDF: within 0.15 cell.
    assert float(bottom[:, 1].max()) < floor + 0.15 * cell
    assert trimesh.Trimesh(verts.detach().numpy(), faces.numpy(), process=True).is_watertight

    def fill_count(max_cells: float = 2.0, cameras=cams, masks=covered, gap: float = 1.5) -> int:
        box = _box_lattice_sdf(lattice, 0.25, floor + gap * cell, top, cell)
        return _Geometry(box, cfg, floor).fill_hidden_base(max_cells, cameras, masks, box_depths(cameras))


    assert fill_count() == filled
    assert fill_count(gap=3.5) == 0  # more than max_cells above the floor: a bottom, not a hidden base gap
    assert fill_count(max_cells=0.5) == 0  # off
    no_floor = _Geometry(_box_lattice_sdf(lattice, 0.25, base, top, cell), cfg)
    assert no_floor.fill_hidden_base(2.0, cams, covered, depths) == 0  # no floor, nothing to follow
    one_view_empty = covered.clone()
    one_view_empty[5, 36:] = 0  # one view's mask does not cover the lower part of the object
    assert fill_count(masks=one_view_empty) < filled
    below = orbit_cameras(torch.full((21,), -20.0), torch.arange(21) * 360 / 21, 2.0, 33.8, 64)
    assert fill_count(cameras=below, masks=true_masks(below)) == 0


def test_refinement_keeps_the_hole_of_the_torus(tiny_cfg):
    """Thin parts and holes survive: started from the analytic torus shrunk by 5%, the refined mesh is one
    closed surface of genus 1 (Euler number 0) that has grown back towards the true tube radius."""
    from recon.data.synthetic import make_scene, render_orbit, sv3d_orbit_angles

    scene = make_scene("torus")
    elev, azim = sv3d_orbit_angles()
    orbit = render_orbit(scene, elev, azim, size=48, supersample=2)
    truth = scene.shapes[0].mesh(detail=2)
    start = truth.copy()
    start.apply_scale(0.95)
    asset = fit_refined(tiny_cfg, orbit, _grey_mesh(start), seed=0, progress=False)
    m = trimesh.Trimesh(asset.mesh.verts.numpy(), asset.mesh.faces.numpy())
    assert m.is_watertight and len(m.split(only_watertight=False)) == 1
    assert m.euler_number == 0  # genus 1: the hole is still open
    extent = float(asset.mesh.verts[:, 0].max() - asset.mesh.verts[:, 0].min())
    assert abs(extent - 1.0) < abs(0.95 - 1.0)  # outer diameter 2 (0.35 + 0.15) = 1.0


def _lattice_mesh(sdf: np.ndarray) -> trimesh.Trimesh:
    """Marching tetrahedra of a lattice SDF (in cells, inside > 0) on the unit-spaced Kuhn grid."""
    from recon.geometry.tets import lattice_vertices, narrow_band

    n = sdf.shape[0]
    lattice = lattice_vertices(n - 1, 1.0)
    values = torch.from_numpy(sdf.astype(np.float32))
    band = narrow_band(values, 1)
    verts, faces, _ = band.extract(lattice[band.verts], values.reshape(-1)[band.verts])
    return trimesh.Trimesh(verts.numpy(), faces.numpy(), process=True)


def _genus(m: trimesh.Trimesh) -> float:
    from recon.eval.metrics import mesh_genus

    return mesh_genus(m.vertices, m.faces)


def test_sign_cleanup_removes_speckles_bridges_and_tunnels():
    from recon.refine.train import clean_sign_speckles

    n, c, r = 41, 20, 11.5
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
    sphere = r - np.linalg.norm(ijk - c, axis=-1)
    noisy = sphere.copy()
    noisy[c, c, c - 13:c + 14] = -0.5  # a tunnel one vertex wide, straight through
    noisy[c - 3:c + 4, c + 13, c] = 0.5  # a bridge above the top ...
    noisy[[c - 3, c + 3], c + 12, c] = 0.5  # ... standing on two legs
    rng = np.random.default_rng(0)
    near = np.argwhere(np.abs(sphere) < 1.0)
    for i, j, k in near[rng.choice(len(near), 40, replace=False)]:
        noisy[i, j, k] = -0.3 * np.sign(sphere[i, j, k])  # spikes and pits
    before = _lattice_mesh(noisy)
    assert _genus(before) >= 2
    cleaned, count = clean_sign_speckles(noisy)
    assert count > 0
    # Every vertex back on the sphere's side, except a few the lattice itself leaves as pits and spikes
    # on the sphere (up to half a cell from its surface).
    moved = (cleaned > 0) != (sphere > 0)
    assert moved.sum() < 40 and np.abs(sphere[moved]).max() <= 0.5
    after = _lattice_mesh(cleaned)
    assert after.is_watertight and _genus(after) == 0 and len(after.split(only_watertight=False)) == 1
    untouched = (cleaned == noisy)
    assert untouched.sum() == n**3 - count


def test_sign_cleanup_keeps_clean_surfaces_and_thin_parts():
    from recon.refine.train import clean_sign_speckles

    n = 41
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).astype(float) - 20
    # A torus of tube radius 3.3 cells (genus 1) and, apart from it, a sheet one vertex thick. (A radius
    # of 3 puts exact zeros on lattice vertices, where crossings coincide and the mesh pinches.)
    ring = np.sqrt(ijk[..., 0] ** 2 + ijk[..., 1] ** 2) - 10
    torus = 3.3 - np.sqrt(ring**2 + ijk[..., 2] ** 2)
    sheet = np.full((n, n, n), -1.0)
    sheet[5:20, 5:20, 36] = 0.5
    sdf = np.maximum(torus, sheet)
    cleaned, count = clean_sign_speckles(sdf)
    changed = cleaned != sdf
    assert count == changed.sum() < 20  # the lattice's own spikes at the torus's inner rim, ...
    assert np.abs(sdf[changed]).max() < 0.25  # ... a fraction of a cell inside
    np.testing.assert_array_equal(cleaned[:, :, 30:], sdf[:, :, 30:])  # the sheet
    torus_only = cleaned.copy()
    torus_only[:, :, 30:] = -1.0
    assert _genus(_lattice_mesh(torus_only)) == 1


def test_sign_cleanup_fills_a_pinhole_in_a_thin_part_without_eroding_it():
    """A thin part is protected from erosion, not from filling: a pinhole through a sheet one vertex thick
    (a spurious handle where the sheet is the only surface, like the bunny's ear) closes, and the sheet's
    own vertices and edges stay."""
    from recon.refine.train import clean_sign_speckles

    n = 41
    sheet = np.full((n, n, n), -1.0)
    sheet[5:35, 5:35, 20] = 0.5
    holed = sheet.copy()
    holed[20, 20, 20] = -0.4
    assert _genus(_lattice_mesh(holed)) == 1
    cleaned, count = clean_sign_speckles(holed)
    assert count == 1 and cleaned[20, 20, 20] > 0
    np.testing.assert_array_equal(np.delete(cleaned.reshape(-1), 20 * n * n + 20 * n + 20),
                                  np.delete(holed.reshape(-1), 20 * n * n + 20 * n + 20))
    assert _genus(_lattice_mesh(cleaned)) == 0


def _blocks_joined_by_two_diagonal_strands(gap: int) -> np.ndarray:
    """Two blocks joined by two strands one vertex thick that climb along the (0, 1, 1) diagonal, ``gap``
    vertices apart in x: a loop (genus 1) that only the tetrahedra's diagonals connect, as on the
    benchmark cow's legs."""
    n = 31
    sdf = np.full((n, n, n), -0.5)
    sdf[4:26, 3:9, 4:26] = 0.5
    sdf[4:26, 17:23, 4:26] = 0.5
    for t in range(9):
        for x in (10, 10 + gap + 1):
            sdf[x, 8 + t, 10 + t] = 0.5
    return sdf


def test_tunnel_closing_fills_the_small_loops_the_speckle_rule_misses():
    from recon.refine.train import clean_sign_speckles, close_small_tunnels

    strands = _blocks_joined_by_two_diagonal_strands(1)
    assert _genus(_lattice_mesh(strands)) == 1
    closed, count = close_small_tunnels(strands, 2)
    changed = closed != strands
    assert count == changed.sum() > 0
    assert (closed[changed] > 0).all()  # only fills
    assert set(np.unique(np.argwhere(changed)[:, 0])) <= {10, 11, 12}  # between the strands
    after = _lattice_mesh(closed)
    assert after.is_watertight and _genus(after) == 0 and len(after.split(only_watertight=False)) == 1
    assert close_small_tunnels(closed, 2)[1] == 0

    n = 41
    sheet = np.full((n, n, n), -1.0)
    sheet[5:35, 5:35, 20] = 0.5
    pinhole = sheet.copy()
    pinhole[19:21, 19:21, 20] = -0.5  # 2 x 2: each has only 2 of 6 neighbours inside
    assert _genus(_lattice_mesh(pinhole)) == 1 and clean_sign_speckles(pinhole)[1] == 0
    closed, count = close_small_tunnels(pinhole, 2)
    assert count == 4 and (closed[19:21, 19:21, 20] > 0).all() and _genus(_lattice_mesh(closed)) == 0


def test_tunnel_closing_keeps_wide_holes_separate_parts_and_concavities():
    from recon.refine.train import close_small_tunnels

    # Strands 6 vertices apart: a hole wider than a closing of 2 cells reaches.
    strands = _blocks_joined_by_two_diagonal_strands(6)
    assert close_small_tunnels(strands, 2)[1] == 0
    n = 41
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).astype(float) - 20
    ring = np.sqrt(ijk[..., 0] ** 2 + ijk[..., 1] ** 2) - 10
    torus = 3.3 - np.sqrt(ring**2 + ijk[..., 2] ** 2)
    assert close_small_tunnels(torus, 2)[1] == 0
    sheet = np.full((n, n, n), -1.0)
    sheet[5:35, 5:35, 20] = 0.5
    sheet[17:24, 17:24, 20] = -0.5  # a 7 x 7 hole stays
    assert close_small_tunnels(sheet, 2)[1] == 0
    # Two blocks 2 vertices apart: filling the gap would join them, not close a tunnel.
    blocks = np.full((n, n, n), -0.5)
    blocks[5:18, 5:35, 5:35] = 0.5
    blocks[20:33, 5:35, 5:35] = 0.5
    assert close_small_tunnels(blocks, 2)[1] == 0
    # A U-shaped notch 2 vertices wide in a block: a concavity, not a tunnel.
    notched = np.full((n, n, n), -0.5)
    notched[5:35, 5:35, 5:35] = 0.5
    notched[19:21, 5:35, 25:35] = -0.5
    assert close_small_tunnels(notched, 2)[1] == 0
    # A pocket with a mouth one vertex wide: sealing it would make a cavity, not close a tunnel.
    pocket = np.full((n, n, n), -0.5)
    pocket[5:35, 5:35, 5:35] = 0.5
    pocket[15:25, 15:25, 15:25] = -0.5
    pocket[20, 20, 25:35] = -0.5
    assert close_small_tunnels(pocket, 2)[1] == 0
    # Vertices marked frozen (below the floor) never join.
    pinhole = np.full((n, n, n), -1.0)
    pinhole[5:35, 5:35, 20] = 0.5
    pinhole[19:21, 19:21, 20] = -0.5
    frozen = np.zeros_like(pinhole, dtype=bool)
    frozen[19:21, 19:21, 20] = True
    assert close_small_tunnels(pinhole, 2, frozen)[1] == 0


def test_grouped_illumination_loss_keeps_a_texture_of_another_colour_out_of_the_light():
    """A darker material on every pixel of some normals (a red cap on the part that faces the light) bends
    a light fitted to the luminance under l2 and l1 alike; compared within chromaticity groups, each
    material on its own, the light stays at the true one."""
    from recon.shading.chromaticity import ChromaticityGroups
    from recon.shading.sg import LUMA, fibonacci_sphere, linear_to_srgb, srgb_to_linear
    from recon.shading.soft_light import SoftLight

    normals = fibonacci_sphere(3000)
    truth = SoftLight().factor(normals)
    cap = normals @ torch.nn.functional.normalize(torch.tensor([0.2, 1.0, 0.3]), dim=0) > 0.6
    albedo = torch.where(cap[:, None], srgb_to_linear(torch.tensor([0.8, 0.15, 0.1])),
                         srgb_to_linear(torch.tensor([0.9, 0.85, 0.7])))
    linear = albedo * truth[:, None]
    luminance = (linear * torch.tensor(LUMA)).sum(-1)
    colours = linear_to_srgb(linear)
    labels = ChromaticityGroups.fit(colours, count=8, merge=0.03, seed=0).labels(colours)

    grouped = _light_error_after_fitting(normals, luminance, truth, "l2", labels)
    l2 = _light_error_after_fitting(normals, luminance, truth, "l2")
    l1 = _light_error_after_fitting(normals, luminance, truth, "l1")
    # Log-error of the fitted light: grouped 0.048, l2 0.48, l1 0.49 (24 fixed lobes reach ~0.047 at best).
    assert grouped < 0.06, grouped
    assert grouped < 0.5 * min(l1, l2), (grouped, l1, l2)


def test_grouped_illumination_loss_leaves_out_small_and_unlabelled_groups():
    from recon.refine.train import illumination_loss

    irr = torch.rand(200) + 0.5
    lum = torch.rand(200) + 0.5
    groups = torch.zeros(200, dtype=torch.long)
    groups[:10] = 1  # too few to average
    groups[10:20] = -1  # too dark to say
    lum_changed = lum.clone()
    lum_changed[:20] = 100.0
    irr.requires_grad_(True)
    loss = illumination_loss(irr, lum_changed, "l2", groups)
    expected = illumination_loss(irr[20:], lum[20:], "l2")
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.isfinite(irr.grad).all() and (irr.grad[:20] == 0).all()
    # No group large enough: every pixel counts as one group.
    tiny = torch.arange(200) % 50
    assert torch.allclose(illumination_loss(irr, lum, "l2", tiny), illumination_loss(irr, lum, "l2"))



def _vertex_gradient_at_first_step(cfg, orbit, monkeypatch, photometric: bool) -> torch.Tensor:
    """The gradient on the mesh vertices at step 0 of the photometric loss alone (``photometric``) or of the
    two illumination losses alone, with an albedo that ignores where it is looked up: whatever reaches the
    vertices comes through the shading normals."""
    import recon.refine.train as train

    class PositionBlindAlbedo(train.AlbedoField):
        def forward(self, points: torch.Tensor) -> torch.Tensor:
            return super().forward(points.detach())

    monkeypatch.setattr(train, "AlbedoField", PositionBlindAlbedo)
    cfg = dataclasses.replace(cfg, steps=1, warmup_steps=0, photometric_moves_geometry=True, mask_weight=0.0,
                              sdf_weight=0.0, normal_weight=0.0, laplacian_weight=0.0, albedo_smooth_weight=0.0,
                              rgb_weight=1.0 if photometric else 0.0,
                              illumination_weight=0.0 if photometric else 0.1,
                              illumination_pair_weight=0.0 if photometric else 0.3)
    grads: list[torch.Tensor] = []

    def capture(ctx: HookContext) -> None:
        ctx.verts.register_hook(lambda g: grads.append(g.detach().clone()))
        return None

    fit_refined(cfg, orbit, _sphere_mesh(0.47), seed=0, progress=False, extra_losses=[capture])
    assert len(grads) == 1
    return grads[0]


@pytest.mark.parametrize(
    ("shading_moves_geometry", "photometric", "photometric_moves_light", "moves"),
    [
        (True, False, False, True),  # the default: the illumination losses fit the normals to the shading
        (False, False, False, False),  # fixed (smoothed, detached) shading normals
        (True, True, False, False),  # photometric gradients reach neither the light nor the normals
        (True, True, True, True),  # unless they are let through to the irradiance
    ],
)
def test_which_losses_move_the_geometry_through_the_shading_normals(
        sphere_orbit, tiny_cfg, monkeypatch, shading_moves_geometry, photometric, photometric_moves_light, moves):
    cfg = dataclasses.replace(tiny_cfg, shading_moves_geometry=shading_moves_geometry,
                              photometric_moves_light=photometric_moves_light)
    grad = _vertex_gradient_at_first_step(cfg, sphere_orbit, monkeypatch, photometric)
    reached = int((grad.norm(dim=-1) > 0).sum())
    if moves:
        # Many vertices, not a stray few: every sampled pixel's face passes its normal's gradient on.
        assert reached > 0.5 * grad.shape[0]
    else:
        assert reached == 0


def test_the_presets_let_shading_move_the_geometry():
    assert load_config("default").refine.shading_moves_geometry
    assert load_config("fast").refine.shading_moves_geometry


def test_offset_grid_rows_interpolate_linear_fields_exactly():
    from recon.refine.train import offset_grid_rows

    resolution, step = 16, 4
    n, m = resolution + 1, resolution // step + 1
    verts = torch.arange(n ** 3)
    rows, weights = offset_grid_rows(verts, resolution, step)
    assert rows.shape == weights.shape == (n ** 3, 8)
    assert int(rows.min()) >= 0 and int(rows.max()) < m ** 3
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(n ** 3))
    # A field linear in the lattice indices, sampled at the coarse nodes, comes back exactly everywhere.
    ii, jj, kk = torch.meshgrid(*(torch.arange(m, dtype=torch.float32) * step,) * 3, indexing="ij")
    nodes = (0.5 * ii - 2.0 * jj + 0.25 * kk + 1.0).reshape(-1)
    ijk = torch.stack([verts // (n * n), (verts // n) % n, verts % n], dim=-1).float()
    expected = 0.5 * ijk[:, 0] - 2.0 * ijk[:, 1] + 0.25 * ijk[:, 2] + 1.0
    torch.testing.assert_close((nodes[rows] * weights).sum(dim=1), expected, rtol=0, atol=1e-4)


def test_coarse_phase_moves_the_sdf_by_a_smooth_offset_only(sphere_orbit, tiny_cfg):
    """While the coarse offset grid learns, the lattice's own SDF values and the deformation do not: the
    result differs from the start by the grid upsampled (exactly trilinear between its nodes), and the
    baked field is the one the band saw."""
    from recon.refine.train import _Geometry, initial_sdf

    start = _sphere_mesh(0.46)  # the orbit shows a sphere of radius 0.5
    # (No sign clean-up or tunnel closing after the steps: they edit single lattice values.)
    cfg = dataclasses.replace(tiny_cfg, offset_grid_steps=tiny_cfg.steps, offset_grid_cells=4, lr_offset_grid=0.1,
                              sign_cleanup=False, tunnel_close_cells=0)
    asset = fit_refined(cfg, sphere_orbit, start, seed=0, progress=False)
    assert abs(_mean_radius(asset.mesh) - 0.5) < 0.5 * abs(0.46 - 0.5)
    assert float(asset.deform.abs().max()) == 0.0
    n, m = cfg.grid + 1, cfg.grid // 4 + 1
    grid = (asset.sdf - initial_sdf(cfg, start)).reshape(n, n, n)
    nodes = grid[::4, ::4, ::4]
    up = torch.nn.functional.interpolate(nodes.reshape(1, 1, m, m, m), size=(n, n, n), mode="trilinear",
                                         align_corners=True).reshape(n, n, n)
    # Near the surface (the start's SDF is clamped further out) and above the floor's cut.
    y = torch.linspace(-cfg.bound, cfg.bound, n)[None, :, None].expand(n, n, n)
    band = (initial_sdf(cfg, start).reshape(n, n, n).abs() < 3) & (y > -0.3)
    torch.testing.assert_close(grid[band], up[band], rtol=0, atol=1e-4)
    assert float(grid[band].abs().max()) > 0.1  # it did move

    geometry = _Geometry(initial_sdf(cfg, start), cfg)
    geometry.rebuild_band(1)
    with torch.no_grad():
        geometry.offset_grid.normal_()
    _, before = geometry.band_state()
    geometry.bake_offset_grid()
    _, after = geometry.band_state()
    torch.testing.assert_close(before, after, rtol=0, atol=1e-5)
    assert float(geometry.offset_grid.detach().abs().max()) == 0.0

    # The motion reported at the phase's end is the whole phase's, although every band and checkpoint
    # bakes the grid into the lattice along the way (a log once reported only the last band's part).
    geometry = _Geometry(initial_sdf(cfg, start), cfg)
    geometry.rebuild_band(1)
    start_sdf = geometry.capped_sdf().clone()
    for _ in range(3):
        with torch.no_grad():
            geometry.offset_grid.uniform_(0.0, 0.5)
        geometry.capped_sdf()  # bakes, as each band and checkpoint does
    with torch.no_grad():
        geometry.offset_grid.uniform_(0.0, 0.5)
    verts = geometry.band.verts
    moved = geometry.end_offset_phase()
    assert geometry.offset_grid is None
    total = geometry.capped_sdf()[verts] - start_sdf[verts]
    above = geometry.sdf_cap[verts] > 1  # the floor's cut clips the SDF below
    torch.testing.assert_close(moved[above], total[above], rtol=0, atol=1e-4)
    assert float(moved.mean()) > 0.5  # four bakes of 0.25 on average

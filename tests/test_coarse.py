"""Coarse stage: visual hull, volume rendering, fitting and extraction on tiny analytic orbits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.coarse.config import CoarseConfig, ExtractConfig
from recon.coarse.fields import DenseGridField, HashGridField
from recon.coarse.occupancy import Occupancy, visual_hull
from recon.coarse.render import ray_box, ray_distortion, ray_distortion_reference, render_rays
from recon.coarse.train import fit_coarse_field
from recon.config import load_config
from recon.data.synthetic import make_scene, render_orbit, sv3d_orbit_angles
from recon.eval.metrics import EvalConfig, evaluate_meshes
from recon.extract import _marching_cubes, close_at_border, extract_mesh, floor_height
from recon.render.mesh import from_trimesh
from recon.types import CoarseField, Mesh


def test_visual_hull_contains_the_object_and_carves_most_of_the_cube(sphere_orbit):
    hull = visual_hull(sphere_orbit, res=32, bound=0.6)
    centers = hull.centers()
    inside = centers.norm(dim=-1) < 0.5 - hull.cell
    assert hull.grid.reshape(-1)[inside].all(), "the hull must contain the object"
    # The hull of a sphere seen from a ring of cameras is close to the sphere near the equator.
    assert hull.grid.float().mean() < 0.5


def test_ray_box_and_empty_space_skipping():
    o = torch.tensor([[0.0, 0.0, 2.0], [0.0, 3.0, 2.0]])
    d = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]), dim=-1)
    t0, t1 = ray_box(o, d, torch.full((3,), -0.5), torch.full((3,), 0.5))
    assert t0[0] == pytest.approx(1.5) and t1[0] == pytest.approx(2.5) and t1[1] < t0[1]
    field = DenseGridField(8, bound=0.6, init_sigma=50.0, density_scale=10.0)
    occ = Occupancy(torch.zeros(8, 8, 8, dtype=torch.bool), 0.6)
    out = render_rays(field, occ, o, d, 0.01, torch.ones(3))
    assert out.samples == 0 and torch.allclose(out.rgb, torch.ones(2, 3)) and (out.acc == 0).all()
    occ.grid[:] = True
    out = render_rays(field, occ, o, d, 0.01, torch.ones(3))
    assert out.acc[0] > 0.99 and out.samples > 0


def test_volume_rendering_of_a_constant_density_slab_matches_beer_lambert():
    field = DenseGridField(4, bound=0.6, init_sigma=2.0, density_scale=10.0)
    occ = Occupancy(torch.ones(4, 4, 4, dtype=torch.bool), 0.6)
    o = torch.tensor([[0.0, 0.0, 2.0]])
    d = torch.tensor([[0.0, 0.0, -1.0]])
    out = render_rays(field, occ, o, d, 0.001, torch.zeros(3))
    # Through the whole cube (1.2 long) at sigma 2: opacity 1 - exp(-2.4).
    assert out.acc.item() == pytest.approx(1 - np.exp(-2.4), rel=1e-2)
    # The ray enters the slab at t = 1.4; opacity tau is reached where 1 - exp(-2 (t - 1.4)) = tau.
    for tau in (0.1, 0.5):
        out = render_rays(field, occ, o, d, 0.001, torch.zeros(3), surface_opacity=tau)
        assert out.surface.item() == pytest.approx(1.4 - np.log(1 - tau) / 2, abs=2e-3)


@pytest.mark.parametrize("kind", ["grid", "hash"])
def test_fields_give_finite_density_and_colour_with_gradients(kind):
    field = DenseGridField(16) if kind == "grid" else HashGridField(levels=4, log2_size=10, max_res=64)
    x = (torch.rand(100, 3) - 0.5) * 1.2
    sigma, rgb = field(x)
    assert sigma.shape == (100,) and rgb.shape == (100, 3) and (sigma >= 0).all()
    (sigma.sum() + rgb.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in field.parameters())


def test_hash_encoding_is_continuous():
    enc = HashGridField(levels=4, log2_size=10, max_res=64).encoding
    x = torch.tensor([[0.1, 0.2, -0.3]])
    assert (enc(x + 1e-5) - enc(x)).abs().max() < 1e-3


def _tiny_cfg() -> tuple[CoarseConfig, ExtractConfig]:
    cfg = load_config("tiny")
    return cfg.coarse, cfg.extract


def test_ray_distortion_matches_the_double_sum_and_its_gradient():
    gen = torch.Generator().manual_seed(0)
    step = 0.01
    t = 0.5 + (torch.arange(40, dtype=torch.float64) + torch.rand(6, 40, generator=gen, dtype=torch.float64)) * step
    w = (torch.rand(6, 40, generator=gen, dtype=torch.float64) * 0.05).requires_grad_(True)
    torch.testing.assert_close(ray_distortion(w, t, step), ray_distortion_reference(w, t, step))
    torch.autograd.gradcheck(lambda x: ray_distortion(x, t, step), (w,))


def test_ray_distortion_is_smaller_for_a_surface_than_for_fog():
    step = 0.01
    t = (torch.arange(100, dtype=torch.float32)[None] + 0.5) * step
    surface = torch.zeros(1, 100)
    surface[0, 50:53] = 0.3  # opacity 0.9 within 3 samples
    fog = torch.full((1, 100), 0.9 / 30)
    fog[0, :40] = 0
    fog[0, 70:] = 0  # the same opacity spread over 30 samples
    assert float(ray_distortion(surface, t, step)) < 0.2 * float(ray_distortion(fog, t, step))


def test_render_rays_returns_the_distortion_only_when_asked(sphere_orbit):
    field = _analytic_ball_field()
    occ = Occupancy(field.occupancy, field.bound)
    o, d = sphere_orbit.cameras.rays(torch.zeros(8, dtype=torch.long), torch.full((8, 2), 24.0))
    o = o.expand_as(d)
    plain = render_rays(field.field, occ, o, d, 0.01, torch.ones(3))
    spread = render_rays(field.field, occ, o, d, 0.01, torch.ones(3), distortion=True)
    assert plain.distortion is None
    assert spread.distortion.shape == (8,) and bool((spread.distortion > 0).all())
    torch.testing.assert_close(plain.rgb, spread.rgb)


def _mean_distortion_of_hits(field: CoarseField, orbit) -> float:
    occ = Occupancy(field.occupancy, field.bound)
    gen = torch.Generator().manual_seed(1)
    views = torch.randint(0, len(orbit), (2000,), generator=gen)
    xy = torch.rand(2000, 2, generator=gen) * orbit.width
    o, d = orbit.cameras.rays(views, xy)
    with torch.no_grad():
        out = render_rays(field.field, occ, o.expand_as(d), d, 0.01, torch.ones(3), distortion=True)
    hit = out.acc > 0.5
    return float(out.distortion[hit].mean())


def test_the_distortion_weight_concentrates_the_fitted_density(sphere_orbit):
    coarse, _ = _tiny_cfg()
    plain = fit_coarse_field(dataclasses.replace(coarse, steps=30), sphere_orbit, seed=0, progress=False)
    compact = fit_coarse_field(dataclasses.replace(coarse, steps=30, distortion_weight=1.0), sphere_orbit, seed=0,
                               progress=False)
    # Measured 0.158 -> 0.138 world units.
    assert _mean_distortion_of_hits(compact, sphere_orbit) < 0.95 * _mean_distortion_of_hits(plain, sphere_orbit)


def test_fit_and_extract_a_sphere(sphere_orbit):
    coarse, extract = _tiny_cfg()
    coarse = dataclasses.replace(coarse, steps=80)
    field = fit_coarse_field(coarse, sphere_orbit, seed=0, progress=False)
    mesh, stats = extract_mesh(extract, field, sphere_orbit)
    assert stats["silhouette_iou"] > 0.9
    tm = mesh.to_trimesh()
    assert tm.is_watertight
    gt = from_trimesh(make_scene("sphere").mesh(detail=3))
    m = evaluate_meshes(from_trimesh(tm), gt, EvalConfig(samples=10_000, views=0, iou_resolution=32))
    assert m["chamfer_area"] < 0.03 and m["iou"] > 0.8


def _analytic_ball_field(resolution: int = 64) -> CoarseField:
    """A coarse field that is exactly the radius-0.5 ball (opaque inside, empty outside)."""
    field = DenseGridField(resolution, bound=0.6, density_scale=float(resolution))
    with torch.no_grad():
        axis = torch.linspace(-0.6, 0.6, resolution)
        r = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).norm(dim=-1)
        field.grid[..., 0] = torch.where(r < 0.5, 8.0, -12.0)
    occupancy = torch.ones((32,) * 3, dtype=torch.bool)
    return CoarseField(field, occupancy, 0.6, "grid", {"resolution": resolution})


def test_a_centred_ball_seen_from_above_gets_its_underside_back():
    # From 10 degrees above (perspective, radius 2), neither depths nor silhouettes reach below ~0.9 of
    # the ball's radius. Taken as centred (the default), its floor is minus its observed top.
    elev, azim = sv3d_orbit_angles()
    orbit = render_orbit(make_scene("sphere"), elev, azim, size=96)
    cfg = ExtractConfig(resolution=96, search_resolution=64, silhouette_size=64, depth_size=96)
    field = _analytic_ball_field()
    gt = from_trimesh(make_scene("sphere").mesh(detail=3))
    meshes, stats = {}, {}
    for centred in (True, False):
        meshes[centred], stats[centred] = extract_mesh(dataclasses.replace(cfg, centred_object=centred), field,
                                                       orbit)
    assert stats[False]["floor_y"] == stats[False]["observed_low_y"] > -0.47
    assert stats[True]["floor_y"] == pytest.approx(-stats[True]["observed_high_y"])
    assert stats[True]["floor_y"] < -0.48
    for centred in (True, False):
        assert float(meshes[centred].verts[:, 1].min()) == pytest.approx(stats[centred]["floor_y"], abs=0.01)
    chamfer = {c: evaluate_meshes(from_trimesh(meshes[c].to_trimesh()), gt,
                                  EvalConfig(samples=20_000, views=0, iou_resolution=32))["chamfer_area"]
               for c in (True, False)}
    assert chamfer[True] < 0.92 * chamfer[False]  # 0.0147 against 0.0168 at this resolution


def test_floor_height_lowers_the_observed_floor_only_to_minus_the_top():
    assert floor_height(-0.4, 0.48, centred_object=True) == -0.48
    assert floor_height(-0.4, 0.48, centred_object=False) == -0.4
    # Observed matter below minus the top (an object that is not centred) keeps its lower floor.
    assert floor_height(-0.5, 0.2, centred_object=True) == -0.5


def test_marching_cubes_closes_an_inside_that_reaches_the_border():
    """An object the views crop leaves its hull running out of the grid: the mesh is closed there, crossing
    the border cells halfway, and a volume whose border is outside is left as it was."""
    import trimesh

    n, bound = 33, 0.6
    t = np.linspace(-bound, bound, n)
    x, y, z = np.meshgrid(t, t, t, indexing="ij")
    slab = 0.2 - np.abs(y) + 0 * x  # inside > 0: a slab through the whole grid along x and z
    verts, faces = _marching_cubes(slab, 0.0, bound)
    mesh = trimesh.Trimesh(verts, faces, process=True)
    assert mesh.is_watertight and mesh.volume > 0
    spacing = 2 * bound / (n - 1)
    assert np.abs(verts[:, 0]).max() == pytest.approx(bound - spacing / 2, abs=1e-6)
    ball = 0.4 - np.sqrt(x * x + y * y + z * z)
    np.testing.assert_array_equal(close_at_border(ball, 0.0), ball)
    assert np.sum(close_at_border(slab, 0.0) != slab) > 0


def test_the_floor_cut_stays_at_the_lowest_observed_point_whatever_the_surface_offset():
    # From 10 degrees above, the wedge under a box is hidden in every view; the coarse mesh is cut at the
    # lowest observed surface point. The cut used to move down with the surface offset the silhouettes
    # choose (here several cells), leaving the mesh that much deeper than anything observed.
    coarse, extract = _tiny_cfg()
    elev, azim = sv3d_orbit_angles()
    orbit = render_orbit(make_scene("box"), elev, azim, size=64, supersample=2)
    field = fit_coarse_field(dataclasses.replace(coarse, steps=120), orbit, seed=0, progress=False)
    mesh, stats = extract_mesh(extract, field, orbit)
    assert abs(stats["level_offset"]) > 0.02  # the case the cut must not follow
    assert float(mesh.verts[:, 1].min()) == pytest.approx(stats["floor_y"], abs=1e-4)
    # At the tiny preset's 48² depths the lowest depth samples reach a little under the box (-0.35).
    assert -0.35 - 0.1 < stats["floor_y"] < -0.35 + 0.02


def test_fit_is_deterministic_with_a_seed(sphere_orbit):
    coarse, _ = _tiny_cfg()
    coarse = dataclasses.replace(coarse, steps=10)
    a = fit_coarse_field(coarse, sphere_orbit, seed=3, progress=False)
    b = fit_coarse_field(coarse, sphere_orbit, seed=3, progress=False)
    for (k, va), (_, vb) in zip(a.field.state_dict().items(), b.field.state_dict().items(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)


def test_checkpoint_resume_continues_from_saved_step(sphere_orbit, tmp_path: Path):
    coarse, _ = _tiny_cfg()
    ckpt = tmp_path / "c.pt"
    part = dataclasses.replace(coarse, steps=20, checkpoint_every=10)
    fit_coarse_field(part, sphere_orbit, progress=False, checkpoint=ckpt)
    assert CoarseField.load(ckpt).step == 20
    more = dataclasses.replace(coarse, steps=30, checkpoint_every=10)
    done = fit_coarse_field(more, sphere_orbit, progress=False, checkpoint=ckpt)
    assert done.step == 30 and done.metrics["steps"] == 10  # only the remaining 10 were run


def test_mesh_ply_round_trip(tmp_path: Path):
    m = Mesh(torch.rand(4, 3), torch.tensor([[0, 1, 2], [0, 2, 3]]), torch.rand(4, 3))
    m.save_ply(tmp_path / "m.ply")
    back = Mesh.load(tmp_path / "m.ply")
    torch.testing.assert_close(back.verts, m.verts)
    assert (back.colors - m.colors).abs().max() <= 1 / 255 + 1e-6


def test_fit_command_writes_coarse_mesh_and_previews(sphere_dir: Path, tmp_path: Path, capsys):
    from recon.cli import main

    out = tmp_path / "run"
    assert main(["fit", str(sphere_dir), "-o", str(out), "-c", "tiny", "--until", "coarse"]) == 0
    for name in ("coarse.ply", "previews/coarse_field.png", "previews/coarse_mesh.png", "metrics.json"):
        assert (out / name).is_file(), name
    assert "silhouette IoU" in capsys.readouterr().out


def test_trilinear_kernel_matches_grid_sample_values_and_gradients():
    from recon.coarse.trilinear import trilinear

    g = torch.randn(9, 10, 11, 4, requires_grad=True)
    x = (torch.rand(3000, 3) * 2 - 1) * 0.7  # some points beyond the border (clamped)
    ours = trilinear(g, x, 0.6)
    ref = torch.nn.functional.grid_sample(g.permute(3, 2, 1, 0)[None], (x / 0.6).reshape(1, 1, 1, -1, 3),
                                          mode="bilinear", padding_mode="border", align_corners=True)
    ref = ref.reshape(4, -1).t()
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(ours)
    ga = torch.autograd.grad((ours * w).sum(), g)[0]
    gb = torch.autograd.grad((ref * w).sum(), g)[0]
    torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-4)


def test_hash_encoding_kernels_match_the_torch_reference_values_and_gradients():
    from recon.coarse.fields import HashEncoding

    torch.manual_seed(0)
    # levels 16..256 with a 2^12 table: the coarse levels are indexed directly, the fine ones hashed
    enc = HashEncoding(levels=5, features=2, log2_size=12, base_res=4, max_res=256, bound=0.6)
    assert (enc.resolutions[0] + 1) ** 3 <= enc.size < (enc.resolutions[-1] + 1) ** 3
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    x = (torch.rand(3000, 3) * 2 - 1) * 0.7  # some points beyond the bound (clamped)
    fast_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast, ref = enc(fast_x), enc.forward_reference(ref_x)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(ref)
    g_fast = torch.autograd.grad((fast * w).sum(), [fast_x, enc.table])
    g_ref = torch.autograd.grad((ref * w).sum(), [ref_x, enc.table])
    torch.testing.assert_close(g_fast[1], g_ref[1], atol=1e-4, rtol=1e-4)
    # point gradients are sums of res-scaled terms: compare relative to their size
    scale = g_ref[0].abs().max()
    assert (g_fast[0] - g_ref[0]).abs().max() < 1e-5 * scale
    assert (g_fast[0][x.abs() > 0.6] == 0).all()  # clamped coordinates are flat


def test_hash_encoding_point_gradient_matches_finite_differences():
    from recon.coarse.fields import HashEncoding

    torch.manual_seed(1)
    enc = HashEncoding(levels=3, features=2, log2_size=10, base_res=4, max_res=16, bound=0.6).double()
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    x = (torch.rand(20, 3, dtype=torch.float64) - 0.5)
    # the float32 kernels against central differences of the float64 reference
    x32 = x.float().requires_grad_()
    enc32 = HashEncoding(levels=3, features=2, log2_size=10, base_res=4, max_res=16, bound=0.6)
    with torch.no_grad():
        enc32.table.copy_(enc.table.float())
    grad = torch.autograd.grad(enc32(x32).sum(), x32)[0].double()
    eps = 1e-6
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = eps
        numeric = (enc.forward_reference(x + step).sum(-1) - enc.forward_reference(x - step).sum(-1)) / (2 * eps)
        torch.testing.assert_close(grad[:, axis], numeric, atol=2e-3, rtol=2e-3)

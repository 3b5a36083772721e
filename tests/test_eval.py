"""Metrics against analytic answers: concentric spheres, a shifted box, occupancy of known solids."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import trimesh

from recon.cli import main
from recon.eval.metrics import EvalConfig, chamfer_and_fscore, evaluate_meshes, psnr, sample_surface, ssim
from recon.eval.occupancy import occupancy_grid
from recon.render.mesh import from_trimesh


def _sphere(r: float, sub: int = 4) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(sub, radius=r)


def test_concentric_spheres_chamfer_equals_radius_gap_and_iou_equals_volume_ratio():
    m = evaluate_meshes(from_trimesh(_sphere(0.45)), from_trimesh(_sphere(0.5)),
                        EvalConfig(normalize=False, samples=20_000, views=0))
    assert m["chamfer_area"] == pytest.approx(0.05, rel=0.02)
    assert m["chamfer_vertex"] == pytest.approx(0.05, rel=0.02)
    assert m["iou"] == pytest.approx(0.9**3, abs=0.02)
    assert m["fscore@0.01"] == 0.0 and m["fscore@0.02"] == 0.0


def test_normalisation_makes_scaled_copies_identical():
    m = evaluate_meshes(from_trimesh(_sphere(0.3)), from_trimesh(_sphere(0.5)),
                        EvalConfig(samples=20_000, views=2, view_size=32))
    # Two independent 20k-point samplings of one sphere sit ~half a point spacing (0.006) apart.
    assert m["chamfer_area"] < 0.008 and m["iou"] > 0.98 and m["fscore@0.02"] > 0.99
    assert m["psnr"] > 40 and m["ssim"] > 0.99


def test_shifted_box_iou():
    a = trimesh.creation.box(extents=[0.6, 0.6, 0.6])
    b = a.copy()
    b.apply_translation([0.1, 0.0, 0.0])
    m = evaluate_meshes(from_trimesh(a), from_trimesh(b), EvalConfig(normalize=False, samples=20_000, views=0))
    assert m["iou"] == pytest.approx(0.5 / 0.7, abs=0.02)


def test_shifted_box_chamfer_matches_independent_computation():
    # Independently: trimesh's sampler and brute-force nearest neighbours with torch.cdist.
    import torch

    a = trimesh.creation.box(extents=[0.6, 0.6, 0.6])
    b = a.copy()
    b.apply_translation([0.1, 0.0, 0.0])
    pa = torch.from_numpy(trimesh.sample.sample_surface(a, 20_000, seed=1)[0])
    pb = torch.from_numpy(trimesh.sample.sample_surface(b, 20_000, seed=2)[0])

    def directed(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(torch.cat([torch.cdist(c, y).min(dim=1).values for c in x.split(2000)]).mean())

    expect = 0.5 * (directed(pa, pb) + directed(pb, pa))
    m = evaluate_meshes(from_trimesh(a), from_trimesh(b), EvalConfig(normalize=False, samples=20_000, views=0))
    assert m["chamfer_area"] == pytest.approx(expect, rel=0.02)


def test_occupancy_of_sphere_and_open_mesh():
    s = _sphere(0.4, 4)
    occ = occupancy_grid(np.asarray(s.vertices), np.asarray(s.faces), 32)
    assert occ.sum() / 32**3 == pytest.approx(4 / 3 * math.pi * 0.4**3, rel=0.03)
    # Remove a few faces: the majority vote keeps the solid.
    keep = np.ones(len(s.faces), bool)
    keep[:10] = False
    occ_open = occupancy_grid(np.asarray(s.vertices), np.asarray(s.faces)[keep], 32)
    assert (occ_open != occ).mean() < 0.005


def test_occupancy_counts_rays_through_shared_edges_once():
    # A cube whose faces' diagonals lie exactly on voxel-centre columns.
    box = trimesh.creation.box(extents=[0.5, 0.5, 0.5])
    occ = occupancy_grid(np.asarray(box.vertices), np.asarray(box.faces), 16)
    assert occ.sum() == 8**3  # voxels whose centres lie in [-0.25, 0.25]^3


def test_sampling_is_area_uniform_and_seeded():
    s = _sphere(0.5, 3)
    p1 = sample_surface(np.asarray(s.vertices), np.asarray(s.faces), 5000, seed=3)
    p2 = sample_surface(np.asarray(s.vertices), np.asarray(s.faces), 5000, seed=3)
    np.testing.assert_array_equal(p1, p2)
    assert np.abs(p1.mean(0)).max() < 0.02


def test_chamfer_of_identical_sets_is_zero():
    p = np.random.default_rng(0).random((100, 3))
    out = chamfer_and_fscore(p, p)
    assert out["chamfer"] == 0 and out["fscore@0.01"] == 1


def test_psnr_ssim_known_values():
    import torch

    a = torch.zeros(1, 16, 16, 3)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, torch.rand(1, 16, 16, 3)) < 0.5


def test_eval_command_prints_and_writes_json(tmp_path: Path, capsys):
    _sphere(0.45, 3).export(tmp_path / "a.ply")
    _sphere(0.5, 3).export(tmp_path / "b.ply")
    out = tmp_path / "m.json"
    assert main(["eval", str(tmp_path / "a.ply"), str(tmp_path / "b.ply"), "--no-normalize", "--samples", "5000",
                 "--views", "2", "--size", "32", "--json", str(out)]) == 0
    assert "chamfer_area" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["chamfer_area"] == pytest.approx(0.05, rel=0.05)


def _sheet(n: int, height) -> trimesh.Trimesh:
    """A unit square in x, y of n x n cells, z = height(x), faces counter-clockwise seen from +z."""
    x, y = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), indexing="ij")
    verts = np.stack([x, y, height(x)], -1).reshape(-1, 3)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return trimesh.Trimesh(verts, faces, process=False)


def test_normal_angles_of_a_corrugated_sheet_match_its_slope():
    amplitude, wavelength, cells = 0.01, 0.2, 200
    k = 2 * math.pi / wavelength
    flat = _sheet(cells, np.zeros_like)
    wavy = _sheet(cells, lambda x: amplitude * np.sin(k * x))
    cfg = EvalConfig(normalize=False, samples=40_000, views=0)
    same = evaluate_meshes(from_trimesh(flat), from_trimesh(flat), cfg)
    assert same["normal_angle_p90"] < 1e-6 and same["normal_consistency"] == pytest.approx(1.0)
    m = evaluate_meshes(from_trimesh(wavy), from_trimesh(flat), cfg)
    # Independently: each facet column tilts by atan(its chord's slope); the flat sheet's normal is +z,
    # and a column's share of the samples is its area, proportional to sqrt(1 + slope^2).
    x = np.linspace(0, 1, cells + 1)
    slope = np.diff(amplitude * np.sin(k * x)) * cells
    tilt = np.degrees(np.arctan(np.abs(slope)))
    weight = np.sqrt(1 + slope**2)
    order = np.argsort(tilt)
    cdf = np.cumsum(weight[order]) / weight.sum()
    assert m["normal_angle_median"] == pytest.approx(tilt[order][np.searchsorted(cdf, 0.5)], abs=0.3)
    assert m["normal_angle_p90"] == pytest.approx(tilt[order][np.searchsorted(cdf, 0.9)], abs=0.3)
    assert m["normal_consistency"] == pytest.approx(np.average(np.cos(np.radians(tilt)), weights=weight), abs=0.002)
    flipped = trimesh.Trimesh(flat.vertices, flat.faces[:, ::-1], process=False)
    f = evaluate_meshes(from_trimesh(flipped), from_trimesh(flat), cfg)
    assert f["normal_angle_median"] == pytest.approx(180.0) and f["normal_consistency"] == pytest.approx(1.0)

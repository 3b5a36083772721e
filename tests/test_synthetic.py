"""Analytic orbits: exact geometry, normalised scenes, ground-truth meshes that match the SDF."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon.data.synthetic import SCENES, make_scene, sphere_trace, sv3d_orbit_angles


@pytest.mark.parametrize("name", SCENES)
def test_scenes_are_normalised(name):
    lo, hi = make_scene(name).bounds()
    assert (hi - lo).max() == pytest.approx(1.0)
    np.testing.assert_allclose((hi + lo) / 2, 0.0, atol=1e-12)


def test_sphere_trace_hits_the_sphere_exactly():
    scene = make_scene("sphere")
    o = torch.tensor([[0.0, 0.0, 2.0]] * 3, dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.tensor([[0, 0, -1.0], [0.1, 0.05, -1.0], [0.5, 0, -1.0]],
                                                   dtype=torch.float64), dim=-1)
    t = sphere_trace(scene, o, d)
    # Analytic ray-sphere intersection for radius 0.5.
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - 0.25
    disc = b * b - c
    expect = torch.where(disc > 0, -b - torch.sqrt(disc.clamp(min=0)), torch.full_like(b, math.inf))
    assert torch.isinf(t[2]) and torch.isinf(expect[2])
    torch.testing.assert_close(t[:2], expect[:2], atol=1e-6, rtol=0)


def test_sphere_orbit_silhouette_area_matches_projection(sphere_orbit):
    # A sphere of radius R at distance D projects to a disc of angular radius asin(R / D).
    f = float(sphere_orbit.cameras.K[0, 0, 0])
    r_px = f * math.tan(math.asin(0.5 / 2.0))
    expected = math.pi * r_px**2
    areas = sphere_orbit.masks.sum(dim=(1, 2))
    assert torch.allclose(areas, torch.full_like(areas, expected), rtol=0.01)


@pytest.mark.parametrize("name,euler", [("sphere", 2), ("box", 2), ("torus", 0), ("union", 2), ("toy", 0)])
def test_ground_truth_mesh_is_watertight_with_right_topology(name, euler):
    mesh = make_scene(name).mesh(detail=3)
    assert mesh.is_watertight
    assert mesh.euler_number == euler
    assert np.ptp(mesh.bounds, axis=0).max() == pytest.approx(1.0, abs=1e-3)


def test_ground_truth_mesh_lies_on_the_sdf_surface():
    scene = make_scene("toy")
    mesh = scene.mesh(detail=3)
    dist = scene.sdf(torch.from_numpy(np.asarray(mesh.vertices))).abs()
    # Primitive vertices lie on the exact surface; only the boolean's new vertices, where two
    # tessellations cross, sit on a facet (within its chord error).
    assert (dist < 1e-6).double().mean() > 0.95
    assert dist.max() < 2e-3
    # And the mesh's volume is close to the solid's (a Monte-Carlo estimate from the SDF).
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(200_000, 3, generator=g, dtype=torch.float64) - 0.5
    mc_volume = float(scene.occupancy(pts).double().mean())
    assert mesh.volume == pytest.approx(mc_volume, rel=0.03)


def test_ground_truth_box_mesh_carries_its_stripes():
    # The ground-truth mesh's vertex colours are what a mesh renderer shows: on trimesh's 12-triangle box they
    # blended the stripes into one gradient (no band, no stereo cue on the faces).
    scene = make_scene("box")
    mesh = scene.mesh(detail=5)
    verts = np.asarray(mesh.vertices)
    assert np.abs(np.abs(verts).max(0) - np.array([0.5, 0.35, 0.25])).max() < 1e-9
    dist = scene.sdf(torch.from_numpy(verts)).abs()
    assert float(dist.max()) < 1e-9  # every vertex on a face
    edges = np.linalg.norm(np.diff(verts[mesh.edges_unique], axis=1)[:, 0], axis=-1)
    assert edges.max() <= 0.5**6 + 1e-9
    # Both stripe colours, in about equal shares of the vertices, and pure (bands, not a blend).
    colors = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(int)
    unique, counts = np.unique(colors, axis=0, return_counts=True)
    assert len(unique) == 2
    assert counts.min() / counts.sum() > 0.4


def test_dynamic_orbit_elevation_varies_within_amplitude():
    elev, azim = sv3d_orbit_angles(dynamic_amplitude_deg=20.0)
    assert elev.min() >= -10.0 - 1e-9 and elev.max() <= 30.0 + 1e-9
    assert elev.std() > 5
    assert azim[-1] == 0


def test_toy_orbit_masks_are_exact_coverage(toy_orbit):
    assert toy_orbit.mask_source == "alpha"
    assert ((toy_orbit.masks > 0) & (toy_orbit.masks < 1)).any()  # antialiased rims
    assert (toy_orbit.mask_coverage() > 0.1).all()

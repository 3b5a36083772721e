"""Tetrahedral grid and marching tetrahedra: conformity, analytic sphere, band = full grid, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from recon.geometry.tets import (
    cell_tets,
    kuhn_euler_characteristic,
    lattice_vertices,
    marching_tetrahedra,
    narrow_band,
    tet_grid,
)


def _volumes(verts: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    p = verts[tets]
    return torch.det(torch.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]], dim=1).double()) / 6


def test_grid_fills_the_cube_and_is_conforming(tmp_path):
    R = 3
    verts, tets = tet_grid(R, bound=0.5, cache_dir=tmp_path)
    assert verts.shape == ((R + 1) ** 3, 3) and tets.shape == (6 * R**3, 4)
    vol = _volumes(verts, tets).abs()
    assert (vol > 0).all()
    assert float(vol.sum()) == pytest.approx(1.0, rel=1e-6)
    # Conforming: every triangle is shared by two tets inside the cube and by one on its boundary.
    faces = torch.cat([tets[:, [0, 1, 2]], tets[:, [0, 1, 3]], tets[:, [0, 2, 3]], tets[:, [1, 2, 3]]])
    uniq, counts = torch.unique(torch.sort(faces, dim=1).values, dim=0, return_counts=True)
    assert counts.max() == 2
    on_boundary = (verts[uniq].abs() > 0.5 - 1e-6).all(dim=1).any(dim=1)  # all 3 vertices on one face plane?
    p = verts[uniq]
    same_plane = torch.zeros(len(uniq), dtype=torch.bool)
    for axis in range(3):
        for side in (-0.5, 0.5):
            same_plane |= ((p[..., axis] - side).abs() < 1e-6).all(dim=1)
    assert ((counts == 1) == same_plane).all()
    del on_boundary
    # The cache: a second call reads the file.
    assert (tmp_path / f"kuhn_{R}.npy").is_file()
    assert torch.equal(tet_grid(R, bound=0.5, cache_dir=tmp_path)[1], tets)


def test_sphere_is_closed_outward_and_matches_area_and_volume_at_grid_64():
    r = 0.4
    verts, tets = tet_grid(64)
    sdf = r - verts.norm(dim=-1)  # inside where > 0 (kaolin)
    v_list, f_list = marching_tetrahedra(verts[None], tets, sdf[None])
    v, f = v_list[0].detach().numpy(), f_list[0].numpy()
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * r**3, rel=0.01)
    assert mesh.area == pytest.approx(4 * math.pi * r**2, rel=0.01)
    # No duplicate vertices: merging coincident vertices removes none.
    assert len(trimesh.Trimesh(v, f, process=True).vertices) == len(v)


def test_batch_and_tet_indices_follow_kaolin():
    verts, tets = tet_grid(8)
    sdf = torch.stack([0.3 - verts.norm(dim=-1), 0.2 - (verts - 0.1).abs().max(dim=-1).values])
    v_list, f_list, t_list = marching_tetrahedra(verts[None].expand(2, -1, -1), tets, sdf, return_tet_idx=True)
    assert len(v_list) == len(f_list) == len(t_list) == 2
    for b in range(2):
        inside = (sdf[b] > 0)[tets[t_list[b]]].sum(-1)
        assert ((inside > 0) & (inside < 4)).all()  # every face comes from a crossed tetrahedron
        assert f_list[b].dtype == torch.long and int(f_list[b].max()) < len(v_list[b])


def test_narrow_band_extracts_the_same_surface_as_the_full_grid():
    R = 24
    verts, tets = tet_grid(R)
    sdf = 0.35 - (verts - torch.tensor([0.05, -0.02, 0.0])).norm(dim=-1)
    full_v, full_f = (x[0] for x in marching_tetrahedra(verts[None], tets, sdf[None]))
    band = narrow_band(sdf.reshape(R + 1, R + 1, R + 1), width=1)
    assert 0 < band.fraction < 0.5
    bv, bf, _ = band.extract(verts[band.verts], sdf[band.verts])
    assert len(bf) == len(full_f) and len(bv) == len(full_v)
    key = lambda v: np.unique(np.round(v.detach().numpy(), 6), axis=0)  # noqa: E731
    assert np.array_equal(key(bv), key(full_v))
    tri_area = lambda v, f: float(trimesh.Trimesh(v.detach().numpy(), f.numpy(), process=False).area)  # noqa: E731
    assert tri_area(bv, bf) == pytest.approx(tri_area(full_v, full_f), rel=1e-6)


def test_narrow_band_kernels_match_the_torch_reference():
    from recon.geometry.tets import narrow_band_reference

    R = 28
    lat = lattice_vertices(R, 0.6)
    bumps = 0.05 * torch.sin(23 * lat[:, 0]) * torch.cos(19 * lat[:, 2])
    # Two bodies, one touching the lattice's faces, so the band reaches the boundary.
    sdf = torch.maximum(0.3 - (lat - 0.15).norm(dim=-1) + bumps, 0.2 - (lat + 0.45).abs().max(dim=-1).values)
    for width in (0, 1, 2):
        fast = narrow_band(sdf.reshape(R + 1, R + 1, R + 1), width)
        ref = narrow_band_reference(sdf.reshape(R + 1, R + 1, R + 1), width)
        for name in ("cells", "verts", "tets", "edges", "tet_edges"):
            assert torch.equal(getattr(fast, name), getattr(ref, name)), (width, name)
    assert 0 < fast.fraction < 0.5


def test_march_kernel_matches_the_torch_reference():
    """The CPU's numba kernel (topology and orientation in one pass) gives the torch code's outputs,
    bit for bit, on a bumpy deformed band with both one- and two-triangle tets."""
    from recon.geometry import tets as T

    R = 32
    lat = lattice_vertices(R, 0.6)
    bumps = 0.04 * torch.sin(20 * lat[:, 0]) * torch.cos(17 * lat[:, 1])
    sdf = (0.35 - lat.norm(dim=-1) + bumps) / (1.2 / R)
    band = narrow_band(sdf.reshape(R + 1, R + 1, R + 1), 1)
    gen = torch.Generator().manual_seed(0)
    pos = lat[band.verts] + 0.4 * (1.2 / R) * torch.tanh(torch.randn(len(band.verts), 3, generator=gen))
    s = sdf[band.verts]
    inside = s > 0
    faces, face_tet, vert_edge = T._march_topology(inside, band.tets, band.edges, band.tet_edges)
    verts = T._crossing_vertices(pos, s, band.edges[vert_edge])
    faces = T._orient(faces, face_tet, verts, pos, inside, band.tets)
    k_faces, k_face_tet, k_vert_edge = T._march_cpu(inside, band.tets, band.edges, band.tet_edges, pos, s)
    per_tet = torch.bincount(face_tet)
    assert (per_tet == 1).sum() > 500 and (per_tet == 2).sum() > 500  # both cases of the table
    assert torch.equal(k_vert_edge, vert_edge)
    assert torch.equal(k_face_tet, face_tet)
    assert torch.equal(k_faces, faces)
    # Its crossing vertices (a numba kernel too) are the torch code's, bit for bit.
    assert torch.equal(T._march(pos, s, band.tets, band.edges, band.tet_edges)[0], verts)
    # The kernel path keeps the vertices differentiable: the same gradients as the float64 torch path.
    weights = torch.randn(verts.shape[0], 3, generator=gen)
    grads = []
    for dtype in (torch.float32, torch.float64):
        p, d = pos.to(dtype).clone().requires_grad_(), s.to(dtype).clone().requires_grad_()
        v, _, _, _ = T._march(p, d, band.tets, band.edges, band.tet_edges)
        (v * weights.to(dtype)).sum().backward()
        grads.append((p.grad.float(), d.grad.float()))
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)
        assert fast.abs().sum() > 0


def test_cell_tets_match_the_full_grid():
    R = 5
    _, tets = tet_grid(R, cache_dir=None)
    cells = torch.tensor([0, 7, 61, R**3 - 1])
    expect = tets.reshape(R**3, 6, 4)[cells].reshape(-1, 4)
    assert torch.equal(cell_tets(cells, R), expect)


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    verts = lattice_vertices(3, 0.5).double()
    _, tets = tet_grid(3, cache_dir=None)
    sdf = (0.3 - verts.norm(dim=-1)) + 0.01 * torch.randn(verts.shape[0], dtype=torch.float64)
    sdf = torch.where(sdf.abs() < 0.02, sdf.sign() * 0.02, sdf)  # keep signs away from 0 for FD
    weights = torch.randn(200, 3, dtype=torch.float64)

    def f(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = marching_tetrahedra(v[None], tets, s[None])[0][0]
        return (out * weights[: out.shape[0]]).sum()

    assert torch.autograd.gradcheck(f, (verts.clone().requires_grad_(), sdf.clone().requires_grad_()),
                                    eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_kuhn_euler_characteristic_is_half_the_surfaces(seed):
    """On random inside sets (speckled, with handles, cavities and several parts) the count of Kuhn
    simplices equals half the Euler characteristic of the surface marching tetrahedra extracts, i.e. it
    sees the same tunnels and bridges as the extraction, diagonal contacts included."""
    rng = np.random.default_rng(seed)
    n = 18
    values = rng.normal(size=(n, n, n)) + (0.6 if seed % 2 else -0.3)
    values[[0, -1]] = values[:, [0, -1]] = values[:, :, [0, -1]] = -1.0  # closed surfaces
    values[np.abs(values) < 1e-3] = 0.01  # no crossings on vertices
    inside = values > 0
    lattice = lattice_vertices(n - 1, 1.0)
    sdf = torch.from_numpy(values.astype(np.float32))
    band = narrow_band(sdf, 1)
    verts, faces, _ = band.extract(lattice[band.verts], sdf.reshape(-1)[band.verts])
    surface = trimesh.Trimesh(verts.numpy(), faces.numpy(), process=True)
    assert surface.is_watertight
    chi = kuhn_euler_characteristic(inside)
    assert 2 * chi == surface.euler_number
    assert chi != int(inside.sum())  # not just a point count: the sets are connected in places
    assert kuhn_euler_characteristic(np.ones((3, 4, 5), bool)) == 1  # a box, touching the array's faces


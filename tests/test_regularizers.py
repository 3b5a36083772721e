"""The refinement's per-step helpers on the CPU (normal smoothing, gradient blur) against their torch code."""

from __future__ import annotations

import torch
import trimesh

from recon.geometry.regularizers import smooth_vertex_normals, smooth_vertex_normals_reference
from recon.refine.train import binomial_blur
from recon.render import edge_topology
from recon.render.views import vertex_normals


def _bumpy_sphere() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m = trimesh.creation.icosphere(4, radius=0.4)
    unit = torch.tensor(m.vertices / 0.4, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    verts = unit * (0.4 + 0.004 * torch.randn(unit.shape[0], 1, generator=gen))
    return verts, torch.tensor(m.faces), unit


def test_smoothing_kernel_matches_the_reference_and_removes_bumps():
    verts, faces, unit = _bumpy_sphere()
    normals = vertex_normals(verts, faces)
    edges = torch.from_numpy(edge_topology(faces).edges)
    for iterations in (0, 1, 4):
        fast = smooth_vertex_normals(normals, edges, iterations)
        torch.testing.assert_close(fast, smooth_vertex_normals_reference(normals, edges, iterations),
                                   atol=1e-6, rtol=0)
    err = lambda n: float((1 - (n * unit).sum(-1)).mean())  # noqa: E731
    assert err(smooth_vertex_normals(normals, edges, 4)) < 0.2 * err(normals)


def test_gradient_blur_kernel_is_bit_identical_to_the_torch_code():
    gen = torch.Generator().manual_seed(1)
    for shape in ((9, 7, 11, 3), (6, 5, 4, 1), (3, 3, 3, 2)):
        box = torch.randn(*shape, generator=gen)
        fast = binomial_blur(box.clone(), 2)
        # A non-contiguous box takes the torch code.
        ref = binomial_blur(box.clone().permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0), 2)
        assert not torch.equal(fast, box)
        assert torch.equal(fast, ref)
    # In place on a sub-box view of a larger lattice (what the refinement blurs): same values as the torch
    # code on a copy of the sub-box, and nothing outside the sub-box changes.
    lattice = torch.randn(12, 10, 9, 3, generator=gen)
    expected = lattice.clone()
    expected[2:9, 1:8, 3:7] = binomial_blur(
        lattice[2:9, 1:8, 3:7].clone().permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0), 2)
    binomial_blur(lattice[2:9, 1:8, 3:7], 2)
    assert torch.equal(lattice, expected)
    # A single spike spreads with the binomial weights (variance 1/2 per pass and axis).
    spike = torch.zeros(9, 9, 9, 1)
    spike[4, 4, 4] = 1
    out = binomial_blur(spike, 1)[..., 0]
    assert float(out.sum()) == 1.0 and float(out[4, 4, 4]) == 0.125 and float(out[3, 4, 4]) == 0.0625

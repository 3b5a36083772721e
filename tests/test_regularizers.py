"""The refinement's per-step helpers on the CPU (regularisers, vertex normals, normal smoothing, gradient
blur) against their torch code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from recon.geometry.regularizers import (
    laplacian_smoothing,
    laplacian_smoothing_reference,
    normal_consistency,
    normal_consistency_reference,
    sdf_sign_regularizer,
    sdf_sign_regularizer_reference,
    smooth_vertex_normals,
    smooth_vertex_normals_reference,
)
from recon.refine.train import binomial_blur, blur_segments, blur_supports
from recon.render import edge_topology
from recon.render.views import vertex_normals, vertex_normals_reference


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
    # Sparse boxes (the kernel skips zero runs): spikes at the line ends, and pairs of spikes whose gaps
    # straddle the kernel's merge distance 2 (passes + 1), for several pass counts.
    for passes in (1, 3, 8):
        reach = passes + 1
        sparse = torch.zeros(5, 4, 60, 2)
        for gap in (2 * reach - 1, 2 * reach, 2 * reach + 1, 2 * reach + 2):
            line = sparse[gap % 5, gap % 4, :, gap % 2]
            line[0], line[5], line[5 + gap], line[59] = 1.0, -2.0, 3.0, 0.5
        sparse[2, 1, 20:23, :] = torch.randn(3, 2, generator=gen)
        for box in (sparse, sparse.permute(2, 0, 1, 3).contiguous(), sparse.permute(0, 2, 1, 3).contiguous()):
            fast = binomial_blur(box.clone(), passes)
            ref = binomial_blur(box.clone().permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0), passes)
            assert torch.equal(fast, ref), passes
            assert float(fast.abs().sum()) > float(box.abs().sum()) * 0.5
    # A support given in advance (what the refinement passes: the band's vertices, a superset of the
    # nonzero gradients) gives the same values as one found from the box, and an empty support is heeded
    # (the kernel reads it, not the values).
    box = torch.zeros(14, 12, 16, 3)
    box[3:6, 4:9, 5:12] = torch.randn(3, 5, 7, 3, generator=gen)
    superset = np.zeros((14, 12, 16), dtype=bool)
    superset[2:8, 3:10, 4:14] = True
    found = binomial_blur(box.clone(), 3)
    given = binomial_blur(box.clone(), 3, blur_supports(superset, 3))
    assert torch.equal(found, given)
    # The segments found once (what the refinement keeps for a band) give the same values again.
    supports = blur_supports(superset, 3)
    segments = blur_segments(box.shape, 3, supports)
    assert all(len(axis) > 0 for axis in segments)
    assert torch.equal(binomial_blur(box.clone(), 3, supports, segments), found)
    assert torch.equal(binomial_blur(box.clone(), 3, blur_supports(np.zeros_like(superset), 3)), box)
    # A single spike spreads with the binomial weights (variance 1/2 per pass and axis).
    spike = torch.zeros(9, 9, 9, 1)
    spike[4, 4, 4] = 1
    out = binomial_blur(spike, 1)[..., 0]
    assert float(out.sum()) == 1.0 and float(out[4, 4, 4]) == 0.125 and float(out[3, 4, 4]) == 0.0625


def _open_bumpy_sphere() -> tuple[torch.Tensor, torch.Tensor]:
    """The bumpy sphere with 30 faces removed (boundary edges), one face collapsed to a point (a zero
    normal) and one vertex left without faces."""
    verts, faces, _ = _bumpy_sphere()
    gen = torch.Generator().manual_seed(2)
    faces = faces[torch.randperm(faces.shape[0], generator=gen)[30:]]
    verts = torch.cat([verts, torch.zeros(1, 3)])
    faces = torch.cat([faces, torch.tensor([[verts.shape[0] - 1] * 3])])
    return verts, faces


def _value_and_grad(fn, x: torch.Tensor, *args) -> tuple[float, torch.Tensor]:
    x = x.clone().requires_grad_()
    loss = fn(x, *args)
    (2.5 * loss).backward()
    return float(loss.detach()), x.grad


def test_regularizer_kernels_match_the_torch_code_in_value_and_gradient():
    verts, faces = _open_bumpy_sphere()
    topo = edge_topology(faces)
    edge_faces, edges = torch.from_numpy(topo.edge_faces), torch.from_numpy(topo.edges)
    assert bool((edge_faces < 0).any())
    pairs = [(normal_consistency, normal_consistency_reference, (faces, edge_faces)),
             (laplacian_smoothing, laplacian_smoothing_reference, (edges,))]
    for fast, ref, args in pairs:
        value, grad = _value_and_grad(fast, verts, *args)
        value_ref, grad_ref = _value_and_grad(ref, verts, *args)
        assert value == pytest.approx(value_ref, rel=1e-5)
        torch.testing.assert_close(grad, grad_ref, atol=1e-5 * float(grad_ref.abs().max()), rtol=0)
    # A vertex with no edges gets no Laplacian gradient.
    isolated = torch.cat([verts, torch.ones(1, 3)])
    assert float(_value_and_grad(laplacian_smoothing, isolated, edges)[1][-1].abs().max()) == 0.0
    # No interior edge / no edge at all: 0, with a zero gradient.
    assert _value_and_grad(normal_consistency, verts, faces[:1], torch.tensor([[0, -1]]))[0] == 0.0

    gen = torch.Generator().manual_seed(3)
    sdf = 3 * torch.randn(400, generator=gen)
    sign_edges = torch.randint(0, 400, (3000, 2), generator=gen)
    value, grad = _value_and_grad(sdf_sign_regularizer, sdf, sign_edges)
    value_ref, grad_ref = _value_and_grad(sdf_sign_regularizer_reference, sdf, sign_edges)
    assert value == pytest.approx(value_ref, rel=1e-5)
    torch.testing.assert_close(grad, grad_ref, atol=1e-6, rtol=0)
    same_side = torch.ones(400)
    value, grad = _value_and_grad(sdf_sign_regularizer, same_side, sign_edges)
    assert value == 0.0 and torch.equal(grad, torch.zeros(400))


def test_owner_split_scatters_do_not_depend_on_the_number_of_work_items():
    """Each work item adds only into the rows it owns, in the serial loop's order: the gradients are the
    same bit for bit with 1 item (serial) and any other count."""
    from recon.geometry import _kernels as K

    verts_t, faces_t = _open_bumpy_sphere()
    verts, faces = verts_t.numpy(), faces_t.long().numpy()
    topo = edge_topology(faces_t)
    edges, edge_faces = topo.edges.astype(np.int64), topo.edge_faces.astype(np.int64)
    rng = np.random.default_rng(0)
    grad = rng.standard_normal(verts.shape).astype(np.float32)
    cross, length = K.face_cross_kernel(verts, faces)
    normals = K.unit_normals_kernel(cross, length)
    _, count = K.normal_consistency_forward_kernel(normals, edge_faces)
    _, lap, degree, lap_count = K.laplacian_forward_kernel(verts, edges)
    sdf = rng.standard_normal(verts.shape[0]).astype(np.float32)
    crossed = edges[(sdf[edges[:, 0]] > 0) != (sdf[edges[:, 1]] > 0)]
    crossings = rng.standard_normal((crossed.shape[0], 3)).astype(np.float32)
    grad_crossings = rng.standard_normal((crossed.shape[0], 3)).astype(np.float32)
    order = np.arange(crossed.shape[0])

    def outputs(items: int) -> list[np.ndarray]:
        return [
            K.vertex_normals_kernel(verts, faces, items),
            K.vertex_normals_backward_kernel(verts, faces, grad, items),
            K.normal_consistency_backward_kernel(verts, faces, normals, length, edge_faces, count, 0.3, items),
            K.laplacian_backward_kernel(lap, degree, edges, lap_count, 0.3, items),
            K.sdf_sign_kernel(sdf, crossed, items)[1],
            *K.crossing_backward_kernel(verts, sdf, crossed, order, crossings, grad_crossings, items),
        ]

    serial = outputs(1)
    assert all(float(np.abs(out).max()) > 0 for out in serial)
    for items in (2, 3, 7):
        for got, want in zip(outputs(items), serial, strict=True):
            assert np.array_equal(got, want)


def test_sign_regularizer_over_the_crossed_edges_equals_it_over_the_whole_band():
    from recon.config import load_config
    from recon.geometry.tets import lattice_vertices
    from recon.refine.train import _Geometry

    cfg = load_config("tiny").refine
    lattice = lattice_vertices(cfg.grid, cfg.bound)
    gen = torch.Generator().manual_seed(4)
    sdf = (0.3 - lattice.norm(dim=-1)) / cfg.cell + 0.3 * torch.randn(lattice.shape[0], generator=gen)
    geometry = _Geometry(sdf, cfg)
    band = geometry.rebuild_band(1)
    _, _, band_sdf, crossed = geometry.extract()
    assert 0 < crossed.shape[0] < band.edges.shape[0] / 4
    full = _value_and_grad(sdf_sign_regularizer, band_sdf.detach(), band.edges)
    part = _value_and_grad(sdf_sign_regularizer, band_sdf.detach(), crossed)
    assert part[0] == pytest.approx(full[0], rel=1e-6)
    torch.testing.assert_close(part[1], full[1], atol=1e-9, rtol=0)


def test_vertex_normal_kernel_matches_the_torch_code():
    verts, faces = _open_bumpy_sphere()
    fast = vertex_normals(verts, faces)
    torch.testing.assert_close(fast, vertex_normals_reference(verts, faces), atol=1e-6, rtol=0)
    # With a gradient to track, the kernels' backward gives the torch code's gradient (shading moves the
    # geometry through these normals).
    weights = torch.randn(verts.shape, generator=torch.Generator().manual_seed(3))
    tracked, reference = verts.clone().requires_grad_(), verts.clone().requires_grad_()
    (vertex_normals(tracked, faces) * weights).sum().backward()
    (vertex_normals_reference(reference, faces) * weights).sum().backward()
    scale = float(reference.grad.abs().max())
    torch.testing.assert_close(tracked.grad, reference.grad, atol=1e-5 * scale, rtol=0)


def test_vertex_normal_gradient_matches_finite_differences():
    verts, faces = _open_bumpy_sphere()
    verts = verts.double()
    weights = torch.randn(verts.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    tracked = verts.float().clone().requires_grad_()
    (vertex_normals(tracked, faces) * weights.float()).sum().backward()
    rng = np.random.default_rng(5)
    for vertex in rng.choice(verts.shape[0], 6, replace=False):
        for axis in range(3):
            step = torch.zeros_like(verts)
            step[vertex, axis] = 1e-6
            plus = (vertex_normals_reference(verts + step, faces) * weights).sum()
            minus = (vertex_normals_reference(verts - step, faces) * weights).sum()
            numeric = float(plus - minus) / 2e-6
            assert float(tracked.grad[vertex, axis]) == pytest.approx(numeric, rel=2e-3, abs=1e-2)


def test_band_state_kernels_match_the_torch_code():
    from recon.config import load_config
    from recon.extract import with_floor
    from recon.geometry.tets import lattice_vertices
    from recon.ops import take_rows
    from recon.refine.train import _Geometry

    cfg = load_config("tiny", ["refine.offset_grid_steps=0"]).refine  # the lattice's own values learn
    lattice = lattice_vertices(cfg.grid, cfg.bound)
    gen = torch.Generator().manual_seed(5)
    sdf = (0.3 - lattice.norm(dim=-1)) / cfg.cell
    geometry = _Geometry(sdf, cfg, floor=-0.2)
    with torch.no_grad():
        geometry.deform.copy_(torch.randn(geometry.deform.shape, generator=gen))
        # A few ties of the sdf and the floor cut: torch.minimum halves the gradient there.
        v = geometry.rebuild_band(1).verts
        geometry.sdf[v[:50]] = geometry.sdf_cap[v[:50]]
    weights = torch.randn(v.shape[0], 3, generator=gen), torch.randn(v.shape[0], generator=gen)

    def value_and_grads(fast: bool):
        geometry.zero_grad(set_to_none=True)
        if fast:
            pos, band_sdf = geometry.band_state()
        else:
            scale = geometry.max_deform * geometry.cell
            pos = geometry.lattice[v] + scale * torch.tanh(take_rows(geometry.deform, v))
            band_sdf = with_floor(take_rows(geometry.sdf, v), geometry.sdf_cap[v], 0.0)
        ((pos * weights[0]).sum() + (band_sdf * weights[1]).sum()).backward()
        return pos.detach(), band_sdf.detach(), geometry.deform.grad.clone(), geometry.sdf.grad.clone()

    fast, ref = value_and_grads(True), value_and_grads(False)
    assert torch.equal(fast[0], ref[0]) and torch.equal(fast[1], ref[1])  # the same operations
    for fast_grad, ref_grad in zip(fast[2:], ref[2:], strict=True):
        torch.testing.assert_close(fast_grad, ref_grad, atol=1e-6, rtol=1e-6)
    assert float(geometry.sdf.grad[v[:50]].abs().sum()) > 0

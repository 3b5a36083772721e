"""Mesh and SDF regularisers of the refinement stage.

Each is pure torch (device-agnostic, the ``*_reference`` functions); float32 CPU tensors take numba
kernels with hand-written backward passes instead, tested against the
torch code: the torch versions gather, scatter and allocate a face- or edge-sized temporary per operation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from recon.geometry import _kernels as kernels
from recon.ops import cpu_float32, numpy_of, take_rows


def face_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """[F, 3] unit face normals (counter-clockwise faces point outwards)."""
    f = faces.long()
    v0, v1, v2 = take_rows(verts, f[:, 0]), take_rows(verts, f[:, 1]), take_rows(verts, f[:, 2])
    return torch.nn.functional.normalize(torch.linalg.cross(v1 - v0, v2 - v0, dim=-1), dim=-1)


class _NormalConsistency(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts: Tensor, faces: np.ndarray, edge_faces: np.ndarray) -> Tensor:
        v = numpy_of(verts)
        cross, length = kernels.face_cross_kernel(v, faces)
        normals = kernels.unit_normals_kernel(cross, length)
        loss, count = kernels.normal_consistency_forward_kernel(normals, edge_faces)
        ctx.save_for_backward(verts)
        ctx.state = (faces, edge_faces, normals, length, count)
        return verts.new_tensor(loss)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (verts,) = ctx.saved_tensors
        faces, edge_faces, normals, length, count = ctx.state
        if count == 0:
            return torch.zeros_like(verts), None, None
        g = kernels.normal_consistency_backward_kernel(numpy_of(verts), faces, normals, length, edge_faces, count,
                                                       float(grad), kernels.owner_items())
        return torch.from_numpy(g), None, None


def normal_consistency(verts: Tensor, faces: Tensor, edge_faces: Tensor) -> Tensor:
    """Mean ``1 - cos`` between the normals of the two faces beside each interior edge (0 without any).

    Args:
        verts: [V, 3]; faces: [F, 3].
        edge_faces: [E, 2] face indices per edge (-1 for none), e.g. ``edge_topology(faces).edge_faces``.
    """
    if cpu_float32(verts, faces, edge_faces):
        return _NormalConsistency.apply(verts, numpy_of(faces.long()), numpy_of(edge_faces.long()))
    return normal_consistency_reference(verts, faces, edge_faces)


def normal_consistency_reference(verts: Tensor, faces: Tensor, edge_faces: Tensor) -> Tensor:
    """``normal_consistency`` in torch (any device)."""
    ef = edge_faces.long()
    both = (ef >= 0).all(dim=1)
    if not bool(both.any()):
        return verts.sum() * 0
    n = face_normals(verts, faces)
    a, b = take_rows(n, ef[both, 0]), take_rows(n, ef[both, 1])
    return (1 - (a * b).sum(-1)).mean()


class _Laplacian(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts: Tensor, edges: np.ndarray) -> Tensor:
        loss, lap, degree, count = kernels.laplacian_forward_kernel(numpy_of(verts), edges)
        ctx.state = (lap, degree, edges, count)
        ctx.shape = verts.shape
        return verts.new_tensor(loss)

    @staticmethod
    def backward(ctx, grad: Tensor):
        lap, degree, edges, count = ctx.state
        if count == 0:
            return torch.zeros(ctx.shape), None
        g = kernels.laplacian_backward_kernel(lap, degree, edges, count, float(grad), kernels.owner_items())
        return torch.from_numpy(g), None


def laplacian_smoothing(verts: Tensor, edges: Tensor) -> Tensor:
    """Mean squared length of the uniform Laplacian ``v - mean(neighbours)`` over vertices with neighbours
    (0 without any).

    Args:
        verts: [V, 3]; edges: [E, 2] unique undirected edges.
    """
    if cpu_float32(verts, edges):
        return _Laplacian.apply(verts, numpy_of(edges.long()))
    return laplacian_smoothing_reference(verts, edges)


def laplacian_smoothing_reference(verts: Tensor, edges: Tensor) -> Tensor:
    """``laplacian_smoothing`` in torch (any device)."""
    e = edges.long()
    V = verts.shape[0]
    total = torch.zeros_like(verts)
    total.index_add_(0, e[:, 0], take_rows(verts, e[:, 1]))
    total.index_add_(0, e[:, 1], take_rows(verts, e[:, 0]))
    degree = torch.zeros(V, dtype=verts.dtype, device=verts.device)
    ones = torch.ones(e.shape[0], dtype=verts.dtype, device=verts.device)
    degree.index_add_(0, e[:, 0], ones)
    degree.index_add_(0, e[:, 1], ones)
    has = degree > 0
    if not bool(has.any()):
        return verts.sum() * 0
    lap = verts[has] - total[has] / degree[has, None]
    return (lap**2).sum(-1).mean()


class _SdfSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sdf: Tensor, edges: np.ndarray) -> Tensor:
        loss, grad = kernels.sdf_sign_kernel(numpy_of(sdf), edges, kernels.owner_items())
        ctx.grad = grad
        return sdf.new_tensor(loss)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return torch.from_numpy(ctx.grad) * grad, None


def sdf_sign_regularizer(sdf: Tensor, edges: Tensor) -> Tensor:
    """DMTet's regulariser: on edges whose ends differ in sign, binary cross-entropy of each end's sdf
    (as a logit) against the other end's side, summed over the two ends and averaged over those edges
    (0 without any). Discourages spurious sign flips (floaters, bumps).

    Args:
        sdf: [N] values (inside where > 0); edges: [E, 2] index pairs into ``sdf``.
    """
    if cpu_float32(sdf, edges):
        return _SdfSign.apply(sdf, numpy_of(edges.long()))
    return sdf_sign_regularizer_reference(sdf, edges)


def sdf_sign_regularizer_reference(sdf: Tensor, edges: Tensor) -> Tensor:
    """``sdf_sign_regularizer`` in torch (any device)."""
    with torch.no_grad():
        crossing = ((sdf[edges[:, 0]] > 0) != (sdf[edges[:, 1]] > 0)).nonzero()[:, 0]
    if crossing.numel() == 0:
        return sdf.sum() * 0
    sa, sb = take_rows(sdf, edges[crossing, 0]), take_rows(sdf, edges[crossing, 1])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    return bce(sa, (sb > 0).to(sa.dtype)) + bce(sb, (sa > 0).to(sb.dtype))


def smooth_vertex_normals(normals: Tensor, edges: Tensor, iterations: int) -> Tensor:
    """[V, 3] unit normals averaged with their 1-ring ``iterations`` times (no gradient needed).

    DMTet surfaces carry cell-scale bumps; shading them gives speckle that the albedo would have to
    cancel. Averaging over a few rings keeps the shape's shading and drops the bumps'.
    """
    e = edges.long()
    if normals.device.type == "cpu" and normals.dtype == torch.float32:
        return torch.from_numpy(kernels.smooth_normals_kernel(normals.detach().contiguous().numpy(),
                                                              e.contiguous().numpy(), iterations))
    return smooth_vertex_normals_reference(normals, e, iterations)


def smooth_vertex_normals_reference(normals: Tensor, edges: Tensor, iterations: int) -> Tensor:
    """``smooth_vertex_normals`` in torch (any device); the CPU runs a numba kernel equal to it within 1e-6."""
    e = edges.long()
    n = normals
    for _ in range(iterations):
        total = n.clone()
        total.index_add_(0, e[:, 0], n[e[:, 1]])
        total.index_add_(0, e[:, 1], n[e[:, 0]])
        n = torch.nn.functional.normalize(total, dim=-1)
    return n

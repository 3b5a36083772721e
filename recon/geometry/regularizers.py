"""Mesh and SDF regularisers of the refinement stage (pure torch, device-agnostic)."""

from __future__ import annotations

import torch
from torch import Tensor

from recon.geometry import _kernels as kernels
from recon.ops import take_rows


def face_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """[F, 3] unit face normals (counter-clockwise faces point outwards)."""
    f = faces.long()
    v0, v1, v2 = take_rows(verts, f[:, 0]), take_rows(verts, f[:, 1]), take_rows(verts, f[:, 2])
    return torch.nn.functional.normalize(torch.linalg.cross(v1 - v0, v2 - v0, dim=-1), dim=-1)


def normal_consistency(verts: Tensor, faces: Tensor, edge_faces: Tensor) -> Tensor:
    """Mean ``1 - cos`` between the normals of the two faces beside each interior edge.

    Args:
        edge_faces: [E, 2] face indices per edge (-1 for none), e.g. ``edge_topology(faces).edge_faces``.
    """
    ef = edge_faces.long()
    both = (ef >= 0).all(dim=1)
    if not bool(both.any()):
        return verts.sum() * 0
    n = face_normals(verts, faces)
    a, b = take_rows(n, ef[both, 0]), take_rows(n, ef[both, 1])
    return (1 - (a * b).sum(-1)).mean()


def laplacian_smoothing(verts: Tensor, edges: Tensor) -> Tensor:
    """Mean squared length of the uniform Laplacian ``v - mean(neighbours)`` over vertices with neighbours.

    Args:
        edges: [E, 2] unique undirected edges.
    """
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


def sdf_sign_regularizer(sdf: Tensor, edges: Tensor) -> Tensor:
    """DMTet's regulariser: on edges whose ends differ in sign, binary cross-entropy of each end's sdf
    (as a logit) against the other end's side. Discourages spurious sign flips (floaters, bumps).

    Args:
        sdf: [N] values (inside where > 0); edges: [E, 2] index pairs into ``sdf``.
    """
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

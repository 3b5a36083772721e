"""Feature-preserving mesh denoising: bilateral filtering of the face normals, then vertices moved onto the
filtered normals' planes (the scheme of Zheng et al. 2011, "Bilateral normal filtering for mesh denoising",
with the vertex update of Sun et al. 2007).

Why bilateral, not Laplacian or Taubin: the refined surface carries cell-sized bumps (median normal error
5-11 degrees on the benchmark objects) next to real creases (a box's edges, a beak). A low-pass filter
removes both; weighting each neighbour by how close its normal already is (the range term) averages the
bumps of a smooth region and leaves faces across a crease out of each other's average.
"""

from __future__ import annotations

import torch
from torch import Tensor


def face_geometry(verts: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(centroids [F, 3], unit normals [F, 3], areas [F]) of the triangles ``faces`` [F, 3] of ``verts`` [V, 3]
    (counter-clockwise faces give outward normals; degenerate faces get a zero normal)."""
    tri = verts[faces]
    cross = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    double_area = cross.norm(dim=-1)
    normals = cross / double_area.clamp(min=1e-20)[:, None]
    return tri.mean(dim=1), normals, 0.5 * double_area


@torch.no_grad()
def bilateral_denoise(verts: Tensor, faces: Tensor, edge_faces: Tensor, normal_iterations: int = 10,
                      vertex_iterations: int = 20, sigma_normal: float = 0.35) -> Tensor:
    """Denoised vertex positions [V, 3] of the mesh ``verts`` [V, 3] / ``faces`` [F, 3].

    Args:
        edge_faces: [E, 2] the two faces beside each edge (-1 where there is none; ``EdgeTopology``): the
            neighbours whose normals are averaged.
        normal_iterations: bilateral passes over the face normals. Each face's new normal is the
            normalised sum over itself and its edge neighbours j of area_j * exp(-|c_i - c_j|^2 / 2 s_c^2)
            * exp(-|n_i - n_j|^2 / 2 sigma_normal^2) * n_j, with s_c the mean distance between neighbouring
            centroids (the mesh's own scale, so the filter does not depend on the object's units).
        vertex_iterations: passes that move each vertex by the mean over its faces of n_f (n_f . (c_f - x)),
            which puts the faces on the planes of their filtered normals (centroids recomputed each pass).
        sigma_normal: the range term's scale (0.35 is the normal difference of a 20-degree turn): across a
            60-degree crease a neighbour weighs 2% of an aligned one.
    Returns:
        [V, 3] new positions; the faces are unchanged. Zero iterations return a copy of ``verts``.
    """
    device = verts.device
    out = verts.clone()
    if normal_iterations <= 0 or vertex_iterations <= 0 or faces.shape[0] == 0:
        return out
    pairs = edge_faces[(edge_faces >= 0).all(dim=1)].long()
    rows = torch.cat([pairs[:, 0], pairs[:, 1]])
    cols = torch.cat([pairs[:, 1], pairs[:, 0]])
    centroids, normals, areas = face_geometry(out, faces)
    dist2 = (centroids[rows] - centroids[cols]).pow(2).sum(dim=-1)
    sigma_c2 = dist2.sqrt().mean().clamp(min=1e-20) ** 2
    spatial = areas[cols] * torch.exp(-dist2 / (2 * sigma_c2))
    for _ in range(normal_iterations):
        weight = spatial * torch.exp(-(normals[rows] - normals[cols]).pow(2).sum(dim=-1) / (2 * sigma_normal ** 2))
        summed = (areas[:, None] * normals).index_add(0, rows, weight[:, None] * normals[cols])
        normals = summed / summed.norm(dim=-1, keepdim=True).clamp(min=1e-20)
    flat = faces.reshape(-1)
    count = torch.zeros(out.shape[0], device=device, dtype=out.dtype).index_add_(
        0, flat, torch.ones(flat.shape[0], device=device, dtype=out.dtype)).clamp(min=1)
    for _ in range(vertex_iterations):
        tri = out[faces]
        centroids = tri.mean(dim=1)
        offsets = ((centroids[:, None, :] - tri) * normals[:, None, :]).sum(dim=-1)  # [F, 3]
        moves = (offsets[..., None] * normals[:, None, :]).reshape(-1, 3)
        out = out + torch.zeros_like(out).index_add_(0, flat, moves) / count[:, None]
    return out

"""Baking into textures: rasterize the mesh in UV space with recon.render, look each texel's 3D point up
on the full-resolution surface (the decimated mesh only carries the atlas), evaluate the colour there,
then fill the gutters so that no seam shows at any mip level. Optionally a tangent-space normal map of
the full-resolution surface, expressed in the decimated mesh's tangent frames (glTF's convention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from recon.geometry.closest import ClosestPoint
from recon.render import rasterize


def uv_rasterize(uvs: Tensor, faces: Tensor, size: int) -> Tensor:
    """Rasterize a mesh in UV space.

    Args:
        uvs: [V, 2] glTF-convention UVs (v down); texel (i, j) centre is ((j + 0.5) / size, (i + 0.5) / size).
    Returns:
        [1, size, size, 4] rast (u, v, z/w, triangle_id + 1) with row i = texel row i.
    """
    pos = torch.stack([uvs[:, 0] * 2 - 1, 1 - uvs[:, 1] * 2, torch.zeros_like(uvs[:, 0]),
                       torch.ones_like(uvs[:, 0])], dim=1)[None].contiguous()
    return rasterize(pos.float(), faces.int(), (size, size))


def fill_gutters(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Give every uncovered texel the value of the nearest covered one (a full dilation), so bilinear
    lookups at chart borders and every mip level see chart colours, never a background."""
    if covered.all() or not covered.any():
        return image
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return image[iy, ix]


@dataclass
class Texels:
    """The texels a mesh covers in its atlas.

    Attributes:
        covered: [S, S] bool, texel centre inside some triangle.
        points: [P, 3] float64 3D position of each covered texel (row-major order of ``covered``).
        face: [P] int64 triangle of each; bary: [P, 3] its barycentric weights.
    """

    covered: np.ndarray
    points: np.ndarray
    face: np.ndarray
    bary: np.ndarray


def atlas_texels(verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray, size: int) -> Texels:
    """Rasterize the atlas at ``size``² and interpolate each covered texel's 3D position."""
    f = torch.from_numpy(np.asarray(faces, np.int64))
    rast = uv_rasterize(torch.from_numpy(np.asarray(uvs, np.float32)), f, size)[0]
    covered = (rast[..., 3] > 0).numpy()
    sel = torch.from_numpy(covered)
    face = rast[..., 3][sel].long().numpy() - 1
    b1, b2 = rast[..., 0][sel].double().numpy(), rast[..., 1][sel].double().numpy()
    bary = np.stack([b1, b2, 1.0 - b1 - b2], axis=1)
    tri = np.asarray(verts, np.float64)[np.asarray(faces, np.int64)[face]]
    points = (tri * bary[..., None]).sum(axis=1)
    return Texels(covered, points, face, bary)


def bake_colors(texels: Texels, color_fn: Callable[[Tensor], Tensor], source: ClosestPoint | None = None,
                chunk: int = 262_144) -> np.ndarray:
    """[S, S, 3] float32 texture of ``color_fn`` (world points [P, 3] -> RGB [P, 3] in [0, 1]) at the texels,
    gutters filled. With ``source``, each texel's point is first moved to the closest point of that
    (full-resolution) surface, where the colour field was fitted."""
    points = texels.points if source is None else source.query(texels.points)[0]
    pts = torch.from_numpy(points).float()
    with torch.no_grad():
        cols = torch.cat([color_fn(p) for p in pts.split(chunk)]) if len(pts) else torch.zeros(0, 3)
    size = texels.covered.shape[0]
    tex = np.zeros((size, size, 3), np.float32)
    tex[texels.covered] = cols.float().clamp(0, 1).cpu().numpy()
    return fill_gutters(tex, texels.covered)


def bake_texture(verts: Tensor, faces: Tensor, uvs: Tensor, color_fn: Callable[[Tensor], Tensor],
                 size: int = 1024, source: ClosestPoint | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bake ``color_fn`` into a ``size``² texture of the mesh's atlas.

    Returns:
        texture [size, size, 3] float32 (gutters filled) and the coverage mask [size, size] bool.
    """
    texels = atlas_texels(np.asarray(verts), np.asarray(faces), np.asarray(uvs), size)
    return bake_colors(texels, color_fn, source), texels.covered


# ---------------------------------------------------------------------------------------------------
# Normals and tangent frames.


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[V, 3] float64 area-weighted unit vertex normals: ``recon.render.views.vertex_normals`` on arrays."""
    from recon.render.views import vertex_normals as normals_of

    return normals_of(torch.from_numpy(np.asarray(verts, np.float64)),
                      torch.from_numpy(np.asarray(faces, np.int64))).numpy()


def vertex_tangents(verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """[V, 4] glTF tangents: xyz the unit direction of increasing u, orthogonal to the normal; w = ±1 so
    that ``cross(normal, xyz) * w`` is the direction of decreasing glTF v (the texture's up, +Y of a
    normal map, as glTF and its reference viewer take it).

    Per-face UV derivatives are summed (area-weighted) at the vertices; vertices on UV seams are split,
    so a vertex belongs to one chart and its handedness is well defined.
    """
    p = verts[faces]
    t = uvs[faces].astype(np.float64)
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    s1, t1 = t[:, 1, 0] - t[:, 0, 0], t[:, 1, 1] - t[:, 0, 1]
    s2, t2 = t[:, 2, 0] - t[:, 0, 0], t[:, 2, 1] - t[:, 0, 1]
    det = s1 * t2 - s2 * t1
    # Weighting by the face's 3D area: dP/du times |det| (the UV area) times (3D area / UV area).
    area3 = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)
    w = np.where(np.abs(det) > 1e-20, area3 / np.maximum(np.abs(det), 1e-20), 0.0)
    dpdu = (e1 * t2[:, None] - e2 * t1[:, None]) * (np.sign(det) * w)[:, None]
    dpdv = (e2 * s1[:, None] - e1 * s2[:, None]) * (np.sign(det) * w)[:, None]
    tu = np.zeros_like(verts, dtype=np.float64)
    tv = np.zeros_like(verts, dtype=np.float64)
    for k in range(3):
        np.add.at(tu, faces[:, k], dpdu)
        np.add.at(tv, faces[:, k], dpdv)
    tu -= normals * (normals * tu).sum(1, keepdims=True)
    norm = np.linalg.norm(tu, axis=1, keepdims=True)
    # Degenerate (no UV extent): any unit vector orthogonal to the normal.
    fallback = np.cross(normals, np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
    tu = np.where(norm > 1e-12, tu / np.maximum(norm, 1e-20), fallback / np.linalg.norm(fallback, axis=1,
                                                                                       keepdims=True))
    handed = np.where((np.cross(normals, tu) * -tv).sum(1) < 0, -1.0, 1.0)
    return np.concatenate([tu, handed[:, None]], axis=1)


def tangent_frames(texels: Texels, faces: np.ndarray, normals: np.ndarray, tangents: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per texel the (t, b, n) frame a glTF viewer builds from interpolated vertex normals and tangents:
    n = normalize(lerp N), t = normalize(lerp T minus its n component), b = cross(n, t) * w."""
    idx = faces[texels.face]
    n = (normals[idx] * texels.bary[..., None]).sum(1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    t = (tangents[idx, :3] * texels.bary[..., None]).sum(1)
    t -= n * (n * t).sum(1, keepdims=True)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-20)
    b = np.cross(n, t) * tangents[idx[:, 0], 3:4]
    return t, b, n


def bake_normal_map(texels: Texels, faces: np.ndarray, normals: np.ndarray, tangents: np.ndarray,
                    source: ClosestPoint, source_normals: np.ndarray) -> np.ndarray:
    """[S, S, 3] float32 tangent-space normal map in [0, 1] (``0.5 n + 0.5``): at each texel, the
    full-resolution surface's interpolated normal at the closest point, in the texel's tangent frame;
    gutters filled by dilation."""
    _, face, bary = source.query(texels.points)
    high = (source_normals[source.faces[face]] * bary[..., None]).sum(1)
    high /= np.maximum(np.linalg.norm(high, axis=1, keepdims=True), 1e-20)
    t, b, n = tangent_frames(texels, faces, normals, tangents)
    local = np.stack([(high * t).sum(1), (high * b).sum(1), (high * n).sum(1)], axis=1)
    local[:, 2] = np.maximum(local[:, 2], 0.0)  # never point into the surface
    local /= np.maximum(np.linalg.norm(local, axis=1, keepdims=True), 1e-20)
    size = texels.covered.shape[0]
    tex = np.zeros((size, size, 3), np.float32)
    tex[texels.covered] = (0.5 * local + 0.5).astype(np.float32)
    return fill_gutters(tex, texels.covered)


def decode_normal_map(texture: np.ndarray, texels: Texels, faces: np.ndarray, normals: np.ndarray,
                      tangents: np.ndarray) -> np.ndarray:
    """[P, 3] world normals a glTF viewer reads back from ``texture`` at the covered texels (the inverse of
    ``bake_normal_map``; used by tests and previews)."""
    local = texture[texels.covered].astype(np.float64) * 2 - 1
    t, b, n = tangent_frames(texels, faces, normals, tangents)
    world = local[:, :1] * t + local[:, 1:2] * b + local[:, 2:] * n
    return world / np.maximum(np.linalg.norm(world, axis=1, keepdims=True), 1e-20)

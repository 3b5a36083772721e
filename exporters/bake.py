"""Baking a colour field into a texture: rasterize the mesh in UV space with recon.render, evaluate the
field at each texel's 3D position, then fill the gutters so that no seam shows at any mip level."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from recon.render import interpolate, rasterize


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
    """Give every uncovered texel the value of the nearest covered one (a full dilation)."""
    if covered.all() or not covered.any():
        return image
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return image[iy, ix]


def bake_texture(
    verts: Tensor,
    faces: Tensor,
    uvs: Tensor,
    color_fn: Callable[[Tensor], Tensor],
    size: int = 1024,
    chunk: int = 262_144,
) -> tuple[np.ndarray, np.ndarray]:
    """Bake ``color_fn`` (world points [P, 3] -> RGB [P, 3] in [0, 1]) into a ``size``² texture.

    Returns:
        texture [size, size, 3] float32 (gutters filled) and the coverage mask [size, size] bool.
    """
    rast = uv_rasterize(uvs, faces, size)
    points = interpolate(verts.float(), rast, faces.int())[0]
    covered = (rast[0, ..., 3] > 0).numpy()
    tex = np.zeros((size, size, 3), np.float32)
    pts = points[torch.from_numpy(covered)]
    with torch.no_grad():
        cols = torch.cat([color_fn(p) for p in pts.split(chunk)]) if len(pts) else torch.zeros(0, 3)
    tex[covered] = cols.float().clamp(0, 1).numpy()
    return fill_gutters(tex, covered), covered

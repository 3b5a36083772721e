"""Rendering a refined surface: albedo from the field at interpolated surface points, optional SG shading.

``render_surface`` is differentiable (the extra-loss hook renders through it); ``render_asset`` renders a
finished ``RefinedAsset`` without gradients, supersampled, for previews and evaluation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon.data.cameras import Cameras
from recon.render import antialias, interpolate, rasterize
from recon.render.views import clip_positions, vertex_normals
from recon.types import RefinedAsset


def render_surface(verts: Tensor, faces: Tensor, albedo: torch.nn.Module, light: torch.nn.Module | None,
                   cameras: Cameras, background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                   chunk: int = 65536) -> dict[str, Tensor]:
    """Render the surface in every camera (one batch).

    Args:
        verts: [V, 3]; faces: [F, 3] (counter-clockwise from outside).
        albedo: maps [P, 3] points to [P, 3] sRGB albedo; light: an ``SGLight`` or None for albedo only.
    Returns:
        'rgb' [B, H, W, 3] antialiased over ``background``, 'alpha' [B, H, W] antialiased coverage,
        'normal' [B, H, W, 3] unit world normals (0 where uncovered), 'rast' the rasterizer output.
    """
    tri = faces.int().contiguous()
    pos = clip_positions(verts, cameras)
    rast = rasterize(pos, tri, (cameras.height, cameras.width))
    covered = rast[..., 3] > 0
    points = interpolate(verts, rast, tri)
    normals = torch.nn.functional.normalize(interpolate(vertex_normals(verts, faces), rast, tri), dim=-1)
    idx = covered.nonzero(as_tuple=True)
    p = points[idx]
    colors = torch.cat([albedo(p[i:i + chunk]) for i in range(0, p.shape[0], chunk)]) if p.shape[0] else p
    if light is not None and p.shape[0]:
        colors = light.shade(colors, normals[idx])
    bg = torch.tensor(background, dtype=verts.dtype, device=verts.device)
    image = bg.expand(*covered.shape, 3).clone()
    image = image.index_put(idx, colors)
    alpha = covered.to(verts.dtype)[..., None]
    out = antialias(torch.cat([image, alpha], dim=-1), rast, pos, tri)
    normal_image = torch.where(covered[..., None], normals, torch.zeros_like(normals))
    return {"rgb": out[..., :3], "alpha": out[..., 3], "normal": normal_image, "rast": rast}


@torch.no_grad()
def render_asset(asset: RefinedAsset, cameras: Cameras, shaded: bool = False, supersample: int = 2,
                 background: tuple[float, float, float] = (1.0, 1.0, 1.0), chunk: int = 4) -> dict[str, Tensor]:
    """Render a refined asset in every camera, supersampled and averaged down.

    Returns 'rgb' [N, H, W, 3] (albedo only, or shaded by the fitted light), 'alpha' [N, H, W] and
    'normal' [N, H, W, 3] (world normals mapped to colours ``0.5 n + 0.5`` over the background).
    """
    s = max(1, int(supersample))
    hi = cameras.scaled(cameras.width * s, cameras.height * s)
    bg = torch.tensor(background)
    outs: dict[str, list[Tensor]] = {"rgb": [], "alpha": [], "normal": []}
    for start in range(0, len(cameras), chunk):
        cams = hi.subset(slice(start, start + chunk))
        r = render_surface(asset.mesh.verts, asset.mesh.faces, asset.albedo, asset.light if shaded else None,
                           cams, background)
        covered = (r["rast"][..., 3] > 0)[..., None]
        normal = torch.where(covered, r["normal"] * 0.5 + 0.5, bg)
        B, H, W = r["alpha"].shape
        outs["rgb"].append(r["rgb"].reshape(B, H // s, s, W // s, s, 3).mean(dim=(2, 4)).clamp(0, 1))
        outs["alpha"].append(r["alpha"].reshape(B, H // s, s, W // s, s).mean(dim=(2, 4)))
        outs["normal"].append(normal.reshape(B, H // s, s, W // s, s, 3).mean(dim=(2, 4)))
    return {k: torch.cat(v) for k, v in outs.items()}

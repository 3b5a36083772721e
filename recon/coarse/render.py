"""Volume rendering of a field along rays, spending samples only in occupied cells."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recon.coarse.occupancy import Occupancy


@dataclass
class RayOutput:
    """Attributes:
    rgb: [R, 3] colour composited over the background.
    acc: [R] accumulated opacity.
    depth: [R] expected depth (ray parameter; 0 where nothing was hit).
    surface: [R] ray parameter where accumulated opacity first reaches ``surface_opacity`` (default 0.5;
        inf where it never does).
    samples: number of field evaluations (for speed accounting).
    distortion: [R] the weights' spread along each ray (``ray_distortion``), when asked for; else None.
    """

    rgb: Tensor
    acc: Tensor
    depth: Tensor
    surface: Tensor
    samples: int
    distortion: Tensor | None = None


def render_camera(field: nn.Module, occupancy: Occupancy, cameras, view: int, step: float, background: Tensor,
                  chunk: int = 16384, surface_opacity: float = 0.5) -> RayOutput:
    """Render every pixel of one camera, ``chunk`` rays at a time (memory stays bounded).

    Returns:
        a RayOutput whose per-ray tensors are flattened row-major over the [H, W] image.
    """
    o, d = cameras.pixel_rays(view)
    parts = [render_rays(field, occupancy, oc, dc, step, background, surface_opacity=surface_opacity)
             for oc, dc in zip(o.reshape(-1, 3).split(chunk), d.reshape(-1, 3).split(chunk), strict=True)]
    return RayOutput(rgb=torch.cat([p.rgb for p in parts]), acc=torch.cat([p.acc for p in parts]),
                     depth=torch.cat([p.depth for p in parts]), surface=torch.cat([p.surface for p in parts]),
                     samples=sum(p.samples for p in parts))


def ray_distortion(weights: Tensor, t: Tensor, step: float) -> Tensor:
    """Mip-NeRF 360's distortion of each ray's compositing weights (Barron et al., 2022), for samples spaced
    ``step`` apart: ``sum_ij w_i w_j |t_i - t_j| + step / 3 * sum_i w_i^2``, in linear time by prefix sums.

    Small when the weights sit in one short stretch of the ray (a surface), large when they are spread
    along it (fog). Args: weights, t: [R, n] (t increasing along each row). Returns [R], world units.
    """
    before_w = torch.cumsum(weights, dim=1) - weights  # sum of w_j over j < i
    before_wt = torch.cumsum(weights * t, dim=1) - weights * t
    pairs = 2 * (weights * (t * before_w - before_wt)).sum(1)
    return pairs + step / 3 * (weights * weights).sum(1)


def ray_distortion_reference(weights: Tensor, t: Tensor, step: float) -> Tensor:
    """``ray_distortion`` by the quadratic double sum (tests)."""
    gaps = (t[:, :, None] - t[:, None, :]).abs()
    return (weights[:, :, None] * weights[:, None, :] * gaps).sum((1, 2)) + step / 3 * (weights**2).sum(1)


def ray_box(origins: Tensor, dirs: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit ray parameters of the box [lo, hi] ([R] each; t_far < t_near where it misses)."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (lo - origins) * inv
    t1 = (hi - origins) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp(min=0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far


def render_rays(
    field: nn.Module,
    occupancy: Occupancy,
    origins: Tensor,
    dirs: Tensor,
    step: float,
    background: Tensor,
    jitter: bool = False,
    generator: torch.Generator | None = None,
    surface_opacity: float = 0.5,
    distortion: bool = False,
) -> RayOutput:
    """Render rays through ``field``.

    Samples are spaced ``step`` apart inside the occupied box (stratified when ``jitter``); samples in
    empty cells are skipped (zero density) and never reach the field.

    Args:
        origins, dirs: [R, 3]; dirs unit length.
        background: [3] colour behind the object.
        distortion: also return each ray's ``ray_distortion`` (differentiable).
    """
    lo, hi = occupancy.box()
    t_near, t_far = ray_box(origins, dirs, lo, hi)
    span = (t_far - t_near).clamp(min=0)
    # Enough samples to cross the longest ray's span: memory is rays x samples, bounded by the caller's chunk.
    n = max(1, int(torch.ceil(span.max() / step).item())) if span.numel() else 1
    k = torch.arange(n, dtype=origins.dtype, device=origins.device)
    offset = torch.rand(origins.shape[0], n, generator=generator, device=origins.device) if jitter else 0.5
    t = t_near[:, None] + (k[None] + offset) * step  # [R, n]
    valid = t < t_far[:, None]
    pts = origins[:, None] + dirs[:, None] * t[..., None]
    valid &= occupancy.lookup(pts)
    idx = valid.nonzero(as_tuple=True)
    sigma = torch.zeros_like(t)
    rgb = torch.zeros(*t.shape, 3, dtype=origins.dtype, device=origins.device)
    if idx[0].numel():
        s, c = field(pts[idx])
        sigma = sigma.index_put(idx, s)
        rgb = rgb.index_put(idx, c)
    alpha = 1.0 - torch.exp(-sigma * step)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], dim=1), dim=1)
    w = alpha * trans
    acc = w.sum(1)
    color = (w[..., None] * rgb).sum(1) + (1.0 - acc[:, None]) * background
    depth = (w * t).sum(1)
    with torch.no_grad():
        # Where the accumulated opacity crosses ``surface_opacity``, interpolated inside the crossing sample's interval
        # (the sample centre alone would bias the surface inwards by up to a step).
        cum = torch.cumsum(w, dim=1)
        reached = cum >= surface_opacity
        first = reached.float().argmax(dim=1, keepdim=True)
        w_k = w.gather(1, first).clamp(min=1e-8)
        before = (cum.gather(1, first) - w.gather(1, first))
        frac = ((surface_opacity - before) / w_k).clamp(0, 1)
        t_cross = t.gather(1, first) - 0.5 * step + frac * step
        surface = torch.where(reached.any(dim=1), t_cross[:, 0], torch.full_like(acc, float("inf")))
    spread = ray_distortion(w, t, step) if distortion else None
    return RayOutput(rgb=color, acc=acc, depth=depth, surface=surface, samples=int(idx[0].numel()),
                     distortion=spread)

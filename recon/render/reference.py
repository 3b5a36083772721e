"""Slow, simple twins of the fast rasterizer paths, for tests: pure torch, float64-capable, brute force
over every (pixel, triangle) pair. Only for tiny inputs."""

from __future__ import annotations

import torch
from torch import Tensor


def pixel_ndc(height: int, width: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """NDC coordinates of pixel centres: X [W] left to right, Y [H] top (+1) to bottom (-1)."""
    X = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width * 2 - 1
    Y = 1 - (torch.arange(height, dtype=dtype, device=device) + 0.5) / height * 2
    return X, Y


def homogeneous_barycentrics(pos: Tensor, tri: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Perspective-correct barycentrics and z/w of every triangle at every pixel centre.

    Returns:
        lam: [B, H, W, F, 3]; zw: [B, H, W, F]. Differentiable w.r.t. ``pos``.
    """
    X, Y = pixel_ndc(height, width, pos.dtype, pos.device)
    v = pos[:, tri.long()]  # [B, F, 3, 4]
    x, y, z, w = v[..., 0], v[..., 1], v[..., 2], v[..., 3]
    a = x[:, None, None] - X[None, None, :, None, None] * w[:, None, None]  # [B, 1, W, F, 3]
    c = y[:, None, None] - Y[None, :, None, None, None] * w[:, None, None]  # [B, H, 1, F, 3]
    a, c = torch.broadcast_tensors(a, c)
    lam = torch.linalg.cross(a, c, dim=-1)
    lam = lam / lam.sum(-1, keepdim=True)
    zw = (lam * z[:, None, None]).sum(-1) / (lam * w[:, None, None]).sum(-1)
    return lam, zw


def rasterize_reference(pos: Tensor, tri: Tensor, resolution: tuple[int, int]) -> Tensor:
    """Brute-force rasterize with nvdiffrast's output layout [B, H, W, 4] = (u, v, z/w, id + 1)."""
    H, W = resolution
    lam, zw = homogeneous_barycentrics(pos, tri, H, W)
    w_hit = (lam * pos[:, tri.long()][..., 3][:, None, None]).sum(-1)
    inside = (lam >= 0).all(-1) & (w_hit > 0) & (zw >= -1) & (zw <= 1)
    depth = torch.where(inside, zw, torch.full_like(zw, float("inf")))
    best = depth.argmin(dim=-1)  # [B, H, W]
    covered = torch.gather(inside, -1, best[..., None])[..., 0]
    lam_best = torch.gather(lam, -2, best[..., None, None].expand(*best.shape, 1, 3))[..., 0, :]
    zw_best = torch.gather(zw, -1, best[..., None])[..., 0]
    out = torch.stack([lam_best[..., 0], lam_best[..., 1], zw_best, (best + 1).to(pos.dtype)], dim=-1)
    return torch.where(covered[..., None], out, torch.zeros_like(out))


def interpolate_reference(attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
    """``u a0 + v a1 + (1 - u - v) a2`` by gathers; attr [V, C] or [B, V, C]. Autograd does the rest."""
    if attr.ndim == 2:
        attr = attr[None].expand(rast.shape[0], -1, -1)
    tid = rast[..., 3].long()
    covered = tid > 0
    f = (tid - 1).clamp(min=0)
    idx = tri.long()[f]  # [B, H, W, 3]
    B = rast.shape[0]
    bidx = torch.arange(B, device=rast.device)[:, None, None, None].expand_as(idx)
    a = attr[bidx, idx]  # [B, H, W, 3, C]
    u, v = rast[..., 0:1], rast[..., 1:2]
    out = u * a[..., 0, :] + v * a[..., 1, :] + (1 - u - v) * a[..., 2, :]
    return torch.where(covered[..., None], out, torch.zeros_like(out))

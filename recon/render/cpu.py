"""CPU backend: numba kernels (recon.render._kernels) inside torch.autograd.Functions.

Kernels run on zero-copy numpy views of contiguous float32 CPU tensors; gradients are accumulated per
work item (no atomics) and summed, so results are deterministic for a given thread count.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from recon.ops import numpy_of
from recon.render import _kernels as K
from recon.render.topology import EdgeTopology, edge_topology


def _check_pos_tri(pos: Tensor, tri: Tensor) -> None:
    if pos.ndim != 3 or pos.shape[-1] != 4:
        raise ValueError(f"pos must be [B, V, 4], got {tuple(pos.shape)}")
    if tri.ndim != 2 or tri.shape[-1] != 3:
        raise ValueError(f"tri must be [F, 3], got {tuple(tri.shape)}")
    if pos.device.type != "cpu":
        raise ValueError("the CPU rasterizer needs CPU tensors")


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos: Tensor, tri: Tensor, height: int, width: int, closed: bool) -> Tensor:
        pos_np = numpy_of(pos.float())
        tri_np = numpy_of(tri.int())
        B = pos_np.shape[0]
        rast = np.zeros((B, height, width, 4), dtype=np.float32)
        zbuf = np.full((B, height, width), np.inf, dtype=np.float32)
        scr = np.empty((B, pos_np.shape[1], 4), dtype=np.float32)
        K.project_kernel(pos_np, height, width, scr)
        K.rasterize_kernel(pos_np, scr, tri_np, height, width, K.bands_for(B, height), rast, zbuf, closed)
        out = torch.from_numpy(rast)
        ctx.save_for_backward(pos, tri, out)
        return out

    @staticmethod
    def backward(ctx, grad_rast: Tensor):
        pos, tri, rast = ctx.saved_tensors
        B, H = rast.shape[0], rast.shape[1]
        nbands = K.bands_for(B, H)
        parts = np.zeros((nbands, *pos.shape), dtype=np.float32)
        K.rasterize_backward_kernel(numpy_of(pos.float()), numpy_of(tri.int()), numpy_of(rast),
                                    numpy_of(grad_rast.float()), nbands, parts)
        grad_pos = torch.from_numpy(parts.sum(axis=0) if nbands > 1 else parts[0]).to(pos.dtype)
        return grad_pos, None, None, None, None


def rasterize(pos: Tensor, tri: Tensor, resolution: tuple[int, int], closed: bool = False) -> Tensor:
    """See recon.render.rasterize."""
    _check_pos_tri(pos, tri)
    return _Rasterize.apply(pos, tri, int(resolution[0]), int(resolution[1]), bool(closed))


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
        attr_np = numpy_of(attr.float())
        B, H, W = rast.shape[:3]
        out = np.zeros((B, H, W, attr_np.shape[2]), dtype=np.float32)
        K.interpolate_kernel(attr_np, numpy_of(rast), numpy_of(tri.int()), out)
        ctx.save_for_backward(attr, rast, tri)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        attr, rast, tri = ctx.saved_tensors
        nchunks = max(1, numba.get_num_threads())
        parts = np.zeros((nchunks, *attr.shape), dtype=np.float32)
        grad_rast = np.zeros(rast.shape, dtype=np.float32)
        K.interpolate_backward_kernel(numpy_of(attr.float()), numpy_of(rast), numpy_of(tri.int()),
                                      numpy_of(grad_out.float()), nchunks, parts, grad_rast)
        grad_attr = torch.from_numpy(parts.sum(axis=0)).to(attr.dtype) if ctx.needs_input_grad[0] else None
        return grad_attr, torch.from_numpy(grad_rast), None


def interpolate(attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
    """See recon.render.interpolate (attr already [Ba, V, C])."""
    return _Interpolate.apply(attr, rast, tri)


DEPTH_TOLERANCE = 0.05
"""Relative depth margin of the silhouette tests in ``antialias`` (see recon.render.antialias)."""


class _Antialias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, topo: EdgeTopology) -> Tensor:
        B, H, W = rast.shape[:3]
        color_np = numpy_of(color.float())
        out = color_np.copy()
        cross_edge = np.full((B, 2, H, W), -1, dtype=np.int32)
        cross_d = np.zeros((B, 2, H, W), dtype=np.float32)
        cross_up = np.zeros((B, 2, H, W), dtype=np.uint8)
        pos_np = numpy_of(pos.float())
        scr = np.empty((B, pos_np.shape[1], 4), dtype=np.float32)
        K.project_kernel(pos_np, H, W, scr)
        K.antialias_forward_kernel(color_np, pos_np, scr, numpy_of(tri.int()), numpy_of(rast), topo.edges,
                                   topo.edge_faces, DEPTH_TOLERANCE, cross_edge, cross_d, cross_up, out)
        ctx.save_for_backward(color, pos)
        ctx.crossings = (cross_edge, cross_d, cross_up)
        ctx.topo = topo
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        color, pos = ctx.saved_tensors
        cross_edge, cross_d, cross_up = ctx.crossings
        g_out = numpy_of(grad_out.float())
        grad_color = g_out.copy()
        grad_pos = np.zeros(pos.shape, dtype=np.float32)
        K.antialias_backward_kernel(numpy_of(color.float()), numpy_of(pos.float()), ctx.topo.edges, cross_edge, cross_d,
                                    cross_up, g_out, grad_color, grad_pos)
        return torch.from_numpy(grad_color), None, torch.from_numpy(grad_pos).to(pos.dtype), None, None


def antialias(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, topology: EdgeTopology | None = None) -> Tensor:
    """See recon.render.antialias."""
    _check_pos_tri(pos, tri)
    topo = topology if topology is not None else edge_topology(tri)
    return _Antialias.apply(color, rast, pos, tri, topo)

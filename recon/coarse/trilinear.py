"""Trilinear interpolation of a dense channels-last grid, differentiable w.r.t. the grid values.

A numba kernel pair inside a ``torch.autograd.Function``: torch's ``grid_sample`` 3-D backward took ~70%
of a coarse training step on a CPU (it is general: gradients for the sample positions too, other
layouts). Here positions carry no gradient, the 8 corner gathers are parallel, and the scatter of the
backward pass runs serially (no atomics; deterministic). ``torch.nn.functional.grid_sample`` with
``align_corners=True, padding_mode='border'`` is the reference it is tested against.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor


@njit(cache=True, inline="always")
def _corner(u, n):
    # u in index units; clamp to the border like padding_mode='border'
    if u < 0.0:
        u = 0.0
    top = n - 1
    if u > top:
        u = float(top)
    i0 = int(u)
    if i0 >= top:
        i0 = top - 1 if top > 0 else 0
    f = u - i0
    return i0, f


@njit(cache=True, inline="always")
def _cell(idx, p, R0, R1, R2):
    """Lower and upper corner indices and fractions of point ``p`` along each axis."""
    x0, fx = _corner(idx[p, 0], R0)
    y0, fy = _corner(idx[p, 1], R1)
    z0, fz = _corner(idx[p, 2], R2)
    return x0, min(x0 + 1, R0 - 1), fx, y0, min(y0 + 1, R1 - 1), fy, z0, min(z0 + 1, R2 - 1), fz


@njit(cache=True, parallel=True)
def _forward(grid, idx, out):
    R0, R1, R2, C = grid.shape
    for p in prange(idx.shape[0]):
        x0, x1, fx, y0, y1, fy, z0, z1, fz = _cell(idx, p, R0, R1, R2)
        for c in range(C):
            c00 = grid[x0, y0, z0, c] * (1 - fz) + grid[x0, y0, z1, c] * fz
            c01 = grid[x0, y1, z0, c] * (1 - fz) + grid[x0, y1, z1, c] * fz
            c10 = grid[x1, y0, z0, c] * (1 - fz) + grid[x1, y0, z1, c] * fz
            c11 = grid[x1, y1, z0, c] * (1 - fz) + grid[x1, y1, z1, c] * fz
            out[p, c] = (c00 * (1 - fy) + c01 * fy) * (1 - fx) + (c10 * (1 - fy) + c11 * fy) * fx


@njit(cache=True)
def _backward(grad_out, idx, grad_grid):
    R0, R1, R2, C = grad_grid.shape
    for p in range(idx.shape[0]):
        x0, x1, fx, y0, y1, fy, z0, z1, fz = _cell(idx, p, R0, R1, R2)
        for c in range(C):
            g = grad_out[p, c]
            if g == 0.0:
                continue
            gx0 = g * (1 - fx)
            gx1 = g * fx
            grad_grid[x0, y0, z0, c] += gx0 * (1 - fy) * (1 - fz)
            grad_grid[x0, y0, z1, c] += gx0 * (1 - fy) * fz
            grad_grid[x0, y1, z0, c] += gx0 * fy * (1 - fz)
            grad_grid[x0, y1, z1, c] += gx0 * fy * fz
            grad_grid[x1, y0, z0, c] += gx1 * (1 - fy) * (1 - fz)
            grad_grid[x1, y0, z1, c] += gx1 * (1 - fy) * fz
            grad_grid[x1, y1, z0, c] += gx1 * fy * (1 - fz)
            grad_grid[x1, y1, z1, c] += gx1 * fy * fz


class _Trilinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid: Tensor, idx: Tensor) -> Tensor:
        g = grid.detach().contiguous().numpy()
        i = idx.detach().contiguous().numpy()
        out = np.empty((i.shape[0], g.shape[3]), dtype=np.float32)
        _forward(g, i, out)
        ctx.save_for_backward(idx)
        ctx.grid_shape = tuple(grid.shape)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (idx,) = ctx.saved_tensors
        grad = np.zeros(ctx.grid_shape, dtype=np.float32)
        _backward(grad_out.detach().contiguous().float().numpy(), idx.contiguous().numpy(), grad)
        return torch.from_numpy(grad), None


def trilinear(grid: Tensor, x: Tensor, bound: float) -> Tensor:
    """Sample ``grid`` [X, Y, Z, C] (float32, CPU) at world points ``x`` [P, 3] in [-bound, bound]^3,
    grid points at the cube's corners (align_corners=True), clamped at the border. Returns [P, C].
    CUDA tensors use torch's grid_sample instead."""
    if grid.device.type != "cpu":
        g = grid.permute(3, 2, 1, 0)[None]  # [1, C, Z, Y, X]
        out = torch.nn.functional.grid_sample(g, (x / bound).reshape(1, 1, 1, -1, 3), mode="bilinear",
                                              padding_mode="border", align_corners=True)
        return out.reshape(grid.shape[3], -1).t()
    R = torch.tensor(grid.shape[:3], dtype=torch.float32)
    idx = ((x.detach().float() + bound) / (2 * bound)) * (R - 1)
    return _Trilinear.apply(grid, idx)

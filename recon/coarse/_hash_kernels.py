"""numba kernels of the multiresolution hash encoding on the CPU. Called only through
``recon.coarse.fields.HashEncoding`` (its torch code is the reference these are tested against).

Layout: ``u`` [P, 3] float32 points in [0, 1]^3; ``table`` [L, T, F] float32; ``resolutions`` [L] int64;
``direct`` [L] bool (the level's (res + 1)^3 grid fits the table and is indexed directly, else hashed);
output [P, L * F], level-major. Corner c of a cell has offsets (c >> 2 & 1, c >> 1 & 1, c & 1).

The forward and the gradient of the points are split over points; the gradient of the table over
levels, so no two threads add into the same entry: no atomics, and a seeded run is repeatable.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

PRIME_Y = 2654435761
PRIME_Z = 805459861


@njit(cache=True, inline="always")
def _corner_index(ix, iy, iz, res, direct, size):
    # An integer division per corner lookup is avoided where it can be (a mask, or no wrap at all);
    # the index is the reference's ``h % size`` either way (h >= 0: the corners are non-negative).
    if direct:
        # The grid fits the table, so only the far corner of a point on the upper face (weight 0) wraps.
        h = (ix * (res + 1) + iy) * (res + 1) + iz
        return h if h < size else h % size
    h = ix ^ (iy * PRIME_Y) ^ (iz * PRIME_Z)
    return h & (size - 1) if size & (size - 1) == 0 else h % size


@njit(cache=True, inline="always")
def _cell(u, p, res):
    """Lower corner (int64) and fractions (float32) of point ``p`` in a level of resolution ``res``."""
    px, py, pz = u[p, 0] * np.float32(res), u[p, 1] * np.float32(res), u[p, 2] * np.float32(res)
    bx, by, bz = math.floor(px), math.floor(py), math.floor(pz)
    return (np.int64(bx), np.int64(by), np.int64(bz),
            px - np.float32(bx), py - np.float32(by), pz - np.float32(bz))


@njit(cache=True, parallel=True)
def hash_forward_kernel(u, table, resolutions, direct, out):
    P = u.shape[0]
    L, T, F = table.shape
    for p in prange(P):
        for lvl in range(L):
            res = resolutions[lvl]
            bx, by, bz, fx, fy, fz = _cell(u, p, res)
            for f in range(F):
                out[p, lvl * F + f] = 0.0
            for c in range(8):
                ox, oy, oz = c >> 2 & 1, c >> 1 & 1, c & 1
                w = (fx if ox else 1 - fx) * (fy if oy else 1 - fy) * (fz if oz else 1 - fz)
                h = _corner_index(bx + ox, by + oy, bz + oz, res, direct[lvl], T)
                for f in range(F):
                    out[p, lvl * F + f] += w * table[lvl, h, f]


@njit(cache=True, parallel=True)
def hash_backward_table_kernel(u, grad_out, resolutions, direct, grad_table):
    """grad_table [L, T, F] (zeroed by the caller) += the encoding's transpose applied to grad_out."""
    P = u.shape[0]
    L, T, F = grad_table.shape
    for lvl in prange(L):
        res = resolutions[lvl]
        for p in range(P):
            bx, by, bz, fx, fy, fz = _cell(u, p, res)
            for c in range(8):
                ox, oy, oz = c >> 2 & 1, c >> 1 & 1, c & 1
                w = (fx if ox else 1 - fx) * (fy if oy else 1 - fy) * (fz if oz else 1 - fz)
                h = _corner_index(bx + ox, by + oy, bz + oz, res, direct[lvl], T)
                for f in range(F):
                    grad_table[lvl, h, f] += w * grad_out[p, lvl * F + f]


@njit(cache=True, parallel=True)
def hash_backward_points_kernel(u, table, grad_out, resolutions, direct, grad_u):
    """grad_u [P, 3] = d(sum grad_out * out) / du through the trilinear weights (floor is flat)."""
    P = u.shape[0]
    L, T, F = table.shape
    for p in prange(P):
        gx, gy, gz = 0.0, 0.0, 0.0
        for lvl in range(L):
            res = resolutions[lvl]
            bx, by, bz, fx, fy, fz = _cell(u, p, res)
            for c in range(8):
                ox, oy, oz = c >> 2 & 1, c >> 1 & 1, c & 1
                wx, wy, wz = (fx if ox else 1 - fx), (fy if oy else 1 - fy), (fz if oz else 1 - fz)
                h = _corner_index(bx + ox, by + oy, bz + oz, res, direct[lvl], T)
                dot = 0.0
                for f in range(F):
                    dot += grad_out[p, lvl * F + f] * table[lvl, h, f]
                sx, sy, sz = (1.0 if ox else -1.0), (1.0 if oy else -1.0), (1.0 if oz else -1.0)
                gx += dot * res * sx * wy * wz
                gy += dot * res * sy * wx * wz
                gz += dot * res * sz * wx * wy
        grad_u[p, 0] = gx
        grad_u[p, 1] = gy
        grad_u[p, 2] = gz

"""Occupancy of a triangle mesh on a regular grid, by ray parity along the three axes.

For each axis, rays run through the centres of the grid's columns; a voxel is inside along that axis
when an odd number of surface crossings lies before its centre. The three verdicts are combined by
majority vote, which is exact for watertight meshes and degrades gracefully for meshes with holes (a
hole spoils the rays through it along one axis, rarely along all three). A ray through an edge shared by
two triangles is counted once: edge functions are evaluated from the lower-index vertex and ties go to
one side, as in the rasterizer.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from recon.render._edges import edge as _edge
from recon.render._edges import inside_canonical as _inside


@njit(cache=True, inline="always")
def _projected_bounds(x0, y0, x1, y1, x2, y2, lo, step, n):
    """Signed area, orientation and the column/row ranges whose centres lie in the triangle's box."""
    area = _edge(x0, y0, x1, y1, x2, y2)
    s = 1.0 if area > 0 else -1.0
    cmin = max(int(math.ceil((min(x0, x1, x2) - lo) / step - 0.5)), 0)
    cmax = min(int(math.floor((max(x0, x1, x2) - lo) / step - 0.5)), n - 1)
    rmin = max(int(math.ceil((min(y0, y1, y2) - lo) / step - 0.5)), 0)
    rmax = min(int(math.floor((max(y0, y1, y2) - lo) / step - 0.5)), n - 1)
    return area, s, cmin, cmax, rmin, rmax


@njit(cache=True, parallel=True)
def _parity_axis(verts, faces, axis, lo, step, n):
    """[n, n, n] bool occupancy (indexed x, y, z) from rays along ``axis`` through column centres."""
    ua = (axis + 1) % 3
    va = (axis + 2) % 3
    F = faces.shape[0]
    # Pass 1: crossings per column.
    counts = np.zeros((n, n), dtype=np.int64)
    for f in range(F):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0 = verts[i0, ua], verts[i0, va]
        x1, y1 = verts[i1, ua], verts[i1, va]
        x2, y2 = verts[i2, ua], verts[i2, va]
        area, s, cmin, cmax, rmin, rmax = _projected_bounds(x0, y0, x1, y1, x2, y2, lo, step, n)
        if area == 0.0:
            continue
        for c in range(cmin, cmax + 1):
            px = lo + (c + 0.5) * step
            for r in range(rmin, rmax + 1):
                py = lo + (r + 0.5) * step
                ok, _, _ = _inside(i0, i1, i2, x0, y0, x1, y1, x2, y2, s, px, py)
                if ok:
                    counts[c, r] += 1
    offsets = np.zeros(n * n + 1, dtype=np.int64)
    for k in range(n * n):
        offsets[k + 1] = offsets[k] + counts[k // n, k % n]
    hits = np.empty(offsets[-1], dtype=np.float64)
    fill = np.zeros((n, n), dtype=np.int64)
    # Pass 2: crossing coordinates along the axis.
    for f in range(F):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0 = verts[i0, ua], verts[i0, va]
        x1, y1 = verts[i1, ua], verts[i1, va]
        x2, y2 = verts[i2, ua], verts[i2, va]
        area, s, cmin, cmax, rmin, rmax = _projected_bounds(x0, y0, x1, y1, x2, y2, lo, step, n)
        if area == 0.0:
            continue
        for c in range(cmin, cmax + 1):
            px = lo + (c + 0.5) * step
            for r in range(rmin, rmax + 1):
                py = lo + (r + 0.5) * step
                ok, e0, e1 = _inside(i0, i1, i2, x0, y0, x1, y1, x2, y2, s, px, py)
                if ok:
                    b0 = e0 * s / area
                    b1 = e1 * s / area
                    z = b0 * verts[i0, axis] + b1 * verts[i1, axis] + (1.0 - b0 - b1) * verts[i2, axis]
                    hits[offsets[c * n + r] + fill[c, r]] = z
                    fill[c, r] += 1
    occ = np.zeros((n, n, n), dtype=np.bool_)
    for k in prange(n * n):
        c = k // n
        r = k % n
        col = np.sort(hits[offsets[k]:offsets[k + 1]])
        j = 0
        for d in range(n):
            zc = lo + (d + 0.5) * step
            while j < col.shape[0] and col[j] < zc:
                j += 1
            if j % 2 == 1:
                # voxel index: axis coordinate d, the others c (ua) and r (va)
                if axis == 0:
                    occ[d, c, r] = True
                elif axis == 1:
                    occ[r, d, c] = True
                else:
                    occ[c, r, d] = True
    return occ


def occupancy_grid(verts: np.ndarray, faces: np.ndarray, resolution: int = 64, lo: float = -0.5,
                   hi: float = 0.5) -> np.ndarray:
    """[R, R, R] bool occupancy (indexed x, y, z) at voxel centres of the cube [lo, hi]^3.

    Majority vote of ray parity along x, y and z (see module docstring).
    """
    v = np.ascontiguousarray(verts, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    step = (hi - lo) / resolution
    votes = sum(_parity_axis(v, f, a, lo, step, resolution).astype(np.int8) for a in range(3))
    return votes >= 2

"""The shared-edge fill rule, in one place: the rasterizer and the IoU voxeliser both use it.

Each edge function is evaluated from its lower-index endpoint, so the two triangles sharing an edge
compute the same number with opposite sign; a point exactly on the edge goes to the triangle whose
interior lies on the positive side. A point is therefore covered by exactly one of two adjacent
triangles, whatever the floating-point rounding.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def edge(ax, ay, bx, by, px, py):
    """2D edge function of a->b at p (twice the signed area of triangle a, b, p)."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


@njit(cache=True, inline="always")
def inside_canonical(i0, i1, i2, x0, y0, x1, y1, x2, y2, s, px, py):
    """Point-in-triangle test with the canonical-edge tie rule.

    Args:
        i0, i1, i2: vertex indices (order the edges canonically).
        x*, y*: 2D vertex positions; s: +1 for a counter-clockwise (positive-area) triangle, else -1.
        px, py: the point.
    Returns:
        (inside, e0, e1): e0 and e1 are the edge functions opposite vertices 0 and 1 times ``s``, so the
        barycentrics are e0 / |area| and e1 / |area|.
    """
    if i1 < i2:
        e0, t0 = edge(x1, y1, x2, y2, px, py), 1.0
    else:
        e0, t0 = -edge(x2, y2, x1, y1, px, py), -1.0
    e0 *= s
    if e0 < 0 or (e0 == 0 and t0 * s < 0):
        return False, 0.0, 0.0
    if i2 < i0:
        e1, t1 = edge(x2, y2, x0, y0, px, py), 1.0
    else:
        e1, t1 = -edge(x0, y0, x2, y2, px, py), -1.0
    e1 *= s
    if e1 < 0 or (e1 == 0 and t1 * s < 0):
        return False, 0.0, 0.0
    if i0 < i1:
        e2, t2 = edge(x0, y0, x1, y1, px, py), 1.0
    else:
        e2, t2 = -edge(x1, y1, x0, y0, px, py), -1.0
    e2 *= s
    if e2 < 0 or (e2 == 0 and t2 * s < 0):
        return False, 0.0, 0.0
    return True, e0, e1

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
def canonical_edge(ia, ib, xa, ya, xb, yb, s, px, py):
    """Edge function of a->b at p, evaluated from the lower-index endpoint, times ``s``; and whether p
    is on the inside of that edge under the tie rule (exactly on it: inside when the un-flipped edge
    faces the triangle's interior)."""
    if ia < ib:
        e, t = edge(xa, ya, xb, yb, px, py), 1.0
    else:
        e, t = -edge(xb, yb, xa, ya, px, py), -1.0
    e *= s
    return e, not (e < 0 or (e == 0 and t * s < 0))


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
    e0, ok = canonical_edge(i1, i2, x1, y1, x2, y2, s, px, py)
    if not ok:
        return False, 0.0, 0.0
    e1, ok = canonical_edge(i2, i0, x2, y2, x0, y0, s, px, py)
    if not ok:
        return False, 0.0, 0.0
    _, ok = canonical_edge(i0, i1, x0, y0, x1, y1, s, px, py)
    if not ok:
        return False, 0.0, 0.0
    return True, e0, e1

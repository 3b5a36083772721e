"""numba kernels of the CPU rasterizer. Called only through recon.render.cpu (autograd wrappers).

Conventions (as nvdiffrast): ``pos`` is [B, V, 4] clip space (OpenGL), NDC y up, image row 0 at NDC
y = +1, pixel centres at (i + 0.5) / W * 2 - 1. ``rast`` is [B, H, W, 4] = (u, v, z/w, triangle_id + 1),
an attribute at a pixel being ``u * a0 + v * a1 + (1 - u - v) * a2``.

Work is split into (view, row band) items so that no two threads write the same output or the same
gradient buffer: no atomics, and results are deterministic.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from recon.render._edges import edge as _edge
from recon.render._edges import inside_canonical

NEAR_W = 1e-6
"""Clip-space w below which a vertex counts as behind the camera."""


@njit(cache=True, inline="always")
def _to_screen(x, y, w, W, H):
    return (x / w + 1.0) * 0.5 * W, (1.0 - y / w) * 0.5 * H




@njit(cache=True, parallel=True)
def clip_kernel(verts, mvp, items):
    """[B, V, 4] float32 ``mvp[b] @ (x, y, z, 1)`` of ``verts`` [V, 3] in every view of ``mvp`` [B, 4, 4]; split
    into ``items`` vertex ranges per view (float32 products, summed over x, y, z, then the translation)."""
    B, V = mvp.shape[0], verts.shape[0]
    out = np.empty((B, V, 4), np.float32)
    for item in prange(B * items):
        b = item // items
        part = item % items
        for v in range(V * part // items, V * (part + 1) // items):
            x, y, z = verts[v, 0], verts[v, 1], verts[v, 2]
            for i in range(4):
                out[b, v, i] = mvp[b, i, 0] * x + mvp[b, i, 1] * y + mvp[b, i, 2] * z + mvp[b, i, 3]
    return out


@njit(cache=True, parallel=True)
def clip_backward_kernel(grad, mvp, items):
    """[V, 3] gradient of ``clip_kernel``'s output with respect to the vertices: sum over views b and rows i
    of ``grad[b, v, i] * mvp[b, i, :3]``, the views summed in order (each vertex range is one work item)."""
    B, V = grad.shape[0], grad.shape[1]
    out = np.zeros((V, 3), np.float32)
    for part in prange(items):
        for v in range(V * part // items, V * (part + 1) // items):
            gx = np.float32(0.0)
            gy = np.float32(0.0)
            gz = np.float32(0.0)
            for b in range(B):
                for i in range(4):
                    g = grad[b, v, i]
                    gx += g * mvp[b, i, 0]
                    gy += g * mvp[b, i, 1]
                    gz += g * mvp[b, i, 2]
            out[v, 0] = gx
            out[v, 1] = gy
            out[v, 2] = gz
    return out


@njit(cache=True, parallel=True)
def project_kernel(pos, H, W, scr):
    """Per-vertex screen data [B, V, 4] = (x_pix, y_pix, z/w, front) where front = 1 when the vertex
    is in front of the near plane (w > 0 and z >= -w), else 0 (x, y, z/w then undefined)."""
    B, V = pos.shape[0], pos.shape[1]
    for b in prange(B):
        for i in range(V):
            w = pos[b, i, 3]
            z = pos[b, i, 2]
            if w > NEAR_W and z >= -w:
                sx, sy = _to_screen(pos[b, i, 0], pos[b, i, 1], w, W, H)
                scr[b, i, 0] = sx
                scr[b, i, 1] = sy
                scr[b, i, 2] = z / w
                scr[b, i, 3] = 1.0
            else:
                scr[b, i, 3] = 0.0


@njit(cache=True)
def _raster_band(pos, scr, tri, H, W, b, y0, y1, rast, zbuf, skip_back):
    """Rasterize every triangle of view ``b`` into rows [y0, y1); with ``skip_back``, not those facing away
    (clockwise in NDC) that lie wholly in front of the near plane."""
    F = tri.shape[0]
    for f in range(F):
        i0, i1, i2 = tri[f, 0], tri[f, 1], tri[f, 2]
        # Entirely in front of the near plane: fast 2D path with an exact fill rule.
        if scr[b, i0, 3] > 0 and scr[b, i1, 3] > 0 and scr[b, i2, 3] > 0:
            x0, yy0 = scr[b, i0, 0], scr[b, i0, 1]
            x1, yy1 = scr[b, i1, 0], scr[b, i1, 1]
            x2, yy2 = scr[b, i2, 0], scr[b, i2, 1]
            # The facing test first: it drops half of a closed surface's faces before the bounding box.
            area = _edge(x0, yy0, x1, yy1, x2, yy2)
            if area == 0.0 or not math.isfinite(area) or (skip_back and area > 0):
                continue  # pixel y points down: a positive area is clockwise in NDC, facing away
            # Pixels whose centre (p + 0.5) lies inside the bounding box.
            ymin = max(int(math.ceil(min(yy0, yy1, yy2) - 0.5)), y0)
            ymax = min(int(math.floor(max(yy0, yy1, yy2) - 0.5)), y1 - 1)
            if ymin > ymax:
                continue
            xmin = max(int(math.ceil(min(x0, x1, x2) - 0.5)), 0)
            xmax = min(int(math.floor(max(x0, x1, x2) - 0.5)), W - 1)
            if xmin > xmax:
                continue
            s = 1.0 if area > 0 else -1.0
            inv_area = 1.0 / area
            zw0, zw1, zw2 = scr[b, i0, 2], scr[b, i1, 2], scr[b, i2, 2]
            w0, w1, w2 = pos[b, i0, 3], pos[b, i1, 3], pos[b, i2, 3]
            # Shared edges: see recon.render._edges (each pixel goes to exactly one of two neighbours).
            for py in range(ymin, ymax + 1):
                cy = py + 0.5
                for px in range(xmin, xmax + 1):
                    cx = px + 0.5
                    ok, e0, e1 = inside_canonical(i0, i1, i2, x0, yy0, x1, yy1, x2, yy2, s, cx, cy)
                    if not ok:
                        continue
                    # Screen-space barycentrics; z/w is linear in screen space.
                    b0 = e0 * s * inv_area
                    b1 = e1 * s * inv_area
                    b2 = 1.0 - b0 - b1
                    zw = b0 * zw0 + b1 * zw1 + b2 * zw2
                    if zw < -1.0 or zw > 1.0 or zw >= zbuf[b, py, px]:
                        continue
                    # Perspective-correct (clip-space) barycentrics.
                    q0, q1, q2 = b0 / w0, b1 / w1, b2 / w2
                    qs = q0 + q1 + q2
                    zbuf[b, py, px] = zw
                    rast[b, py, px, 0] = q0 / qs
                    rast[b, py, px, 1] = q1 / qs
                    rast[b, py, px, 2] = zw
                    rast[b, py, px, 3] = f + 1
        elif scr[b, i0, 3] > 0 or scr[b, i1, 3] > 0 or scr[b, i2, 3] > 0:
            # Crossing the near plane. (Under a perspective projection a point behind the camera always
            # has z < -w, so "in front" is the half-space z + w >= 0: with no vertex in it, the triangle
            # is invisible.)
            _raster_band_clipped(pos, f, i0, i1, i2, H, W, b, y0, y1, rast, zbuf)


@njit(cache=True)
def _raster_band_clipped(pos, f, i0, i1, i2, H, W, b, y0, y1, rast, zbuf):
    """Slow path for a triangle crossing the near plane: homogeneous barycentrics per pixel inside the
    screen bounds of the triangle clipped to z >= -w (inclusive edges)."""
    # Screen bounds of the part in front of the near plane: its vertices in front, and the points where
    # its edges cross the plane z + w = 0.
    xmin, xmax, ymin, ymax = 1e30, -1e30, 1e30, -1e30
    idx = (i0, i1, i2)
    any_front = False
    for k in range(3):
        a = idx[k]
        c = idx[(k + 1) % 3]
        da = pos[b, a, 2] + pos[b, a, 3]
        dc = pos[b, c, 2] + pos[b, c, 3]
        if da >= 0 and pos[b, a, 3] > NEAR_W:
            any_front = True
            sx, sy = _to_screen(pos[b, a, 0], pos[b, a, 1], pos[b, a, 3], W, H)
            xmin, xmax, ymin, ymax = min(xmin, sx), max(xmax, sx), min(ymin, sy), max(ymax, sy)
        if (da >= 0) != (dc >= 0):
            t = da / (da - dc)
            px_ = pos[b, a, 0] + t * (pos[b, c, 0] - pos[b, a, 0])
            py_ = pos[b, a, 1] + t * (pos[b, c, 1] - pos[b, a, 1])
            pw = pos[b, a, 3] + t * (pos[b, c, 3] - pos[b, a, 3])
            if pw > NEAR_W:
                sx, sy = _to_screen(px_, py_, pw, W, H)
                xmin, xmax, ymin, ymax = min(xmin, sx), max(xmax, sx), min(ymin, sy), max(ymax, sy)
    if not any_front or not (math.isfinite(xmin) and math.isfinite(ymax)):
        return
    pxmin = max(int(math.ceil(xmin - 0.5)), 0)
    pxmax = min(int(math.floor(xmax - 0.5)), W - 1)
    pymin = max(int(math.ceil(ymin - 0.5)), y0)
    pymax = min(int(math.floor(ymax - 0.5)), y1 - 1)
    for py in range(pymin, pymax + 1):
        Y = 1.0 - (py + 0.5) / H * 2.0
        for px in range(pxmin, pxmax + 1):
            X = (px + 0.5) / W * 2.0 - 1.0
            a0 = pos[b, i0, 0] - X * pos[b, i0, 3]
            a1 = pos[b, i1, 0] - X * pos[b, i1, 3]
            a2 = pos[b, i2, 0] - X * pos[b, i2, 3]
            c0 = pos[b, i0, 1] - Y * pos[b, i0, 3]
            c1 = pos[b, i1, 1] - Y * pos[b, i1, 3]
            c2 = pos[b, i2, 1] - Y * pos[b, i2, 3]
            l0 = a1 * c2 - a2 * c1
            l1 = a2 * c0 - a0 * c2
            l2 = a0 * c1 - a1 * c0
            S = l0 + l1 + l2
            if S == 0.0:
                continue
            l0, l1, l2 = l0 / S, l1 / S, l2 / S
            if l0 < 0 or l1 < 0 or l2 < 0:
                continue
            w = l0 * pos[b, i0, 3] + l1 * pos[b, i1, 3] + l2 * pos[b, i2, 3]
            if w <= NEAR_W:
                continue
            zw = (l0 * pos[b, i0, 2] + l1 * pos[b, i1, 2] + l2 * pos[b, i2, 2]) / w
            if zw < -1.0 or zw > 1.0 or zw >= zbuf[b, py, px]:
                continue
            zbuf[b, py, px] = zw
            rast[b, py, px, 0] = l0
            rast[b, py, px, 1] = l1
            rast[b, py, px, 2] = zw
            rast[b, py, px, 3] = f + 1


def bands_for(batch: int, height: int) -> int:
    """Row bands per view so that there are at least ~2 work items per thread."""
    threads = numba.get_num_threads()
    return int(max(1, min(height, math.ceil(2 * threads / max(batch, 1)))))


@njit(cache=True, parallel=True)
def rasterize_kernel(pos, scr, tri, H, W, nbands, rast, zbuf, skip_back):
    """Fill ``rast`` [B, H, W, 4] (zeroed) and ``zbuf`` [B, H, W] (set to +inf); ``scr`` from
    ``project_kernel``; ``skip_back``: see ``_raster_band``."""
    B = pos.shape[0]
    for item in prange(B * nbands):
        b = item // nbands
        band = item % nbands
        y0 = band * H // nbands
        y1 = (band + 1) * H // nbands
        _raster_band(pos, scr, tri, H, W, b, y0, y1, rast, zbuf, skip_back)


@njit(cache=True, parallel=True)
def rasterize_backward_kernel(pos, tri, rast, grad_rast, nbands, grad_pos_parts):
    """Gradient of (u, v, z/w) in ``rast`` with respect to ``pos``.

    Uses the homogeneous form: with a_i = x_i - X w_i, c_i = y_i - Y w_i, lambda = a x c, the
    perspective-correct barycentrics are lambda / sum(lambda) and z/w = sum(lambda z) / sum(lambda w).
    ``grad_pos_parts`` is [nbands, B, V, 4]; band ``k`` of every view writes part ``k``.
    """
    B, H, W = rast.shape[0], rast.shape[1], rast.shape[2]
    for item in prange(B * nbands):
        b = item // nbands
        band = item % nbands
        y0 = band * H // nbands
        y1 = (band + 1) * H // nbands
        g = grad_pos_parts[band, b]
        for py in range(y0, y1):
            Y = 1.0 - (py + 0.5) / H * 2.0
            for px in range(W):
                tid = int(rast[b, py, px, 3])
                if tid == 0:
                    continue
                gu = grad_rast[b, py, px, 0]
                gv = grad_rast[b, py, px, 1]
                gz = grad_rast[b, py, px, 2]
                if gu == 0.0 and gv == 0.0 and gz == 0.0:
                    continue
                X = (px + 0.5) / W * 2.0 - 1.0
                f = tid - 1
                i0, i1, i2 = tri[f, 0], tri[f, 1], tri[f, 2]
                x0, x1, x2 = pos[b, i0, 0], pos[b, i1, 0], pos[b, i2, 0]
                y_0, y_1, y_2 = pos[b, i0, 1], pos[b, i1, 1], pos[b, i2, 1]
                z0, z1, z2 = pos[b, i0, 2], pos[b, i1, 2], pos[b, i2, 2]
                w0, w1, w2 = pos[b, i0, 3], pos[b, i1, 3], pos[b, i2, 3]
                a0, a1, a2 = x0 - X * w0, x1 - X * w1, x2 - X * w2
                c0, c1, c2 = y_0 - Y * w0, y_1 - Y * w1, y_2 - Y * w2
                l0 = a1 * c2 - a2 * c1
                l1 = a2 * c0 - a0 * c2
                l2 = a0 * c1 - a1 * c0
                S = l0 + l1 + l2
                if S == 0.0:
                    continue
                u = l0 / S
                v = l1 / S
                D = l0 * w0 + l1 * w1 + l2 * w2
                zw = (l0 * z0 + l1 * z1 + l2 * z2) / D
                # dL/dlambda_j
                gl0 = gu * (1.0 - u) / S + gv * (-v) / S + gz * (z0 - zw * w0) / D
                gl1 = gu * (-u) / S + gv * (1.0 - v) / S + gz * (z1 - zw * w1) / D
                gl2 = gu * (-u) / S + gv * (-v) / S + gz * (z2 - zw * w2) / D
                # lambda = a x c: dL/da = c x gl, dL/dc = gl x a
                ga0 = c1 * gl2 - c2 * gl1
                ga1 = c2 * gl0 - c0 * gl2
                ga2 = c0 * gl1 - c1 * gl0
                gc0 = gl1 * a2 - gl2 * a1
                gc1 = gl2 * a0 - gl0 * a2
                gc2 = gl0 * a1 - gl1 * a0
                gzD = gz / D
                g[i0, 0] += ga0
                g[i1, 0] += ga1
                g[i2, 0] += ga2
                g[i0, 1] += gc0
                g[i1, 1] += gc1
                g[i2, 1] += gc2
                g[i0, 2] += gzD * l0
                g[i1, 2] += gzD * l1
                g[i2, 2] += gzD * l2
                g[i0, 3] += -X * ga0 - Y * gc0 - gzD * zw * l0
                g[i1, 3] += -X * ga1 - Y * gc1 - gzD * zw * l1
                g[i2, 3] += -X * ga2 - Y * gc2 - gzD * zw * l2


# ---------------------------------------------------------------------------------------------------
# interpolate


@njit(cache=True, parallel=True)
def interpolate_kernel(attr, rast, tri, out):
    """out[b, y, x] = u a0 + v a1 + (1 - u - v) a2 (0 where uncovered). ``attr`` is [Ba, V, C] with
    Ba = 1 (shared by all views) or B."""
    B, H, W = rast.shape[0], rast.shape[1], rast.shape[2]
    C = attr.shape[2]
    shared = attr.shape[0] == 1
    for item in prange(B * H):
        b = item // H
        py = item % H
        ab = 0 if shared else b
        for px in range(W):
            tid = int(rast[b, py, px, 3])
            if tid == 0:
                continue
            f = tid - 1
            u = rast[b, py, px, 0]
            v = rast[b, py, px, 1]
            t = 1.0 - u - v
            i0, i1, i2 = tri[f, 0], tri[f, 1], tri[f, 2]
            for c in range(C):
                out[b, py, px, c] = u * attr[ab, i0, c] + v * attr[ab, i1, c] + t * attr[ab, i2, c]


@njit(cache=True, parallel=True)
def interpolate_backward_kernel(attr, rast, tri, grad_out, nchunks, grad_attr_parts, grad_rast):
    """Gradients of interpolate. ``grad_attr_parts`` is [nchunks, Ba, V, C]: the flattened (view, row)
    items are split into ``nchunks`` contiguous chunks, chunk k accumulating into part k.
    ``grad_rast`` [B, H, W, 4] receives d/du and d/dv in channels 0 and 1."""
    B, H, W = rast.shape[0], rast.shape[1], rast.shape[2]
    C = attr.shape[2]
    shared = attr.shape[0] == 1
    n_items = B * H
    for k in prange(nchunks):
        start = k * n_items // nchunks
        stop = (k + 1) * n_items // nchunks
        ga = grad_attr_parts[k]
        for item in range(start, stop):
            b = item // H
            py = item % H
            ab = 0 if shared else b
            for px in range(W):
                tid = int(rast[b, py, px, 3])
                if tid == 0:
                    continue
                f = tid - 1
                u = rast[b, py, px, 0]
                v = rast[b, py, px, 1]
                t = 1.0 - u - v
                i0, i1, i2 = tri[f, 0], tri[f, 1], tri[f, 2]
                du = 0.0
                dv = 0.0
                for c in range(C):
                    g = grad_out[b, py, px, c]
                    if g == 0.0:
                        continue
                    ga[ab, i0, c] += u * g
                    ga[ab, i1, c] += v * g
                    ga[ab, i2, c] += t * g
                    a2 = attr[ab, i2, c]
                    du += g * (attr[ab, i0, c] - a2)
                    dv += g * (attr[ab, i1, c] - a2)
                grad_rast[b, py, px, 0] = du
                grad_rast[b, py, px, 1] = dv


# ---------------------------------------------------------------------------------------------------
# antialias: explicit silhouette edges, walked across pixel-pair centre lines


@njit(cache=True)
def _pixel_w(pos, tri, rast, b, py, px):
    """Clip-space w of the surface seen at a pixel (inf where uncovered)."""
    tid = int(rast[b, py, px, 3])
    if tid == 0:
        return np.inf
    f = tid - 1
    u = rast[b, py, px, 0]
    v = rast[b, py, px, 1]
    return u * pos[b, tri[f, 0], 3] + v * pos[b, tri[f, 1], 3] + (1.0 - u - v) * pos[b, tri[f, 2], 3]


@njit(cache=True)
def _face_orientation(scr, tri, b, front):
    """front[f] = 1 when face f is counter-clockwise in NDC (front-facing), 0 when clockwise,
    255 when a vertex is behind the near plane (never a silhouette then)."""
    for f in range(tri.shape[0]):
        k0, k1, k2 = tri[f, 0], tri[f, 1], tri[f, 2]
        if scr[b, k0, 3] == 0 or scr[b, k1, 3] == 0 or scr[b, k2, 3] == 0:
            front[f] = 255
            continue
        area = _edge(scr[b, k0, 0], scr[b, k0, 1], scr[b, k1, 0], scr[b, k1, 1], scr[b, k2, 0], scr[b, k2, 1])
        front[f] = 1 if area < 0 else 0  # pixel y is down: negative area is counter-clockwise in NDC


@njit(cache=True)
def _silhouette_side(scr, tri, edges, edge_faces, front, b, e):
    """+1 / -1: the side of edge a->b (left / right in pixel space) on which its visible face lies;
    0 when the edge is not a silhouette in view ``b``. A silhouette edge has exactly one front face
    (counter-clockwise in NDC) or is a boundary edge (its one face counts whatever its orientation)."""
    fa, fb = edge_faces[e, 0], edge_faces[e, 1]
    if fa >= 0 and fb >= 0:
        sa, sb = front[fa], front[fb]
        if sa == 255 or sb == 255 or sa == sb:
            return 0.0
        f = fa if sa == 1 else fb
    else:
        f = fa if fa >= 0 else fb
        if f < 0 or front[f] == 255:
            return 0.0
    ia, ib = edges[e, 0], edges[e, 1]
    k0, k1, k2 = tri[f, 0], tri[f, 1], tri[f, 2]
    opp = k0 if (k0 != ia and k0 != ib) else (k1 if (k1 != ia and k1 != ib) else k2)
    s_opp = _edge(scr[b, ia, 0], scr[b, ia, 1], scr[b, ib, 0], scr[b, ib, 1], scr[b, opp, 0], scr[b, opp, 1])
    if s_opp == 0.0:
        return 0.0
    return 1.0 if s_opp > 0 else -1.0


@njit(cache=True)
def _find_crossings(pos, scr, tri, rast, edges, edge_faces, front, b, depth_tol, cross_edge, cross_d, cross_up):
    """For view ``b``, record for each pixel pair the visible silhouette edge crossing it.

    Pairs are stored at [axis, y, x]: axis 0 pairs (x, y)-(x+1, y), axis 1 pairs (x, y)-(x, y+1).
    ``cross_edge`` = edge index (-1: none), ``cross_d`` = offset of the crossing from the pair's
    midpoint towards the outside pixel (in [-0.5, 0.5]), ``cross_up`` = 1 when the inside (covered)
    pixel is the second of the pair. Among several crossings of one pair the nearest edge wins.
    """
    H, W = rast.shape[1], rast.shape[2]
    best_w = np.full((2, H, W), np.inf)
    _face_orientation(scr, tri, b, front)
    for e in range(edges.shape[0]):
        # Most edges lie between two faces of one orientation: rejected here, inline, because a call to
        # ``_silhouette_side`` per edge cost 20x more than the test (53 vs 2.4 ms, 8 views, 475k edges);
        # inlining that function instead still took 45 ms for the whole antialias, against 15-19 ms with this.
        fa, fb = edge_faces[e, 0], edge_faces[e, 1]
        if fa >= 0 and fb >= 0 and (front[fa] == front[fb] or front[fa] == 255 or front[fb] == 255):
            continue
        side = _silhouette_side(scr, tri, edges, edge_faces, front, b, e)
        if side == 0.0:
            continue
        ia, ib = edges[e, 0], edges[e, 1]
        wa, wb = pos[b, ia, 3], pos[b, ib, 3]
        xa, ya = scr[b, ia, 0], scr[b, ia, 1]
        xb, yb = scr[b, ib, 0], scr[b, ib, 1]
        for axis in range(2):
            # axis 0 crosses row centre lines y = line + 0.5, moving along x; axis 1 the reverse.
            if axis == 0:
                p0, p1, q0, q1, n_lines, n_along = ya, yb, xa, xb, H, W
            else:
                p0, p1, q0, q1, n_lines, n_along = xa, xb, ya, yb, W, H
            # Each edge is walked across one family of pairs only: steep edges across rows, flat ones
            # across columns. Either family alone gives the exact rate of change of covered area for any
            # motion of the edge; using both (as nvdiffrast does) double-counts slanted edges, and the
            # image then jumps back when pixels flip, so gradients disagree with the image by up to 2x.
            if abs(p1 - p0) < abs(q1 - q0) or (abs(p1 - p0) == abs(q1 - q0) and axis == 1):
                continue
            lo = max(int(math.ceil(min(p0, p1) - 0.5)), 0)
            hi = min(int(math.floor(max(p0, p1) - 0.5)), n_lines - 1)
            for line in range(lo, hi + 1):
                c_line = line + 0.5
                t = (c_line - p0) / (p1 - p0)
                if t < 0.0 or t >= 1.0:
                    continue
                q = q0 + t * (q1 - q0)
                i = int(math.floor(q - 0.5))
                if i < 0 or i + 1 >= n_along:
                    continue
                # Is the second pixel (i + 1 along q) on the visible face's side of a->b?
                if axis == 0:
                    s2 = _edge(xa, ya, xb, yb, i + 1.5, c_line)
                    s1 = _edge(xa, ya, xb, yb, i + 0.5, c_line)
                else:
                    s2 = _edge(xa, ya, xb, yb, c_line, i + 1.5)
                    s1 = _edge(xa, ya, xb, yb, c_line, i + 0.5)
                up = (s2 - s1 > 0) == (side > 0)
                if axis == 0:
                    y_in, x_in = line, (i + 1 if up else i)
                    y_out, x_out = line, (i if up else i + 1)
                    ys, xs = line, i
                else:
                    y_in, x_in = (i + 1 if up else i), line
                    y_out, x_out = (i if up else i + 1), line
                    ys, xs = i, line
                w_e = 1.0 / ((1.0 - t) / wa + t / wb)  # perspective-correct w at the crossing
                w_in = _pixel_w(pos, tri, rast, b, y_in, x_in)
                w_out = _pixel_w(pos, tri, rast, b, y_out, x_out)
                # The inside pixel must show the surface this edge bounds (not a nearer occluder), and
                # the outside pixel something clearly behind the edge (or nothing).
                if w_in == np.inf or w_in < w_e * (1.0 - depth_tol) or not (w_out > w_e * (1.0 + depth_tol)):
                    continue
                if w_e >= best_w[axis, ys, xs]:
                    continue
                best_w[axis, ys, xs] = w_e
                d = q - (i + 1.0)
                cross_edge[axis, ys, xs] = e
                cross_d[axis, ys, xs] = -d if up else d
                cross_up[axis, ys, xs] = 1 if up else 0


@njit(cache=True, parallel=True)
def antialias_forward_kernel(color, pos, scr, tri, rast, edges, edge_faces, depth_tol,
                             cross_edge, cross_d, cross_up, out):
    """``out`` (a copy of ``color``) blended across visible silhouette crossings, nvdiffrast-style: when
    the edge lies in the outside pixel's half (d > 0) that pixel takes d of the inside colour, else the
    inside pixel takes -d of the outside colour. Crossing arrays are [B, 2, H, W], filled here."""
    B, H, W = rast.shape[0], rast.shape[1], rast.shape[2]
    C = color.shape[3]
    for b in prange(B):
        front = np.empty(tri.shape[0], dtype=np.uint8)
        _find_crossings(pos, scr, tri, rast, edges, edge_faces, front, b, depth_tol,
                        cross_edge[b], cross_d[b], cross_up[b])
        for axis in range(2):
            for y in range(H):
                for x in range(W):
                    if cross_edge[b, axis, y, x] < 0:
                        continue
                    d = cross_d[b, axis, y, x]
                    y2 = y if axis == 0 else y + 1
                    x2 = x + 1 if axis == 0 else x
                    if cross_up[b, axis, y, x] == 1:
                        iy, ix, oy, ox = y2, x2, y, x
                    else:
                        iy, ix, oy, ox = y, x, y2, x2
                    if d > 0:
                        for c in range(C):
                            out[b, oy, ox, c] += d * (color[b, iy, ix, c] - color[b, oy, ox, c])
                    else:
                        for c in range(C):
                            out[b, iy, ix, c] += -d * (color[b, oy, ox, c] - color[b, iy, ix, c])


@njit(cache=True, parallel=True)
def antialias_backward_kernel(color, pos, edges, cross_edge, cross_d, cross_up, grad_out,
                              grad_color, grad_pos):
    """Gradients of antialias. ``grad_color`` must start as a copy of ``grad_out``; ``grad_pos`` zeros.
    The crossing offset d depends on the edge's screen endpoints, which depend on its clip positions."""
    B, H, W = grad_out.shape[0], grad_out.shape[1], grad_out.shape[2]
    C = color.shape[3]
    for b in prange(B):
        for axis in range(2):
            for y in range(H):
                for x in range(W):
                    e = cross_edge[b, axis, y, x]
                    if e < 0:
                        continue
                    d = cross_d[b, axis, y, x]
                    up = cross_up[b, axis, y, x] == 1
                    y2 = y if axis == 0 else y + 1
                    x2 = x + 1 if axis == 0 else x
                    if up:
                        iy, ix, oy, ox = y2, x2, y, x
                    else:
                        iy, ix, oy, ox = y, x, y2, x2
                    gd = 0.0
                    if d > 0:
                        for c in range(C):
                            g = grad_out[b, oy, ox, c]
                            grad_color[b, iy, ix, c] += d * g
                            grad_color[b, oy, ox, c] -= d * g
                            gd += g * (color[b, iy, ix, c] - color[b, oy, ox, c])
                    else:
                        for c in range(C):
                            g = grad_out[b, iy, ix, c]
                            grad_color[b, oy, ox, c] += -d * g
                            grad_color[b, iy, ix, c] -= -d * g
                            gd -= g * (color[b, oy, ox, c] - color[b, iy, ix, c])
                    if gd == 0.0:
                        continue
                    # d = +-(q - midpoint): +1 when the inside pixel is the first of the pair.
                    gq = gd * (-1.0 if up else 1.0)
                    ia, ib = edges[e, 0], edges[e, 1]
                    wa, wb = pos[b, ia, 3], pos[b, ib, 3]
                    xa, ya = _to_screen(pos[b, ia, 0], pos[b, ia, 1], wa, W, H)
                    xb, yb = _to_screen(pos[b, ib, 0], pos[b, ib, 1], wb, W, H)
                    if axis == 0:
                        p0, p1, q0, q1, c_line = ya, yb, xa, xb, y + 0.5
                    else:
                        p0, p1, q0, q1, c_line = xa, xb, ya, yb, x + 0.5
                    t = (c_line - p0) / (p1 - p0)
                    dq_dq0 = 1.0 - t
                    dq_dq1 = t
                    dq_dp0 = (q1 - q0) * (t - 1.0) / (p1 - p0)
                    dq_dp1 = -(q1 - q0) * t / (p1 - p0)
                    # Screen-coordinate gradients of the endpoints.
                    if axis == 0:
                        gxa, gya, gxb, gyb = gq * dq_dq0, gq * dq_dp0, gq * dq_dq1, gq * dq_dp1
                    else:
                        gxa, gya, gxb, gyb = gq * dq_dp0, gq * dq_dq0, gq * dq_dp1, gq * dq_dq1
                    for k in range(2):
                        vi = ia if k == 0 else ib
                        gx = gxa if k == 0 else gxb
                        gy = gya if k == 0 else gyb
                        w = pos[b, vi, 3]
                        # x_pix = (x / w + 1) W / 2, y_pix = (1 - y / w) H / 2
                        grad_pos[b, vi, 0] += gx * W / (2.0 * w)
                        grad_pos[b, vi, 1] += -gy * H / (2.0 * w)
                        grad_pos[b, vi, 3] += (-gx * W * pos[b, vi, 0] + gy * H * pos[b, vi, 1]) / (2.0 * w * w)

"""numba kernels of the refinement's per-step work on the CPU: the combinatorial part of marching
tetrahedra (with the orientation of each face), 1-ring normal smoothing, the binomial blur of the
lattice gradients, vertex normals, and the normal-consistency and Laplacian regularisers with their
backward passes. Called through ``recon.geometry.tets``, ``recon.geometry.regularizers``,
``recon.render.views.vertex_normals`` and ``recon.refine.train.binomial_blur``, whose torch code is the
reference these are tested against. Each runs once per refinement step over the whole band, where the
torch versions spent most of their time gathering, scattering and allocating temporaries.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

_CHUNKS = 64
"""Contiguous ranges the marching kernel splits edges and tets into: each is counted in parallel, an
exclusive prefix sum over the counts gives each range its output offset, and each is then filled in
parallel, so the outputs keep the serial order exactly."""


@njit(cache=True, inline="always")
def _chunk(n, c):
    return n * c // _CHUNKS, n * (c + 1) // _CHUNKS


@njit(cache=True, inline="always")
def _exclusive_cumsum(counts, start):
    out = np.empty(counts.shape[0], np.int64)
    total = start
    for c in range(counts.shape[0]):
        out[c] = total
        total += counts[c]
    return out, total


@njit(cache=True, parallel=True)
def march_kernel(inside, tets, edges, tet_edges, positions, sdf, table, tri_count):
    """Marching tetrahedra's topology, faces oriented outwards.

    Args:
        inside: [N] bool; tets: [T, 4] int64; edges: [E, 2] int64; tet_edges: [T, 6] int64;
        positions: [N, 3] float32; sdf: [N] float32; table: [16, 2, 3] int64 local edge numbers;
        tri_count: [16] int64 triangles per inside-code.
    Returns:
        faces [F, 3] int64 (crossing-vertex indices), face_tet [F] int64, vert_edge [V] int64, in the
        reference's order: crossing vertices by edge index; all first triangles by tet, then all seconds.
    """
    E = edges.shape[0]
    T = tets.shape[0]
    edge_counts = np.zeros(_CHUNKS, np.int64)
    for c in prange(_CHUNKS):
        lo, hi = _chunk(E, c)
        n = 0
        for e in range(lo, hi):
            if inside[edges[e, 0]] != inside[edges[e, 1]]:
                n += 1
        edge_counts[c] = n
    edge_start, nv = _exclusive_cumsum(edge_counts, 0)
    edge_to_vert = np.empty(E, np.int64)
    vert_edge = np.empty(nv, np.int64)
    cross = np.empty((nv, 3), np.float32)
    for c in prange(_CHUNKS):
        lo, hi = _chunk(E, c)
        v = edge_start[c]
        for e in range(lo, hi):
            a, b = edges[e, 0], edges[e, 1]
            if inside[a] == inside[b]:
                edge_to_vert[e] = -1
                continue
            edge_to_vert[e] = v
            vert_edge[v] = e
            sa, sb = sdf[a], sdf[b]
            for k in range(3):
                cross[v, k] = (positions[a, k] * sb - positions[b, k] * sa) / (sb - sa)
            v += 1
    codes = np.empty(T, np.int64)
    first_counts = np.zeros(_CHUNKS, np.int64)
    second_counts = np.zeros(_CHUNKS, np.int64)
    for c in prange(_CHUNKS):
        lo, hi = _chunk(T, c)
        n1 = n2 = 0
        for t in range(lo, hi):
            code = 0
            for m in range(4):
                if inside[tets[t, m]]:
                    code |= 1 << m
            codes[t] = code
            if tri_count[code] >= 1:
                n1 += 1
            if tri_count[code] >= 2:
                n2 += 1
        first_counts[c] = n1
        second_counts[c] = n2
    first_start, n_first = _exclusive_cumsum(first_counts, 0)
    second_start, nf = _exclusive_cumsum(second_counts, n_first)
    faces = np.empty((nf, 3), np.int64)
    face_tet = np.empty(nf, np.int64)
    for c in prange(_CHUNKS):
        lo, hi = _chunk(T, c)
        k_first, k_second = first_start[c], second_start[c]
        for t in range(lo, hi):
            code = codes[t]
            for slot in range(tri_count[code]):
                if slot == 0:
                    k = k_first
                    k_first += 1
                else:
                    k = k_second
                    k_second += 1
                i0 = edge_to_vert[tet_edges[t, table[code, slot, 0]]]
                i1 = edge_to_vert[tet_edges[t, table[code, slot, 1]]]
                i2 = edge_to_vert[tet_edges[t, table[code, slot, 2]]]
                # Outward: from the mean of the tet's inside vertices to the mean of its outside ones.
                n_in = 0
                ix = iy = iz = ox = oy = oz = np.float32(0)
                for m in range(4):
                    p = tets[t, m]
                    if inside[p]:
                        n_in += 1
                        ix += positions[p, 0]
                        iy += positions[p, 1]
                        iz += positions[p, 2]
                    else:
                        ox += positions[p, 0]
                        oy += positions[p, 1]
                        oz += positions[p, 2]
                w_in, w_out = np.float32(1 / n_in), np.float32(1 / (4 - n_in))
                ax, ay, az = cross[i1, 0] - cross[i0, 0], cross[i1, 1] - cross[i0, 1], cross[i1, 2] - cross[i0, 2]
                bx, by, bz = cross[i2, 0] - cross[i0, 0], cross[i2, 1] - cross[i0, 1], cross[i2, 2] - cross[i0, 2]
                nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
                dot = nx * (ox * w_out - ix * w_in) + ny * (oy * w_out - iy * w_in) + nz * (oz * w_out - iz * w_in)
                faces[k, 0] = i0
                if dot < 0:
                    faces[k, 1], faces[k, 2] = i2, i1
                else:
                    faces[k, 1], faces[k, 2] = i1, i2
                face_tet[k] = t
    return faces, face_tet, vert_edge


@njit(cache=True)
def _neighbour_lists(edges, V):
    """CSR 1-ring of each vertex: (start [V + 1], neighbour [2 E]). A vertex lists the other ends of the
    edges where it is the first endpoint, in edge order, then of those where it is the second: the order
    in which the reference's two ``index_add_`` calls add them."""
    start = np.zeros(V + 1, np.int64)
    for e in range(edges.shape[0]):
        start[edges[e, 0] + 1] += 1
        start[edges[e, 1] + 1] += 1
    for v in range(V):
        start[v + 1] += start[v]
    fill = start[:-1].copy()
    neighbour = np.empty(2 * edges.shape[0], np.int64)
    for e in range(edges.shape[0]):
        a = edges[e, 0]
        neighbour[fill[a]] = edges[e, 1]
        fill[a] += 1
    for e in range(edges.shape[0]):
        b = edges[e, 1]
        neighbour[fill[b]] = edges[e, 0]
        fill[b] += 1
    return start, neighbour


@njit(cache=True, parallel=True)
def smooth_normals_kernel(normals, edges, iterations):
    """[V, 3] float32 normals averaged with their 1-ring ``iterations`` times, renormalised each time.

    Each vertex gathers its neighbours in the reference's summation order, so the vertices are independent
    and split over the cores; results equal the reference's within float32 rounding of the norm (not bit
    for bit: up to 2e-7 on a bumpy sphere).

    Args:
        normals: [V, 3] float32 (not modified); edges: [E, 2] int64 unique undirected edges.
    """
    V = normals.shape[0]
    start, neighbour = _neighbour_lists(edges, V)
    n = normals.copy()
    nxt = np.empty_like(n)
    for _ in range(iterations):
        for v in prange(V):
            tx, ty, tz = n[v, 0], n[v, 1], n[v, 2]
            for k in range(start[v], start[v + 1]):
                u = neighbour[k]
                tx += n[u, 0]
                ty += n[u, 1]
                tz += n[u, 2]
            length = max(np.sqrt(tx * tx + ty * ty + tz * tz), np.float32(1e-12))
            nxt[v, 0], nxt[v, 1], nxt[v, 2] = tx / length, ty / length, tz / length
        n, nxt = nxt, n
    return n


_BLUR_LANES = 16
"""Entries filtered side by side per work item of ``binomial_filter_kernel`` (one 64-byte cache line of float32).
A segment is filtered where the support of any of its lanes is set, so fewer lanes skip more of a thin shell."""


@njit(cache=True)
def _binomial_passes_on_segment(volume, o1, y0, lines, m0, width, lo, hi, passes, a, b):
    """``passes`` passes of [1, 2, 1] / 4 on entries ``lo + 1 .. hi - 1`` of the lines ``volume[o1, y0 + g, :,
    m0 + m]`` (g < lines, m < width, at most ``_BLUR_LANES`` lines in all); entries ``lo`` and ``hi`` stay.

    The segment is copied into the flat buffer ``a`` ([length * _BLUR_LANES], lane-minor), filtered there
    between ``a`` and ``b`` (flat, unit-stride loops vectorise: the strided in-place loop did not, 7x slower
    per entry), and copied back. Each entry is ``0.5 x[i] + 0.25 (x[i-1] + x[i+1])`` of the previous pass,
    the torch code's operations in its order (bit-identical)."""
    lanes = _BLUR_LANES
    length = hi - lo + 1
    used = lines * width
    half, quarter = np.float32(0.5), np.float32(0.25)
    for i in range(length):
        row = i * lanes
        for g in range(lines):
            for m in range(width):
                a[row + g * width + m] = volume[o1, y0 + g, lo + i, m0 + m]
        for k in range(used, lanes):
            a[row + k] = 0.0
    last = (length - 1) * lanes
    for _ in range(passes):
        for k in range(lanes):
            b[k] = a[k]
            b[last + k] = a[last + k]
        for k in range(lanes, last):
            b[k] = half * a[k] + quarter * (a[k - lanes] + a[k + lanes])
        a, b = b, a
    for i in range(1, length - 1):
        row = i * lanes
        for g in range(lines):
            for m in range(width):
                volume[o1, y0 + g, lo + i, m0 + m] = a[row + g * width + m]


_BLUR_CHUNKS = 64
"""Work items are split into this many contiguous chunks, each with its own buffers (one allocation per
chunk, not per item: a buffer per item cost more than the filtering)."""


@njit(cache=True, inline="always")
def _blur_layout(outer2, inner):
    """(lines per line group, lanes per line, blocks per line group) of a blur over ``[., outer2, n, inner]``:
    a work item is a block of ``_BLUR_LANES`` packed entries of one line, or, where ``inner`` is narrower,
    the whole ``inner`` of several consecutive ``outer2`` lines."""
    lanes = _BLUR_LANES
    if inner >= lanes:
        return 1, lanes, (inner + lanes - 1) // lanes
    return lanes // inner, inner, 1


@njit(cache=True, inline="always")
def _blur_items(outer1, outer2, inner):
    """How many work items a blur over ``[outer1, outer2, n, inner]`` has (``_blur_layout``)."""
    group, _, blocks = _blur_layout(outer2, inner)
    return outer1 * ((outer2 + group - 1) // group) * blocks


@njit(cache=True, inline="always")
def _item_lines(item, outer2, inner):
    """Where work item ``item`` lies: (outer1 index, first outer2 line, lines, first inner entry, entries)."""
    group, width, blocks = _blur_layout(outer2, inner)
    line_groups = (outer2 + group - 1) // group
    o1 = item // (line_groups * blocks)
    y0 = (item // blocks) % line_groups * group
    m0 = (item % blocks) * width
    return o1, y0, min(group, outer2 - y0), m0, min(width, inner - m0)


@njit(cache=True)
def _item_segments(support, passes, per, outer2, n, inner, item, out, k):
    """The segments of work item ``item`` (see ``binomial_segments_kernel``); written from row ``k`` of ``out``
    when it has rows (else only counted). Returns the row after the last one."""
    o1, y0, lines, m0, w = _item_lines(item, outer2, inner)
    reach = passes + 1
    first, last = -1, -1  # the current segment of nonzero entries (merged over short zero gaps)
    s0, s1 = m0 // per, (m0 + w - 1) // per + 1
    write = out.shape[0] > 0
    for i in range(n):
        nonzero = False
        for g in range(lines):
            for m in range(s0, s1):
                if support[o1, y0 + g, i, m] != 0:
                    nonzero = True
                    break
            if nonzero:
                break
        if not nonzero:
            continue
        if first >= 0 and i - last > 2 * reach:
            if write:
                out[k, 0], out[k, 1], out[k, 2] = item, max(first - reach, 0), min(last + reach, n - 1)
            k += 1
            first = i
        elif first < 0:
            first = i
        last = i
    if first >= 0:
        if write:
            out[k, 0], out[k, 1], out[k, 2] = item, max(first - reach, 0), min(last + reach, n - 1)
        k += 1
    return k


@njit(cache=True, parallel=True)
def binomial_segments_kernel(support, passes, per, outer1, outer2, n, inner):
    """The segments ``binomial_filter_kernel`` filters on a volume [outer1, outer2, n, inner] whose entries
    may be nonzero where ``support`` [outer1, outer2, n, inner // per] (uint8, any strides) says: entry m of
    ``inner`` is covered by support entry ``m // per`` (``per``: the channels of one lattice vertex where they
    are packed into ``inner``). Returns [S, 3] int64 rows (work item, first entry, last entry), in item order.

    After ``passes`` passes a value reaches at most ``passes`` entries away, so a line is filtered only over
    the runs the support marks, widened by ``passes + 1`` (the widened ends are zeros that the reference
    leaves at zero too), runs closer than twice that merged into one. A zero inside a segment is filtered as
    the reference does, so any superset of the nonzero entries gives the same result. The refinement's
    gradients are nonzero only on the band, a thin shell of the lattice, which makes the blur several times
    cheaper than filtering the whole box; the segments depend on the support alone, so the refinement finds
    them once per band (``blur_segments``), not at every step's blur."""
    items = _blur_items(outer1, outer2, inner)
    chunks = min(_BLUR_CHUNKS, items)
    none = np.empty((0, 3), np.int64)
    counts = np.zeros(chunks, np.int64)
    for chunk in prange(chunks):
        k = 0
        for item in range(chunk * items // chunks, (chunk + 1) * items // chunks):
            k = _item_segments(support, passes, per, outer2, n, inner, item, none, k)
        counts[chunk] = k
    starts, total = _exclusive_cumsum(counts, 0)
    out = np.empty((total, 3), np.int64)
    for chunk in prange(chunks):
        k = starts[chunk]
        for item in range(chunk * items // chunks, (chunk + 1) * items // chunks):
            k = _item_segments(support, passes, per, outer2, n, inner, item, out, k)
    return out


@njit(cache=True, parallel=True)
def binomial_filter_kernel(volume, passes, segments):
    """``passes`` in-place passes of the filter [1, 2, 1] / 4 along the third axis of ``volume``
    [outer1, outer2, n, inner] (float32, any strides: a view into a larger array works), on the ``segments``
    of ``binomial_segments_kernel`` (for this volume's shape and the same ``passes``) only; each segment's
    end entries stay as they are. A work item filters ``_BLUR_LANES`` lines side by side (``_blur_layout``).

    Each pass computes ``0.5 x[i] + 0.25 (x[i-1] + x[i+1])`` from the previous pass's values, in the
    reference's operation order (bit-identical results). Segments are disjoint, so the order in which they
    are filtered does not change a bit of the result."""
    _, outer2, n, inner = volume.shape
    S = segments.shape[0]
    chunks = min(_BLUR_CHUNKS, S)
    for chunk in prange(chunks):
        a = np.empty(n * _BLUR_LANES, np.float32)
        b = np.empty(n * _BLUR_LANES, np.float32)
        for s in range(chunk * S // chunks, (chunk + 1) * S // chunks):
            o1, y0, lines, m0, w = _item_lines(segments[s, 0], outer2, inner)
            _binomial_passes_on_segment(volume, o1, y0, lines, m0, w, segments[s, 1], segments[s, 2], passes, a, b)
    return volume


# ---------------------------------------------------------------------------------------------------
# Mesh regularisers, forward and backward. Sums run in float64 in a fixed order (deterministic for any
# thread count); the torch functions in ``recon.geometry.regularizers`` are the reference.
#
# Scatters (faces or edges adding into their vertices) are split over the cores by owner: each work item
# owns a contiguous range of the output's rows, reads every face or edge in order and adds only into its
# own rows. Every row so receives its terms in the serial loop's order, and the result is bit for bit the
# serial one for any thread count; the price is that each item reads the whole index array (cheap next to
# the arithmetic it skips), and a face or edge across two ranges is computed by both.


def owner_items() -> int:
    """Work items of an owner-split scatter: one per numba thread (passed in by the caller: a kernel that
    asked numba itself could not be cached)."""
    return numba.get_num_threads()


@njit(cache=True, inline="always")
def owned_rows(n, item, items):
    """The rows ``[lo, hi)`` of ``n`` that work item ``item`` of ``items`` owns."""
    return n * item // items, n * (item + 1) // items

_NORMAL_EPS = 1e-12
"""``torch.nn.functional.normalize``'s eps: a vector shorter than this is divided by it instead."""


@njit(cache=True, parallel=True)
def face_cross_kernel(verts, faces):
    """(cross [F, 3] float64, length [F] float64): ``(v1 - v0) x (v2 - v0)`` of each face and its norm."""
    F = faces.shape[0]
    cross = np.empty((F, 3), np.float64)
    length = np.empty(F, np.float64)
    for f in prange(F):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        ax, ay, az = verts[i1, 0] - verts[i0, 0], verts[i1, 1] - verts[i0, 1], verts[i1, 2] - verts[i0, 2]
        bx, by, bz = verts[i2, 0] - verts[i0, 0], verts[i2, 1] - verts[i0, 1], verts[i2, 2] - verts[i0, 2]
        cx, cy, cz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
        cross[f, 0], cross[f, 1], cross[f, 2] = cx, cy, cz
        length[f] = np.sqrt(cx * cx + cy * cy + cz * cz)
    return cross, length


@njit(cache=True, parallel=True)
def unit_normals_kernel(cross, length):
    """[F, 3] float64 ``cross / max(length, eps)``, as ``torch.nn.functional.normalize``."""
    F = cross.shape[0]
    out = np.empty((F, 3), np.float64)
    for f in prange(F):
        inv = 1.0 / max(length[f], _NORMAL_EPS)
        for c in range(3):
            out[f, c] = cross[f, c] * inv
    return out


@njit(cache=True)
def normal_consistency_forward_kernel(normals, edge_faces):
    """(mean of ``1 - n_a . n_b`` over edges with two faces, their count); ``normals`` [F, 3] unit."""
    total = 0.0
    count = 0
    for e in range(edge_faces.shape[0]):
        fa, fb = edge_faces[e, 0], edge_faces[e, 1]
        if fa < 0 or fb < 0:
            continue
        total += 1.0 - (normals[fa, 0] * normals[fb, 0] + normals[fa, 1] * normals[fb, 1]
                        + normals[fa, 2] * normals[fb, 2])
        count += 1
    return (total / count if count else 0.0), count


@njit(cache=True, inline="always")
def _add_face_cross_gradient(verts, i0, i1, i2, gx, gy, gz, out, lo, hi):
    """Add to ``out`` [V, 3] the gradient w.r.t. vertices i0, i1, i2 of g . c, where c = a x b is the face's
    area normal (a = v1 - v0, b = v2 - v0) and g = (gx, gy, gz): dL/da = b x g goes to v1, dL/db = g x a
    to v2, minus their sum to v0; only into the rows ``[lo, hi)``, in that order."""
    ax, ay, az = verts[i1, 0] - verts[i0, 0], verts[i1, 1] - verts[i0, 1], verts[i1, 2] - verts[i0, 2]
    bx, by, bz = verts[i2, 0] - verts[i0, 0], verts[i2, 1] - verts[i0, 1], verts[i2, 2] - verts[i0, 2]
    dax, day, daz = by * gz - bz * gy, bz * gx - bx * gz, bx * gy - by * gx
    dbx, dby, dbz = gy * az - gz * ay, gz * ax - gx * az, gx * ay - gy * ax
    if lo <= i1 < hi:
        out[i1, 0] += dax
        out[i1, 1] += day
        out[i1, 2] += daz
    if lo <= i2 < hi:
        out[i2, 0] += dbx
        out[i2, 1] += dby
        out[i2, 2] += dbz
    if lo <= i0 < hi:
        out[i0, 0] -= dax + dbx
        out[i0, 1] -= day + dby
        out[i0, 2] -= daz + dbz


@njit(cache=True, inline="always")
def _touches(i0, i1, i2, lo, hi):
    return (lo <= i0 < hi) or (lo <= i1 < hi) or (lo <= i2 < hi)


@njit(cache=True, parallel=True)
def normal_consistency_backward_kernel(verts, faces, normals, length, edge_faces, count, grad, items):
    """[V, 3] float32 gradient of ``normal_consistency`` w.r.t. the vertices, times ``grad``."""
    F = faces.shape[0]
    V = verts.shape[0]
    g_normal = np.zeros((F, 3), np.float64)
    scale = -grad / count
    for item in prange(items):
        lo, hi = owned_rows(F, item, items)
        for e in range(edge_faces.shape[0]):
            fa, fb = edge_faces[e, 0], edge_faces[e, 1]
            if fa < 0 or fb < 0:
                continue
            if lo <= fa < hi:
                for c in range(3):
                    g_normal[fa, c] += scale * normals[fb, c]
            if lo <= fb < hi:
                for c in range(3):
                    g_normal[fb, c] += scale * normals[fa, c]
    # Through n = c / |c|: the part of the gradient across n, over |c| (face by face, in parallel).
    for f in prange(F):
        gx, gy, gz = g_normal[f, 0], g_normal[f, 1], g_normal[f, 2]
        if gx == 0.0 and gy == 0.0 and gz == 0.0:
            continue
        ln = length[f]
        if ln > _NORMAL_EPS:
            nx, ny, nz = normals[f, 0], normals[f, 1], normals[f, 2]
            along = gx * nx + gy * ny + gz * nz
            inv = 1.0 / ln
            gx, gy, gz = (gx - along * nx) * inv, (gy - along * ny) * inv, (gz - along * nz) * inv
        else:
            gx, gy, gz = gx / _NORMAL_EPS, gy / _NORMAL_EPS, gz / _NORMAL_EPS
        g_normal[f, 0], g_normal[f, 1], g_normal[f, 2] = gx, gy, gz
    out = np.zeros((V, 3), np.float64)
    for item in prange(items):
        lo, hi = owned_rows(V, item, items)
        for f in range(F):
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            if not _touches(i0, i1, i2, lo, hi):
                continue
            gx, gy, gz = g_normal[f, 0], g_normal[f, 1], g_normal[f, 2]
            if gx == 0.0 and gy == 0.0 and gz == 0.0:
                continue
            _add_face_cross_gradient(verts, i0, i1, i2, gx, gy, gz, out, lo, hi)
    return out.astype(np.float32)


@njit(cache=True)
def laplacian_forward_kernel(verts, edges):
    """(mean of |v - mean(neighbours)|^2 over vertices with neighbours, the Laplacians [V, 3] float64
    (0 without neighbours), degrees [V], count of vertices with neighbours). Serial: split by owner it
    measured slower (3.7 -> 4.4 ms on the sphere's 158k vertices), the loss's ordered sum being serial anyway."""
    V = verts.shape[0]
    total = np.zeros((V, 3), np.float64)
    degree = np.zeros(V, np.float64)
    for e in range(edges.shape[0]):
        a, b = edges[e, 0], edges[e, 1]
        for c in range(3):
            total[a, c] += verts[b, c]
            total[b, c] += verts[a, c]
        degree[a] += 1.0
        degree[b] += 1.0
    lap = np.zeros((V, 3), np.float64)
    loss = 0.0
    count = 0
    for v in range(V):
        if degree[v] == 0.0:
            continue
        for c in range(3):
            lap[v, c] = verts[v, c] - total[v, c] / degree[v]
            loss += lap[v, c] * lap[v, c]
        count += 1
    return (loss / count if count else 0.0), lap, degree, count


@njit(cache=True, parallel=True)
def laplacian_backward_kernel(lap, degree, edges, count, grad, items):
    """[V, 3] float32 gradient of ``laplacian_smoothing`` w.r.t. the vertices, times ``grad``."""
    scale = 2.0 * grad / count
    out = scale * lap
    V = lap.shape[0]
    for item in prange(items):
        lo, hi = owned_rows(V, item, items)
        for e in range(edges.shape[0]):
            a, b = edges[e, 0], edges[e, 1]
            if lo <= a < hi:
                for c in range(3):
                    out[a, c] -= scale * lap[b, c] / degree[b]
            if lo <= b < hi:
                for c in range(3):
                    out[b, c] -= scale * lap[a, c] / degree[a]
    return out.astype(np.float32)


@njit(cache=True, parallel=True)
def _vertex_normal_sums(verts, faces, items):
    """[V, 3] float64 sum of the area normals ((v1 - v0) x (v2 - v0)) of the faces around each vertex."""
    cross, _ = face_cross_kernel(verts, faces)
    V = verts.shape[0]
    total = np.zeros((V, 3), np.float64)
    for item in prange(items):
        lo, hi = owned_rows(V, item, items)
        for f in range(faces.shape[0]):
            for k in range(3):
                v = faces[f, k]
                if lo <= v < hi:
                    for c in range(3):
                        total[v, c] += cross[f, c]
    return total


@njit(cache=True, parallel=True)
def vertex_normals_kernel(verts, faces, items):
    """[V, 3] float32 area-weighted unit vertex normals (no gradient)."""
    total = _vertex_normal_sums(verts, faces, items)
    out = np.empty((verts.shape[0], 3), np.float32)
    for v in prange(verts.shape[0]):
        length = max(np.sqrt(total[v, 0] ** 2 + total[v, 1] ** 2 + total[v, 2] ** 2), _NORMAL_EPS)
        for c in range(3):
            out[v, c] = total[v, c] / length
    return out


@njit(cache=True, parallel=True)
def vertex_normals_backward_kernel(verts, faces, grad_normals, items):
    """``vertex_normals_kernel``'s backward: [V, 3] float32 gradient w.r.t. ``verts`` given the gradient
    ``grad_normals`` [V, 3] w.r.t. the unit normals: a face's area normal gets the sum of its corners'
    gradients on the normals' sums."""
    V = verts.shape[0]
    total = _vertex_normal_sums(verts, faces, items)
    # Through the normalisation n / max(|n|, eps): the gradient's component along n drops out.
    grad_total = np.empty((V, 3), np.float64)
    for v in prange(V):
        length = np.sqrt(total[v, 0] ** 2 + total[v, 1] ** 2 + total[v, 2] ** 2)
        if length > _NORMAL_EPS:
            along = (grad_normals[v, 0] * total[v, 0] + grad_normals[v, 1] * total[v, 1]
                     + grad_normals[v, 2] * total[v, 2]) / (length * length)
            for c in range(3):
                grad_total[v, c] = (grad_normals[v, c] - along * total[v, c]) / length
        else:
            for c in range(3):
                grad_total[v, c] = grad_normals[v, c] / _NORMAL_EPS
    out = np.zeros((V, 3), np.float64)
    for item in prange(items):
        lo, hi = owned_rows(V, item, items)
        for f in range(faces.shape[0]):
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            if not _touches(i0, i1, i2, lo, hi):
                continue
            gx = grad_total[i0, 0] + grad_total[i1, 0] + grad_total[i2, 0]
            gy = grad_total[i0, 1] + grad_total[i1, 1] + grad_total[i2, 1]
            gz = grad_total[i0, 2] + grad_total[i1, 2] + grad_total[i2, 2]
            _add_face_cross_gradient(verts, i0, i1, i2, gx, gy, gz, out, lo, hi)
    return out.astype(np.float32)


@njit(cache=True, parallel=True)
def sdf_sign_kernel(sdf, edges, items):
    """(loss, gradient [N] float32) of DMTet's sign regulariser: over the edges [E, 2] whose ends differ in
    sign, the binary cross-entropy of each end's sdf (a logit) against the other end's side, summed over the
    two ends and averaged over those edges; (0, zeros) without any.

    The per-edge terms are computed in parallel; the loss and the per-vertex gradient are then summed in
    float64 in a fixed order (first ends, then second ends, in edge order: ``bincount``'s, whatever the
    thread count)."""
    E = edges.shape[0]
    cross = np.empty(E, np.bool_)
    loss_e = np.empty(E, np.float64)
    grad_a = np.empty(E, np.float32)
    grad_b = np.empty(E, np.float32)
    one = np.float32(1.0)
    for e in prange(E):
        sa, sb = sdf[edges[e, 0]], sdf[edges[e, 1]]
        cross[e] = (sa > 0) != (sb > 0)
        if not cross[e]:
            continue
        total = 0.0
        for end in range(2):
            logit = sa if end == 0 else sb
            target = np.float32(1.0) if (sb if end == 0 else sa) > 0 else np.float32(0.0)
            decay = np.exp(-np.abs(logit))
            total += max(logit, np.float32(0.0)) - logit * target + np.log1p(decay)
            grad = (one if logit >= 0 else decay) / (one + decay) - target
            if end == 0:
                grad_a[e] = grad
            else:
                grad_b[e] = grad
        loss_e[e] = total
    count = 0
    loss = 0.0
    for e in range(E):
        if cross[e]:
            count += 1
            loss += loss_e[e]
    grad = np.zeros(sdf.shape[0], np.float64)
    if count == 0:
        return 0.0, grad.astype(np.float32)
    count32 = np.float32(count)
    for item in prange(items):
        lo, hi = owned_rows(sdf.shape[0], item, items)
        for e in range(E):
            if cross[e] and lo <= edges[e, 0] < hi:
                grad[edges[e, 0]] += grad_a[e] / count32
        for e in range(E):
            if cross[e] and lo <= edges[e, 1] < hi:
                grad[edges[e, 1]] += grad_b[e] / count32
    return loss / count, grad.astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# The band's differentiable state and the crossing vertices, forward and backward.


@njit(cache=True, parallel=True)
def band_state_forward_kernel(deform, sdf, lattice, cap, verts):
    """For the band's lattice vertices ``verts`` [Vb]: their deformation [Vb, 3] and positions [Vb, 3]
    gathered, and the sdf cut by the floor and the lattice's border ``min(sdf, cap)`` [Vb]. (The tanh is left to torch,
    whose vectorised tanh is 20x faster than a scalar one per entry.)"""
    Vb = verts.shape[0]
    raw = np.empty((Vb, 3), np.float32)
    base = np.empty((Vb, 3), np.float32)
    out_sdf = np.empty(Vb, np.float32)
    for i in prange(Vb):
        v = verts[i]
        for c in range(3):
            raw[i, c] = deform[v, c]
            base[i, c] = lattice[v, c]
        out_sdf[i] = min(sdf[v], cap[v])
    return raw, base, out_sdf


@njit(cache=True, parallel=True)
def band_state_backward_kernel(sdf, cap, verts, bounded, scale, grad_pos, grad_sdf, n_lattice):
    """Gradients [N, 3] and [N] on the whole lattice's deformation and sdf (zero off the band). At a tie of
    the sdf and its cap the gradient is halved, as ``torch.minimum``'s."""
    g_deform = np.zeros((n_lattice, 3), np.float32)
    g_sdf = np.zeros(n_lattice, np.float32)
    for i in prange(verts.shape[0]):
        v = verts[i]  # the band's vertices are distinct: no two items write one entry
        for c in range(3):
            t = bounded[i, c]
            g_deform[v, c] = grad_pos[i, c] * scale * (1 - t * t)
        s, a = sdf[v], cap[v]
        g_sdf[v] = grad_sdf[i] if s < a else (np.float32(0.5) * grad_sdf[i] if s == a else np.float32(0.0))
    return g_deform, g_sdf


@njit(cache=True, parallel=True)
def crossing_forward_kernel(positions, sdf, edges, vert_edge):
    """[V, 3] zero crossings ``(pa sb - pb sa) / (sb - sa)`` on the edges ``edges[vert_edge]``."""
    V = vert_edge.shape[0]
    out = np.empty((V, 3), np.float32)
    for k in prange(V):
        a, b = edges[vert_edge[k], 0], edges[vert_edge[k], 1]
        sa, sb = sdf[a], sdf[b]
        d = sb - sa
        for c in range(3):
            out[k, c] = (positions[a, c] * sb - positions[b, c] * sa) / d
    return out


@njit(cache=True, parallel=True)
def crossing_backward_kernel(positions, sdf, edges, vert_edge, verts, grad_verts, items):
    """Gradients [Vb, 3] and [Vb] of the crossings on the band's positions and sdf."""
    g_pos = np.zeros(positions.shape, np.float32)
    g_sdf = np.zeros(sdf.shape[0], np.float32)
    for item in prange(items):
        lo, hi = owned_rows(sdf.shape[0], item, items)
        for k in range(vert_edge.shape[0]):
            a, b = edges[vert_edge[k], 0], edges[vert_edge[k], 1]
            own_a, own_b = lo <= a < hi, lo <= b < hi
            if not (own_a or own_b):
                continue
            sa, sb = sdf[a], sdf[b]
            inv = np.float32(1.0) / (sb - sa)
            ga = np.float32(0.0)
            gb = np.float32(0.0)
            for c in range(3):
                g = grad_verts[k, c]
                if own_a:
                    g_pos[a, c] += g * sb * inv
                if own_b:
                    g_pos[b, c] -= g * sa * inv
                # v = N / d with N = pa sb - pb sa, d = sb - sa: dv/dsa = (v - pb) / d, dv/dsb = (pa - v) / d.
                ga += g * (verts[k, c] - positions[b, c])
                gb += g * (positions[a, c] - verts[k, c])
            if own_a:
                g_sdf[a] += ga * inv
            if own_b:
                g_sdf[b] += gb * inv
    return g_pos, g_sdf


# ---------------------------------------------------------------------------------------------------
# The narrow band's tetrahedra, vertices and edges.


@njit(cache=True, parallel=True)
def surface_cells_kernel(sdf):
    """[R, R, R] bool: cells whose 8 corners (of ``sdf`` [R+1]^3, inside where > 0) are not all on one side."""
    R = sdf.shape[0] - 1
    out = np.empty((R, R, R), np.bool_)
    for i in prange(R):
        for j in range(R):
            for k in range(R):
                first = sdf[i, j, k] > 0
                mixed = False
                for c in range(1, 8):
                    if (sdf[i + (c & 1), j + (c >> 1 & 1), k + (c >> 2 & 1)] > 0) != first:
                        mixed = True
                        break
                out[i, j, k] = mixed
    return out


@njit(cache=True, inline="always")
def _cell_base(c, R, n):
    return ((c // (R * R)) * n + (c // R) % R) * n + c % R


@njit(cache=True, parallel=True)
def band_kernel(cells, R, cube_tets, tet_edge_pairs, directions):
    """The narrow band's topology from its cells [C] (ascending), as ``recon.geometry.tets.narrow_band``'s
    torch code builds it, in the same order: (verts [Vb], tets [6 C, 4], edges [E, 2], tet_edges [6 C, 6]).

    Cells are processed in parallel; the two compactions (used vertices, used edges) are serial scans.
    Parallel marking writes only the value 0 into shared arrays, so its races cannot change the result.

    Args:
        cube_tets: [6, 4] corner codes (bit 0: +x, bit 1: +y, bit 2: +z); tet_edge_pairs: [6, 2] local
            vertex pairs; directions: [7] lattice-index offsets of the Kuhn edges, ascending.
    """
    n = R + 1
    C = cells.shape[0]
    offsets = np.empty((6, 4), np.int64)
    for t in range(6):
        for m in range(4):
            code = cube_tets[t, m]
            offsets[t, m] = (code & 1) * n * n + (code >> 1 & 1) * n + (code >> 2 & 1)
    direction_of = np.full(n * n + n + 2, -1, np.int64)
    for d in range(7):
        direction_of[directions[d]] = d
    # Each tet edge (a, b) as (a's offset slot, direction) per (tet, edge): the same for every cell.
    edge_from = np.empty((6, 6), np.int64)
    edge_dir = np.empty((6, 6), np.int64)
    for t in range(6):
        for j in range(6):
            a, b = offsets[t, tet_edge_pairs[j, 0]], offsets[t, tet_edge_pairs[j, 1]]
            edge_from[t, j] = a
            edge_dir[t, j] = direction_of[b - a]
    local_of = np.full(n * n * n, -1, np.int64)
    for ci in prange(C):
        base = _cell_base(cells[ci], R, n)
        for t in range(6):
            for m in range(4):
                local_of[base + offsets[t, m]] = 0
    count = 0
    for v in range(n * n * n):
        if local_of[v] == 0:
            local_of[v] = count
            count += 1
    verts = np.empty(count, np.int64)
    for v in range(n * n * n):
        if local_of[v] >= 0:
            verts[local_of[v]] = v
    tets = np.empty((6 * C, 4), np.int64)
    edge_of = np.full(7 * count, -1, np.int64)
    for ci in prange(C):
        base = _cell_base(cells[ci], R, n)
        for t in range(6):
            for m in range(4):
                tets[6 * ci + t, m] = local_of[base + offsets[t, m]]
            for j in range(6):
                edge_of[local_of[base + edge_from[t, j]] * 7 + edge_dir[t, j]] = 0
    E = 0
    for key in range(7 * count):
        if edge_of[key] == 0:
            edge_of[key] = E
            E += 1
    edges = np.empty((E, 2), np.int64)
    for key in range(7 * count):
        e = edge_of[key]
        if e >= 0:
            edges[e, 0] = key // 7
            edges[e, 1] = local_of[verts[key // 7] + directions[key % 7]]
    tet_edges = np.empty((6 * C, 6), np.int64)
    for ci in prange(C):
        base = _cell_base(cells[ci], R, n)
        for t in range(6):
            for j in range(6):
                tet_edges[6 * ci + t, j] = edge_of[local_of[base + edge_from[t, j]] * 7 + edge_dir[t, j]]
    return verts, tets, edges, tet_edges

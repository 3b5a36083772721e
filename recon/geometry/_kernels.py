"""numba kernels of the refinement's per-step work on the CPU: the combinatorial part of marching
tetrahedra (with the orientation of each face), 1-ring normal smoothing and the binomial blur of the
lattice gradients. Called through ``recon.geometry.tets``, ``recon.geometry.regularizers`` and
``recon.refine.train.binomial_blur``, whose torch code is the reference these are tested against
(identical outputs). Each runs once per refinement step over the whole band, where the torch versions
spent most of their time allocating temporaries.
"""

from __future__ import annotations

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
def smooth_normals_kernel(normals, edges, iterations):
    """[V, 3] float32 normals averaged with their 1-ring ``iterations`` times, renormalised each time.

    Args:
        normals: [V, 3] float32 (not modified); edges: [E, 2] int64 unique undirected edges.
    """
    n = normals.copy()
    total = np.empty_like(n)
    V = n.shape[0]
    for _ in range(iterations):
        total[:] = n
        # Both directions in turn, as the reference's two index_add_ calls (same summation order).
        for e in range(edges.shape[0]):
            for c in range(3):
                total[edges[e, 0], c] += n[edges[e, 1], c]
        for e in range(edges.shape[0]):
            for c in range(3):
                total[edges[e, 1], c] += n[edges[e, 0], c]
        for v in range(V):
            length = np.sqrt(total[v, 0] ** 2 + total[v, 1] ** 2 + total[v, 2] ** 2)
            length = max(length, np.float32(1e-12))
            for c in range(3):
                n[v, c] = total[v, c] / length
    return n


@njit(cache=True, parallel=True)
def binomial_pass_kernel(volume, passes):
    """``passes`` in-place passes of the filter [1, 2, 1] / 4 along the third axis of ``volume``
    [outer1, outer2, n, inner] (float32, any strides: a view into a larger array works); the first and
    last entries along that axis stay as they are.

    Each pass computes ``0.5 x[i] + 0.25 (x[i-1] + x[i+1])`` from the previous pass's values, in the
    reference's operation order (bit-identical results). Split over (outer1, outer2, inner block) items.
    """
    outer1, outer2, n, inner = volume.shape
    block = 64
    blocks = (inner + block - 1) // block
    items = outer1 * outer2 * blocks
    half, quarter = np.float32(0.5), np.float32(0.25)
    prev_rows = np.empty((items, min(block, inner)), np.float32)  # one allocation, not one per item
    for item in prange(items):
        line, m0 = item // blocks, (item % blocks) * block
        o1, o2 = line // outer2, line % outer2
        m1 = min(m0 + block, inner)
        prev = prev_rows[item]
        for _ in range(passes):
            for m in range(m0, m1):
                prev[m - m0] = volume[o1, o2, 0, m]
            for i in range(1, n - 1):
                for m in range(m0, m1):
                    cur = volume[o1, o2, i, m]
                    volume[o1, o2, i, m] = half * cur + quarter * (prev[m - m0] + volume[o1, o2, i + 1, m])
                    prev[m - m0] = cur
    return volume

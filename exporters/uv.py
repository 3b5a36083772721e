"""UV unwrapping: xatlas isolated in a child process, with a fallback chain that always ends in an atlas.

xatlas takes ~33 s on 94k faces here and segfaults on some meshes (a perfect icosphere(6) every time,
see shared/DESIGN.md), so it runs as ``python -m exporters._xatlas_child``: a crash or a timeout is
reported as ``UnwrapError`` and never takes the run down. ``unwrap`` tries xatlas, then xatlas on a
slightly perturbed mesh, then on a mesh decimated to half its faces, and finally our own planar-chart
unwrap (``unwrap_planar_charts``), which cannot fail; ``Unwrapped.method`` says which path was used.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class UnwrapError(RuntimeError):
    """xatlas crashed, timed out or returned nothing usable."""


@dataclass
class Unwrapped:
    """A mesh re-indexed for its UV atlas (vertices on chart seams are split).

    Attributes:
        verts: [V', 3] float32 positions.
        faces: [F, 3] int64.
        uvs: [V', 2] float32 in [0, 1], glTF convention (origin top-left, v down).
        vmapping: [V'] index of each new vertex in the input mesh.
        method: which path produced it ('xatlas', 'xatlas-perturbed', 'xatlas-decimated', 'planar-charts').
        notes: why earlier paths were not used (one line each).
    """

    verts: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    vmapping: np.ndarray
    method: str
    notes: list[str] = field(default_factory=list)


def unwrap_xatlas(verts: np.ndarray, faces: np.ndarray, resolution: int = 1024, padding: int = 4,
                  timeout_s: float = 120.0) -> Unwrapped:
    """Unwrap with xatlas in a child process.

    Args:
        resolution: texture side the charts are packed for (padding is in texels of it).
        padding: texels between charts, so bilinear lookups and mip levels do not bleed.
        timeout_s: the child is killed after this long.
    Raises:
        UnwrapError: on a crash (e.g. SIGSEGV), a timeout or an empty result.
    """
    with tempfile.TemporaryDirectory(prefix="orbitmesh-xatlas-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, verts=np.asarray(verts, np.float32), faces=np.asarray(faces, np.int64),
                 resolution=resolution, padding=padding)
        try:
            proc = subprocess.run([sys.executable, "-m", "exporters._xatlas_child", str(src), str(dst)],
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise UnwrapError(f"xatlas timed out after {timeout_s:.0f} s on {len(faces)} faces") from None
        if proc.returncode != 0:
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
            tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            raise UnwrapError(f"xatlas crashed ({how}) on {len(faces)} faces {tail}".strip())
        out = np.load(dst)
        vmapping, new_faces, uvs = out["vmapping"], out["faces"], out["uvs"]
    if len(new_faces) != len(faces) or len(uvs) == 0:
        raise UnwrapError("xatlas returned an incomplete atlas")
    uvs = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], axis=1).astype(np.float32)  # xatlas v up -> glTF v down
    return Unwrapped(verts=np.asarray(verts, np.float32)[vmapping], faces=new_faces, uvs=uvs,
                     vmapping=vmapping, method="xatlas")


# ---------------------------------------------------------------------------------------------------
# Our own unwrap: planar charts, shelf-packed. Used only when xatlas fails.


def _shelf_pack(sizes: np.ndarray, width: float) -> tuple[np.ndarray, float]:
    """Place rectangles [N, 2] (w, h) in rows of the given width, tallest first.

    Returns:
        offsets [N, 2] of each rectangle's lower-left corner and the total height used.
    """
    order = np.argsort(-sizes[:, 1], kind="stable")
    offsets = np.zeros_like(sizes)
    x = y = row_h = 0.0
    for i in order:
        w, h = sizes[i]
        if x + w > width and x > 0:
            x, y, row_h = 0.0, y + row_h, 0.0
        offsets[i] = (x, y)
        x += w
        row_h = max(row_h, h)
    return offsets, y + row_h


def unwrap_planar_charts(verts: np.ndarray, faces: np.ndarray, resolution: int = 1024,
                         padding: int = 4) -> Unwrapped:
    """A simple chart-based atlas that always succeeds (the last resort after xatlas).

    Faces are grouped by the axis their normal is closest to (six directions); each connected group is
    one chart, projected onto the plane of its axis (orientation-preserving, so no face is mirrored),
    and the charts are shelf-packed at the largest uniform texel density that fits, with ``padding``
    texels around each. Charts are not checked for self-overlap (a strongly curved region whose
    normals stay within one axis's cone could fold onto itself in projection).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    v = np.asarray(verts, np.float64)
    f = np.asarray(faces, np.int64)
    tri = v[f]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    axis = np.abs(normal).argmax(axis=1)
    sign = np.sign(normal[np.arange(len(f)), axis]).astype(np.int64)
    group = axis * 2 + (sign > 0)
    from recon.render.topology import compute_edge_topology

    edge_faces = compute_edge_topology(f).edge_faces.astype(np.int64)
    a, b = edge_faces[edge_faces[:, 1] >= 0].T  # faces sharing an edge
    keep = group[a] == group[b]
    graph = coo_matrix((np.ones(keep.sum()), (a[keep], b[keep])), shape=(len(f), len(f)))
    n_charts, chart = connected_components(graph, directed=False)

    # In-plane axes (u, v) per group with u x v = +normal direction: the projection keeps the winding.
    plane = {0: (1, 2), 1: (2, 0), 2: (0, 1)}
    key = chart[:, None] * len(v) + f  # one new vertex per (chart, vertex)
    uniq, inverse = np.unique(key.reshape(-1), return_inverse=True)
    new_faces = inverse.reshape(-1, 3)
    vmapping = uniq % len(v)
    vchart = uniq // len(v)
    chart_group = np.zeros(n_charts, np.int64)
    chart_group[chart] = group
    g = chart_group[vchart]
    ax, positive = g // 2, (g % 2) == 1
    p = v[vmapping]
    u_idx = np.array([plane[i][0] for i in range(3)])[ax]
    v_idx = np.array([plane[i][1] for i in range(3)])[ax]
    uv = np.stack([p[np.arange(len(p)), u_idx], p[np.arange(len(p)), v_idx]], axis=1)
    uv[~positive, 0] *= -1  # looking from the negative side mirrors u

    lo = np.full((n_charts, 2), np.inf)
    hi = np.full((n_charts, 2), -np.inf)
    np.minimum.at(lo, vchart, uv)
    np.maximum.at(hi, vchart, uv)
    extent = np.maximum(hi - lo, 1e-9)
    # Largest texel density whose packing fits the square (geometric bisection on the density); with
    # very many charts, less padding.
    for pad in sorted({padding, padding // 2, 1, 0}, reverse=True):
        lo_d, hi_d = 1e-6, resolution / float(extent.max())
        best = None
        for _ in range(40):
            density = np.sqrt(lo_d * hi_d)
            sizes = np.ceil(extent * density) + 2 * pad
            off, height = _shelf_pack(sizes, resolution)
            if height <= resolution and sizes[:, 0].max() <= resolution:
                lo_d, best = density, (density, off)
            else:
                hi_d = density
            if hi_d / lo_d < 1.01:
                break
        if best is not None:
            break
    else:
        raise UnwrapError(f"{n_charts} planar charts do not fit a {resolution}² atlas")
    density, offsets = best
    texel = (uv - lo[vchart]) * density + offsets[vchart] + pad
    uvs = texel / resolution
    uvs = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], axis=1).astype(np.float32)  # v up -> glTF v down
    return Unwrapped(verts=v[vmapping].astype(np.float32), faces=new_faces, uvs=uvs, vmapping=vmapping,
                     method="planar-charts")


def unwrap(verts: np.ndarray, faces: np.ndarray, resolution: int = 1024, padding: int = 4,
           timeout_s: float = 180.0) -> Unwrapped:
    """An atlas for the mesh, whatever happens to xatlas.

    Tries, in order: xatlas; xatlas on the mesh perturbed by 1e-6 of its extent (degenerate symmetric
    configurations are what crash it); xatlas on the mesh decimated to half its faces (the returned
    ``verts``/``faces`` are then that mesh); our planar charts. Each failure is logged and kept in
    ``notes``. ``timeout_s`` bounds each xatlas attempt.
    """
    from exporters.simplify import simplify_mesh

    verts = np.asarray(verts, np.float64)
    faces = np.asarray(faces, np.int64)
    notes: list[str] = []
    extent = float(np.ptp(verts, axis=0).max()) if len(verts) else 1.0
    jitter = np.random.default_rng(0).normal(0.0, 1e-6 * extent, verts.shape)
    attempts = [("xatlas", lambda: (verts, faces, verts)),
                ("xatlas-perturbed", lambda: (verts + jitter, faces, verts)),
                ("xatlas-decimated", lambda: (*simplify_mesh(verts, faces, max(4, len(faces) // 2)), None))]
    for method, make in attempts:
        try:
            v_in, f_in, v_out = make()
            result = unwrap_xatlas(v_in, f_in, resolution, padding, timeout_s)
        except UnwrapError as exc:
            notes.append(f"{method}: {exc}")
            log.warning("UV unwrap: %s; trying the next method", notes[-1])
            continue
        if v_out is not None:  # perturbed: keep the true positions
            result.verts = np.asarray(v_out, np.float32)[result.vmapping]
        result.method, result.notes = method, notes
        return result
    result = unwrap_planar_charts(verts, faces, resolution, padding)
    result.notes = notes
    return result

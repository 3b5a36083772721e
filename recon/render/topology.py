"""Edge topology of a triangle mesh: unique edges and the (up to two) faces beside each.

``antialias`` needs it to find silhouette edges. It is cached by the triangle array's content, so a
training loop that renders the same topology every step pays for it once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass(frozen=True)
class EdgeTopology:
    """Attributes:
    edges: [E, 2] int32 vertex indices, ``edges[:, 0] < edges[:, 1]``.
    edge_faces: [E, 2] int32 indices of the faces beside each edge; -1 where there is none
        (a boundary edge). For a non-manifold edge, two of its faces.
    """

    edges: np.ndarray
    edge_faces: np.ndarray


def compute_edge_topology(tri: np.ndarray) -> EdgeTopology:
    """Unique edges of ``tri`` [F, 3] and their adjacent faces (vectorised, no Python loop over faces)."""
    tri = np.asarray(tri, dtype=np.int64)
    F = tri.shape[0]
    half = np.stack([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]], axis=1).reshape(-1, 2)
    half.sort(axis=1)
    face_of = np.repeat(np.arange(F), 3)
    n_vert = int(tri.max()) + 1 if F else 0
    key = half[:, 0] * n_vert + half[:, 1]
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    first = np.ones(len(key_sorted), dtype=bool)
    first[1:] = key_sorted[1:] != key_sorted[:-1]
    edge_id_sorted = np.cumsum(first) - 1
    E = int(edge_id_sorted[-1]) + 1 if len(edge_id_sorted) else 0
    edges = half[order[first]].astype(np.int32)
    edge_faces = np.full((E, 2), -1, dtype=np.int32)
    # The first occurrence of each edge fills slot 0, the next slot 1.
    starts = np.flatnonzero(first)
    edge_faces[:, 0] = face_of[order[starts]]
    second = starts + 1
    has_second = second < len(key_sorted)
    has_second[has_second] = ~first[second[has_second]]
    edge_faces[has_second, 1] = face_of[order[second[has_second]]]
    return EdgeTopology(edges=edges, edge_faces=edge_faces)


_CACHE: OrderedDict[bytes, EdgeTopology] = OrderedDict()
_CACHE_SIZE = 8


def edge_topology(tri: Tensor | np.ndarray) -> EdgeTopology:
    """Cached ``compute_edge_topology`` keyed by the content of ``tri``."""
    arr = np.ascontiguousarray(tri.detach().cpu().numpy() if isinstance(tri, Tensor) else tri, dtype=np.int32)
    key = hashlib.blake2b(arr.tobytes(), digest_size=16).digest() + str(arr.shape).encode()
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    topo = compute_edge_topology(arr)
    _CACHE[key] = topo
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return topo

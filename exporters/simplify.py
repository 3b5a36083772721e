"""Decimation to a face budget with fast-simplification (quadric error metrics with a flip check).

The budget is a maximum: game and AR pipelines reject assets over it, so when the library lands above
it the decimation is rerun, more aggressive and aiming lower. Opposite duplicate faces (zero-volume fins the edge
collapses can leave) are removed afterwards.
"""

from __future__ import annotations

import numpy as np


def remove_duplicate_faces(faces: np.ndarray) -> np.ndarray:
    """Faces [F, 3] without any face whose vertex set occurs more than once (both copies go: a pair of
    opposite faces on the same three vertices is a fin with no volume)."""
    if len(faces) == 0:
        return faces
    _, inverse, counts = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True, return_counts=True)
    return faces[counts[inverse.reshape(-1)] == 1]


def compact(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no face uses; re-index the faces."""
    used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
    return verts[used], inverse.reshape(-1, 3)


def simplify_mesh(verts: np.ndarray, faces: np.ndarray, max_faces: int,
                  aggressiveness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Decimate to at most ``max_faces`` faces.

    Args:
        verts: [V, 3]; faces: [F, 3] counter-clockwise from outside.
        max_faces: the budget; 0, or a mesh already within it, returns the mesh unchanged (compacted).
        aggressiveness: fast-simplification's ``agg`` (lower: closer to the shape, slower).
    Returns:
        verts [V', 3] float64 and faces [F', 3] int64 with F' <= max_faces.
    """
    import fast_simplification

    verts = np.asarray(verts, np.float64)
    faces = np.asarray(faces, np.int64)
    if max_faces <= 0 or len(faces) <= max_faces:
        return compact(verts, faces)
    # At low aggressiveness the library can stall above the target; each retry is more aggressive and
    # aims lower by the overshoot.
    target, agg = max_faces, aggressiveness
    for _ in range(8):
        v, f = fast_simplification.simplify(verts, faces, target_count=target, agg=agg)
        f = remove_duplicate_faces(np.asarray(f, np.int64))
        if len(f) <= max_faces:
            break
        agg = min(agg + 2.0, 12.0)
        target = max(4, int(target * max_faces / len(f)) - 1)
    else:
        raise RuntimeError(f"fast-simplification did not reach {max_faces} faces (got {len(f)})")
    return compact(np.asarray(v, np.float64), f)

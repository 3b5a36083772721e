"""PLY writer: the seam-free mesh (UV seams merged back) with per-vertex colours sampled from the baked
texture, binary little-endian. For tools that read vertex colours and no textures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.asset import TexturedMesh
from exporters.obj import up_transform
from recon.io import atomic_path, rgba_uint8


def write_ply(asset: TexturedMesh, path: str | Path, scale: float = 1.0, up: str = "y") -> list[Path]:
    """Write ``path`` (.ply) atomically."""
    import trimesh

    path = Path(path)
    verts, faces, colors = asset.vertex_colors()
    verts = (verts.astype(np.float64) @ up_transform(up).T) * scale
    mesh = trimesh.Trimesh(verts, faces, vertex_colors=rgba_uint8(colors), process=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type="ply", encoding="binary")
    return [path]

"""GLB writer: glTF 2.0, one mesh, one PBR metallic-roughness material with an sRGB baseColorTexture,
metallic 0, roughness 1, +Y up (our frame is glTF's). Written to a temporary name and renamed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from recon.io import atomic_path, to_uint8


def write_textured_glb(path: str | Path, verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray,
                       texture: np.ndarray, scale: float = 1.0) -> Path:
    """Write a textured GLB.

    Args:
        verts: [V, 3] positions (our frame: +Y up, front +Z; glTF's).
        faces: [F, 3] counter-clockwise.
        uvs: [V, 2] glTF convention (origin top-left, v down).
        texture: [H, W, 3] sRGB in [0, 1] or uint8.
        scale: multiply positions (units: metres = our units by default).
    """
    import trimesh

    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(to_uint8(texture)), metallicFactor=0.0, roughnessFactor=1.0, doubleSided=False,
    )
    # trimesh holds OpenGL-style UVs (v up) and flips them back to glTF's on export.
    uv_gl = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], axis=1)
    visual = trimesh.visual.TextureVisuals(uv=uv_gl, material=material)
    mesh = trimesh.Trimesh(np.asarray(verts, np.float64) * scale, np.asarray(faces, np.int64), visual=visual,
                           process=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type="glb")
    return path

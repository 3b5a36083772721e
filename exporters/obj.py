"""OBJ + MTL + PNG writer: positions, texture coordinates (OBJ's v-up convention), normals, one material
whose ``map_Kd`` is the albedo texture (and ``norm``/``map_Bump`` the normal map when there is one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.asset import TexturedMesh
from recon.io import atomic_path, write_png, write_text


def up_transform(up: str) -> np.ndarray:
    """3x3 rotation from our +Y-up frame to the requested up axis ('y': identity; 'z': +Y -> +Z, +Z -> -Y)."""
    if up == "y":
        return np.eye(3)
    if up == "z":
        return np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    raise ValueError(f"up axis must be 'y' or 'z', not {up!r}")


def write_obj(asset: TexturedMesh, path: str | Path, scale: float = 1.0, up: str = "y") -> list[Path]:
    """Write ``path`` (.obj) with ``<stem>.mtl`` and ``<stem>.png`` (and ``<stem>_normal.png``) beside it.

    The texture and material are written first and the OBJ last, each atomically, so an OBJ on disk
    always has its material and texture.
    """
    path = Path(path)
    rot = up_transform(up)
    stem = path.stem
    tex_path = path.with_name(f"{stem}.png")
    mtl_path = path.with_suffix(".mtl")
    written = [write_png(tex_path, asset.texture)]
    mtl = ["# orbitmesh: lighting-free albedo\nnewmtl albedo", "Ka 0 0 0", "Kd 1 1 1", "Ks 0 0 0", "d 1",
           "illum 1", f"map_Kd {tex_path.name}"]
    if asset.normal_texture is not None:
        normal_path = path.with_name(f"{stem}_normal.png")
        written.append(write_png(normal_path, asset.normal_texture))
        mtl.append(f"norm {normal_path.name}")
    written.append(write_text(mtl_path, "\n".join(mtl) + "\n"))

    v = (asset.verts.astype(np.float64) @ rot.T) * scale
    n = asset.normals.astype(np.float64) @ rot.T
    vt = np.stack([asset.uvs[:, 0], 1.0 - asset.uvs[:, 1]], axis=1)  # OBJ: origin bottom-left
    f = asset.faces + 1
    lines = [f"# orbitmesh: {len(v)} vertices, {len(f)} faces", f"mtllib {mtl_path.name}", "o asset"]
    body = "\n".join(lines) + "\n"
    body += "".join(f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in v)
    body += "".join(f"vt {a:.6f} {b:.6f}\n" for a, b in vt)
    body += "".join(f"vn {a:.5f} {b:.5f} {c:.5f}\n" for a, b, c in n)
    body += "usemtl albedo\n"
    body += "".join(f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}\n" for a, b, c in f)
    with atomic_path(path) as tmp:
        tmp.write_text(body)
    written.append(path)
    return written

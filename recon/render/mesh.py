"""Textured meshes for rendering: load GLB/glTF, OBJ+MTL and PLY (vertex colours) into one form.

A ``RenderMesh`` concatenates every geometry of a file into one vertex/face set; each face keeps a
material index, each material either a texture (with its base-colour factor) or a flat colour, and
vertex colours are kept where the file has them. One rasterization pass then renders the whole object.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.errors import InputError

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".off", ".stl")


@dataclass
class RenderMesh:
    """A triangle mesh with per-face materials.

    Attributes:
        verts: [V, 3] float32 positions.
        faces: [F, 3] int32 (counter-clockwise front faces).
        colors: [V, 3] float32 sRGB vertex colours in [0, 1] (white where the file has none).
        uvs: [V, 2] float32 texture coordinates, glTF convention (origin top-left, v down).
        face_material: [F] int64 index into ``textures`` / ``material_colors``.
        textures: per material, an [Ht, Wt, 3] float32 sRGB texture, or None for an untextured one.
        material_colors: [M, 3] float32 base-colour factors (multiplying texture or vertex colour).
    """

    verts: Tensor
    faces: Tensor
    colors: Tensor
    uvs: Tensor
    face_material: Tensor
    textures: list[Tensor | None] = field(default_factory=list)
    material_colors: Tensor = field(default_factory=lambda: torch.ones(1, 3))

    @property
    def bounds(self) -> tuple[Tensor, Tensor]:
        return self.verts.min(dim=0).values, self.verts.max(dim=0).values

    def normalized(self) -> RenderMesh:
        """Scaled so the largest bounding-box extent is 1 and the box is centred at the origin."""
        lo, hi = self.bounds
        scale = 1.0 / float((hi - lo).max())
        return replace(self, verts=(self.verts - (lo + hi) / 2) * scale)


def _material_of(visual) -> tuple[Tensor | None, Tensor]:
    """(texture or None, base colour factor [3]) of a trimesh visual.

    glTF (PBR): the factor is ``baseColorFactor`` (1 when absent, as the spec says) and multiplies the
    texture. OBJ/MTL (simple material): ``Kd`` is the colour of untextured materials; with a ``map_Kd``
    texture the texture alone is used, as common viewers do.
    """
    import trimesh

    material = getattr(visual, "material", None)
    image = None
    factor = torch.ones(3)
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        image = material.baseColorTexture
        if material.baseColorFactor is not None:
            arr = np.asarray(material.baseColorFactor, dtype=np.float32).reshape(-1)[:3]
            factor = torch.from_numpy(arr / 255.0 if arr.max() > 1.0 else arr)
    elif material is not None:
        image = getattr(material, "image", None)
        diffuse = getattr(material, "diffuse", None)
        if image is None and diffuse is not None:
            arr = np.asarray(diffuse, dtype=np.float32).reshape(-1)[:3]
            factor = torch.from_numpy(arr / 255.0 if arr.max() > 1.0 else arr)
    tex = None
    if image is not None and getattr(visual, "uv", None) is not None:
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tex = torch.from_numpy(arr.copy())
    return tex, factor


def load_render_mesh(path: str | Path) -> RenderMesh:
    """Load a mesh file (GLB/glTF, OBJ with MTL and textures, PLY with vertex colours, OFF, STL).

    Raises:
        InputError: missing file, unreadable file, or no triangles in it.
    """
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise InputError(path, f"not a mesh file this tool reads ({', '.join(MESH_SUFFIXES)})")
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many kinds for bad files
        raise InputError(path, f"cannot read mesh ({exc.__class__.__name__}: {exc})") from None
    try:
        return from_trimesh(loaded)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


def from_trimesh(loaded) -> RenderMesh:
    """A RenderMesh from an in-memory trimesh ``Trimesh`` or ``Scene`` (every geometry, transforms applied).

    Raises:
        ValueError: there are no triangles.
    """
    import trimesh

    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]
    elif isinstance(loaded, trimesh.Trimesh):
        geoms = [loaded]
    else:
        geoms = []
    geoms = [g for g in geoms if len(g.faces)]
    if not geoms:
        raise ValueError("no triangles found")
    verts, faces, colors, uvs, face_mat, textures, factors = [], [], [], [], [], [], []
    offset = 0
    for m, g in enumerate(geoms):
        v = torch.tensor(np.ascontiguousarray(g.vertices), dtype=torch.float32)
        f = torch.tensor(np.ascontiguousarray(g.faces), dtype=torch.int64)  # any strides (a reversed winding)
        visual = g.visual
        col = torch.ones(len(v), 3)
        uv = torch.zeros(len(v), 2)
        tex, factor = None, torch.ones(3)
        if visual.kind == "vertex":
            vc = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
            col = torch.from_numpy(vc.copy())
        elif visual.kind == "face":
            # Face colours: duplicate vertices per face so the colour stays flat.
            fc = torch.from_numpy(np.asarray(visual.face_colors, dtype=np.float32)[:, :3] / 255.0)
            v = v[f.reshape(-1)]
            f = torch.arange(len(v)).reshape(-1, 3)
            col = fc.repeat_interleave(3, dim=0)
            uv = torch.zeros(len(v), 2)
        elif visual.kind == "texture":
            tex, factor = _material_of(visual)
            if getattr(visual, "uv", None) is not None and len(visual.uv) == len(v):
                raw = torch.tensor(np.asarray(visual.uv), dtype=torch.float32)
                # trimesh returns OpenGL-style UVs (origin bottom-left); ours follow glTF (top-left).
                uv = torch.stack([raw[:, 0], 1.0 - raw[:, 1]], dim=1)
        elif visual.kind is None and getattr(visual, "material", None) is not None:
            _, factor = _material_of(visual)
        verts.append(v)
        faces.append(f + offset)
        colors.append(col)
        uvs.append(uv)
        face_mat.append(torch.full((len(f),), m, dtype=torch.int64))
        textures.append(tex)
        factors.append(factor)
        offset += len(v)
    return RenderMesh(
        verts=torch.cat(verts),
        faces=torch.cat(faces).to(torch.int32),
        colors=torch.cat(colors),
        uvs=torch.cat(uvs),
        face_material=torch.cat(face_mat),
        textures=textures,
        material_colors=torch.stack(factors),
    )

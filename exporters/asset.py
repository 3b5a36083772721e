"""The export stage's core: a mesh and its colour source in, a ``TexturedMesh`` (decimated, unwrapped,
baked) out. Writing it to files is ``exporters.writers``'s job."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from exporters.bake import atlas_texels, bake_colors, bake_normal_map, vertex_normals, vertex_tangents
from exporters.config import ExportConfig
from exporters.simplify import simplify_mesh
from exporters.uv import unwrap
from recon.geometry.closest import ClosestPoint
from recon.io import to_uint8

log = logging.getLogger(__name__)


@dataclass
class TexturedMesh:
    """A mesh ready to write: one UV atlas, one albedo texture, optionally a normal map.

    Attributes:
        verts: [V, 3] float32 positions (our frame: +Y up, front +Z).
        faces: [F, 3] int64, counter-clockwise from outside.
        uvs: [V, 2] float32 in [0, 1], glTF convention (origin top-left, v down).
        normals: [V, 3] float32 unit smooth normals (equal on both sides of a UV seam).
        texture: [S, S, 3] uint8 sRGB albedo (lighting-free).
        source_index: [V] index of each vertex in the seam-free mesh (UV seams split vertices).
        tangents: [V, 4] float32 glTF tangents (xyz, handedness w), with ``normal_texture``.
        normal_texture: [S, S, 3] uint8 tangent-space normal map (``0.5 n + 0.5``, +Y = texture up), or None.
        stats: what was done (face counts, unwrap method, coverage, seconds per step).
    """

    verts: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    normals: np.ndarray
    texture: np.ndarray
    source_index: np.ndarray
    tangents: np.ndarray | None = None
    normal_texture: np.ndarray | None = None
    stats: dict = field(default_factory=dict)

    def vertex_colors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The seam-free mesh with per-vertex colours sampled from the texture (bilinear, averaged over a
        vertex's copies): verts [V', 3], faces [F, 3], colours [V', 3] float in [0, 1]."""
        size_h, size_w = self.texture.shape[:2]
        x = np.clip(self.uvs[:, 0] * size_w - 0.5, 0, size_w - 1)
        y = np.clip(self.uvs[:, 1] * size_h - 0.5, 0, size_h - 1)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        x1, y1 = np.minimum(x0 + 1, size_w - 1), np.minimum(y0 + 1, size_h - 1)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        tex = self.texture.astype(np.float64) / 255.0
        col = ((tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx) * (1 - fy)
               + (tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx) * fy)
        n = int(self.source_index.max()) + 1
        sums = np.zeros((n, 3))
        np.add.at(sums, self.source_index, col)
        counts = np.bincount(self.source_index, minlength=n)[:, None]
        verts = np.zeros((n, 3), np.float32)
        verts[self.source_index] = self.verts
        return verts, self.source_index[self.faces], sums / np.maximum(counts, 1)


def default_padding(texture_size: int) -> int:
    """Texels between charts when the config says 0: 4 at 1024², 8 at 2048², at least 2."""
    return max(2, texture_size // 256)


def export_textured(cfg: ExportConfig, verts: np.ndarray, faces: np.ndarray,
                    color_fn: Callable[[Tensor], Tensor]) -> TexturedMesh:
    """Decimate to the face budget, unwrap, bake ``color_fn`` (and the normal map when asked).

    Args:
        verts: [V, 3], faces: [F, 3] the full-resolution surface (counter-clockwise from outside).
        color_fn: world points [P, 3] (float32 tensor) -> sRGB [P, 3] in [0, 1], defined on that surface.
    """
    stats: dict[str, object] = {"faces_in": int(len(faces))}
    verts = np.asarray(verts, np.float64)
    faces = np.asarray(faces, np.int64)
    if len(faces) == 0:
        raise ValueError("nothing to export: the mesh has no faces")
    t0 = time.perf_counter()
    low_v, low_f = simplify_mesh(verts, faces, cfg.faces, cfg.simplify_aggressiveness)
    stats["seconds_simplify"] = time.perf_counter() - t0
    log.info("export: %d -> %d faces in %.1f s", len(faces), len(low_f), stats["seconds_simplify"])

    t0 = time.perf_counter()
    padding = cfg.padding or default_padding(cfg.texture_size)
    atlas = unwrap(low_v, low_f, cfg.texture_size, padding, cfg.unwrap_timeout_s)
    stats["seconds_unwrap"] = time.perf_counter() - t0
    stats["unwrap_method"] = atlas.method
    if atlas.notes:
        stats["unwrap_notes"] = atlas.notes
    log.info("export: UV atlas by %s in %.1f s", atlas.method, stats["seconds_unwrap"])

    t0 = time.perf_counter()
    # Normals of the seam-free mesh (the atlas may belong to a further decimated one: use its own).
    base_verts = np.zeros((int(atlas.vmapping.max()) + 1, 3))
    base_verts[atlas.vmapping] = atlas.verts
    normals = vertex_normals(base_verts, atlas.vmapping[atlas.faces])[atlas.vmapping]
    source = ClosestPoint(verts, faces, k=8)
    texels = atlas_texels(atlas.verts, atlas.faces, atlas.uvs, cfg.texture_size)
    texture = bake_colors(texels, color_fn, source)
    tangents = normal_texture = None
    if cfg.normal_map:
        tangents = vertex_tangents(atlas.verts.astype(np.float64), atlas.faces, atlas.uvs, normals)
        normal_texture = to_uint8(bake_normal_map(texels, atlas.faces, normals, tangents, source,
                                                  vertex_normals(verts, faces)))
        tangents = tangents.astype(np.float32)
    stats["seconds_bake"] = time.perf_counter() - t0
    log.info("export: baked %d² texture%s in %.1f s", cfg.texture_size, " + normal map" if cfg.normal_map else "",
             stats["seconds_bake"])

    # How far the decimated surface strays from the full one, and whether any face turned over.
    centres = atlas.verts[atlas.faces].mean(axis=1)
    closest, face_idx, _ = source.query(centres)
    tri = atlas.verts[atlas.faces].astype(np.float64)
    low_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    src_tri = verts[faces[face_idx]]
    src_n = np.cross(src_tri[:, 1] - src_tri[:, 0], src_tri[:, 2] - src_tri[:, 0])
    stats.update(
        faces=int(len(atlas.faces)), verts=int(len(atlas.verts)), texture_size=cfg.texture_size, padding=padding,
        texture_coverage=float(texels.covered.mean()),
        flipped_faces=int(((low_n * src_n).sum(1) < 0).sum()),
        max_deviation=float(np.linalg.norm(closest - centres, axis=1).max()),
    )
    return TexturedMesh(verts=atlas.verts.astype(np.float32), faces=atlas.faces.astype(np.int64),
                        uvs=atlas.uvs.astype(np.float32), normals=normals.astype(np.float32),
                        texture=to_uint8(texture), source_index=atlas.vmapping.astype(np.int64),
                        tangents=tangents, normal_texture=normal_texture, stats=stats)

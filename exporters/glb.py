"""GLB writer (glTF 2.0 binary), written directly so every field is ours to get right.

One mesh, one primitive, one PBR metallic-roughness material: ``baseColorTexture`` (sRGB albedo, PNG),
metallic 0, roughness 1, optional ``normalTexture`` with TANGENT attributes. +Y up and metres: our frame
is glTF's, so no axis swap; ``scale`` multiplies positions. Accessors carry min/max where the spec asks,
buffer views their targets, and every chunk is 4-byte aligned, so the Khronos validator has nothing to say.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from exporters.asset import TexturedMesh
from recon import __version__
from recon.io import atomic_path

FLOAT, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE = 9729, 9987, 33071


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


class _Builder:
    """Accumulates buffer views and accessors over one binary buffer."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.blob.extend(data)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, kind: str, target: int, bounds: bool = False) -> int:
        component = {np.dtype(np.float32): FLOAT, np.dtype(np.uint16): UNSIGNED_SHORT,
                     np.dtype(np.uint32): UNSIGNED_INT}[array.dtype]
        acc = {"bufferView": self.view(np.ascontiguousarray(array).tobytes(), target), "componentType": component,
               "count": int(array.shape[0]) if kind != "SCALAR" or array.ndim == 1 else int(array.size),
               "type": kind}
        if bounds:
            flat = array.reshape(array.shape[0], -1)
            acc["min"] = [v.item() for v in flat.min(axis=0)]
            acc["max"] = [v.item() for v in flat.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def glb_bytes(asset: TexturedMesh, scale: float = 1.0) -> bytes:
    """The GLB file of ``asset`` as bytes."""
    b = _Builder()
    positions = (asset.verts.astype(np.float64) * scale).astype(np.float32)
    attributes = {
        "POSITION": b.accessor(positions, "VEC3", ARRAY_BUFFER, bounds=True),
        "NORMAL": b.accessor(_unit(asset.normals), "VEC3", ARRAY_BUFFER),
        "TEXCOORD_0": b.accessor(asset.uvs.astype(np.float32), "VEC2", ARRAY_BUFFER),
    }
    with_normal_map = asset.normal_texture is not None and asset.tangents is not None
    if with_normal_map:
        tangents = asset.tangents.astype(np.float32).copy()
        tangents[:, :3] = _unit(tangents[:, :3])
        tangents[:, 3] = np.where(tangents[:, 3] < 0, -1.0, 1.0)
        attributes["TANGENT"] = b.accessor(tangents, "VEC4", ARRAY_BUFFER)
    index_type = np.uint16 if len(asset.verts) < 65535 else np.uint32
    indices = b.accessor(asset.faces.astype(index_type).reshape(-1), "SCALAR", ELEMENT_ARRAY_BUFFER, bounds=True)

    images = [{"bufferView": b.view(_png(asset.texture)), "mimeType": "image/png", "name": "albedo"}]
    material: dict = {
        "name": "albedo",
        "pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 1.0},
    }
    if with_normal_map:
        images.append({"bufferView": b.view(_png(asset.normal_texture)), "mimeType": "image/png", "name": "normal"})
        material["normalTexture"] = {"index": 1}
    gltf = {
        "asset": {"version": "2.0", "generator": f"orbitmesh {__version__}"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "asset"}],
        "meshes": [{"name": "asset", "primitives": [
            {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}],
        "materials": [material],
        "samplers": [{"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR, "wrapS": CLAMP_TO_EDGE,
                      "wrapT": CLAMP_TO_EDGE}],
        "textures": [{"sampler": 0, "source": i} for i in range(len(images))],
        "images": images,
        "accessors": b.accessors,
        "bufferViews": b.views,
        "buffers": [{"byteLength": 0}],
    }
    b.blob.extend(b"\0" * (-len(b.blob) % 4))
    gltf["buffers"][0]["byteLength"] = len(b.blob)
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(b.blob)
    return b"".join([struct.pack("<4sII", b"glTF", 2, total), struct.pack("<I4s", len(js), b"JSON"), js,
                     struct.pack("<I4s", len(b.blob), b"BIN\0"), bytes(b.blob)])


def _unit(v: np.ndarray) -> np.ndarray:
    """Rows normalised in float32 (the validator checks unit length to 4e-3 or so)."""
    v = np.asarray(v, np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    out = np.where(norm > 1e-12, v / np.maximum(norm, 1e-12), np.array([0.0, 1.0, 0.0]))
    return out.astype(np.float32)


def write_glb(asset: TexturedMesh, path: str | Path, scale: float = 1.0, up: str = "y") -> list[Path]:
    """Write ``asset`` as a GLB at ``path`` (atomically). ``up`` is ignored: glTF is +Y up by definition."""
    path = Path(path)
    data = glb_bytes(asset, scale)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return [path]

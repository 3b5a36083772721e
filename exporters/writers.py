"""Writers keyed by file extension (as trimesh does): ``write_asset(asset, "out/asset.glb")``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from exporters.asset import TexturedMesh
from exporters.glb import write_glb
from exporters.obj import write_obj
from exporters.ply import write_ply

WRITERS: dict[str, Callable[..., list[Path]]] = {"glb": write_glb, "obj": write_obj, "ply": write_ply}
"""Extension (without the dot) -> writer(asset, path, scale, up) returning the files written."""


def write_asset(asset: TexturedMesh, path: str | Path, scale: float = 1.0, up: str = "y") -> list[Path]:
    """Write ``asset`` in the format its extension names; returns every file written (OBJ: .obj, .mtl, .png).

    Raises:
        ValueError: an extension no writer handles.
    """
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if ext not in WRITERS:
        raise ValueError(f"{path}: no writer for '.{ext}' (formats: {', '.join(WRITERS)})")
    return WRITERS[ext](asset, path, scale=scale, up=up)

"""Configuration of the export stage (exporters): face budget, UV atlas, texture, formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ExportConfig:
    """Decimate -> unwrap -> bake -> write (GLB by default; OBJ+MTL+PNG and PLY on request)."""

    faces: int = 20_000
    """Face budget: the mesh is decimated to at most this many faces (0 keeps every face)."""
    simplify_aggressiveness: float = 3.0
    """fast-simplification's ``agg``: lower keeps the shape better and is slower (7 is its default)."""
    texture_size: int = 1024
    """Side of the square albedo texture in texels (a power of two: 512, 1024, 2048, 4096)."""
    padding: int = 0
    """Texels between UV charts; 0 picks texture_size / 256 (4 at 1024², 8 at 2048²)."""
    normal_map: bool = False
    """Also bake a tangent-space normal map from the pre-decimation mesh (GLB and OBJ)."""
    formats: list[str] = field(default_factory=lambda: ["glb"])
    """Files to write as asset.<format>: any of glb, obj (with .mtl and .png), ply (vertex colours)."""
    scale: float = 1.0
    """Multiply positions by this on writing (our unit is the object's largest extent = 1; glTF's is a metre)."""
    up: Literal["y", "z"] = "y"
    """Up axis of OBJ and PLY files ('z' for Z-up tools); GLB is always +Y up, as glTF requires."""
    unwrap_timeout_s: float = 180.0
    """xatlas runs in a child process that is killed after this long (then the fallback unwrap runs)."""
    eval_views: int = 8
    """Held-out views on which the export is compared with the refined result (PSNR; 0 skips)."""
    turntable_frames: int = 48
    """Frames of the turntable video previews/turntable.mp4 of the exported asset (0 skips it)."""
    turntable_size: int = 384
    """Side of the turntable video in pixels."""


def check_export_config(cfg: ExportConfig) -> None:
    """Raise ConfigError naming the field when a value cannot work."""
    from recon.errors import ConfigError

    size = cfg.texture_size
    if size < 64 or size > 8192 or size & (size - 1):
        raise ConfigError(f"export.texture_size: {size} is not a power of two between 64 and 8192")
    if cfg.faces < 0 or 0 < cfg.faces < 4:
        raise ConfigError(f"export.faces: {cfg.faces} (use 0 to keep every face, or a budget of at least 4)")
    if cfg.padding < 0:
        raise ConfigError(f"export.padding: {cfg.padding} is negative")
    if not cfg.scale > 0:
        raise ConfigError(f"export.scale: {cfg.scale} must be positive")
    known = ("glb", "obj", "ply")
    bad = [f for f in cfg.formats if f not in known]
    if bad or not cfg.formats:
        raise ConfigError(f"export.formats: {cfg.formats} (choose from {', '.join(known)}; at least one)")

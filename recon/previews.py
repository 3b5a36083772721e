"""Preview images a user can look at: inputs beside what a stage made of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.coarse.occupancy import Occupancy
from recon.coarse.render import render_camera
from recon.data.cameras import Cameras
from recon.io import write_png
from recon.render.mesh import RenderMesh
from recon.render.views import render_views
from recon.shading.soft_light import SoftLight
from recon.types import CoarseField, Mesh, Orbit, RefinedAsset


def vertex_colored(mesh: Mesh, colors: Tensor) -> RenderMesh:
    """A RenderMesh of ``mesh`` with one untextured material and the given [V, 3] vertex colours."""
    return RenderMesh(mesh.verts, mesh.faces.int(), colors, torch.zeros(len(mesh.verts), 2),
                      torch.zeros(len(mesh.faces), dtype=torch.long), [None], torch.ones(1, 3))


def _grid(rows: list[list[Tensor]]) -> np.ndarray:
    return torch.cat([torch.cat(r, dim=1) for r in rows], dim=0).clamp(0, 1).numpy()


def preview_views(orbit: Orbit, count: int = 4) -> list[int]:
    """Evenly spread view indices."""
    return sorted({int(round(i * len(orbit) / count)) % len(orbit) for i in range(count)})


@torch.no_grad()
def render_field(field: CoarseField, cameras: Cameras, view: int, background: Tensor, chunk: int = 16384) -> Tensor:
    """[H, W, 3] volume rendering of the coarse field in one camera."""
    occ = Occupancy(field.occupancy, field.bound)
    out = render_camera(field.field, occ, cameras, view, 2 * field.bound / 256, background, chunk)
    return out.rgb.reshape(cameras.height, cameras.width, 3)


def coarse_previews(orbit: Orbit, field: CoarseField, mesh: Mesh, out_dir: Path, size: int = 160) -> dict[str, Path]:
    """Write ``coarse_field.png`` (input | field render, per row) and ``coarse_mesh.png`` (the mesh lit,
    and with its vertex colours, from the same views)."""
    views = preview_views(orbit)
    cams = orbit.cameras.to("cpu").scaled(size, size)
    images = torch.nn.functional.interpolate(orbit.images.cpu().permute(0, 3, 1, 2), size=(size, size),
                                             mode="area").permute(0, 2, 3, 1)
    bg = torch.tensor(orbit.background)
    rows = [[images[v], render_field(field, cams, v, bg)] for v in views]
    files = {"coarse_field_preview": write_png(out_dir / "coarse_field.png", _grid(rows))}
    if len(mesh.faces):
        sub = cams.subset(views)
        lit, _ = render_views(vertex_colored(mesh, torch.full_like(mesh.colors, 0.8)), sub, supersample=2,
                              light=SoftLight())
        col, _ = render_views(vertex_colored(mesh, mesh.colors), sub, supersample=2)
        rows = [[images[v], lit[i], col[i]] for i, v in enumerate(views)]
        files["coarse_mesh_preview"] = write_png(out_dir / "coarse_mesh.png", _grid(rows))
    return files


def refine_previews(orbit: Orbit, asset: RefinedAsset, out_dir: Path, size: int = 192) -> dict[str, Path]:
    """Write ``refine.png``: per row one input view, the refined asset shaded by the fitted light, its
    albedo alone (what gets baked), and its world normals (``0.5 n + 0.5``)."""
    from recon.refine.render import render_asset

    if len(asset.mesh.faces) == 0:
        return {}
    views = preview_views(orbit)
    cams = orbit.cameras.to("cpu").scaled(size, size).subset(views)
    images = torch.nn.functional.interpolate(orbit.images.cpu()[views].permute(0, 3, 1, 2), size=(size, size),
                                             mode="area").permute(0, 2, 3, 1)
    shaded = render_asset(asset, cams, shaded=True, background=orbit.background)
    plain = render_asset(asset, cams, shaded=False, background=orbit.background)
    rows = [[images[i], shaded["rgb"][i], plain["rgb"][i], plain["normal"][i]] for i in range(len(views))]
    return {"refine_preview": write_png(out_dir / "refine.png", _grid(rows))}


def write_video(path: Path, frames: np.ndarray, fps: int = 24) -> Path:
    """Write [N, H, W, 3] float frames in [0, 1] as an H.264 .mp4 (yuv420p, plays everywhere), atomically.
    Sides should be multiples of 16 (ffmpeg's macroblock)."""
    import imageio.v2 as iio

    from recon.io import atomic_path, to_uint8

    with atomic_path(path) as tmp:
        iio.mimwrite(tmp, list(to_uint8(frames)), format="FFMPEG", fps=fps, codec="libx264", quality=8,
                     pixelformat="yuv420p", macro_block_size=16)
    return Path(path)


def turntable_cameras(frames: int, size: int, elevation_deg: float = 15.0) -> Cameras:
    """``frames`` cameras on a full circle at ``elevation_deg``, SV3D's radius and field of view."""
    from recon.data.cameras import orbit_cameras

    azim = torch.arange(frames, dtype=torch.float64) * 360.0 / frames
    return orbit_cameras(torch.full((frames,), elevation_deg, dtype=torch.float64), azim, 2.0, 33.8, size)


def turntable_video(mesh: RenderMesh, path: Path, frames: int = 48, size: int = 384) -> Path:
    """``previews/turntable.mp4``: the mesh lit by a soft light, once around."""
    lit, _ = render_views(mesh, turntable_cameras(frames, size), supersample=2, light=SoftLight())
    return write_video(path, lit.numpy())


def export_previews(reference: Tensor, exported: Tensor, out_dir: Path, rows: int = 4) -> dict[str, Path]:
    """Write ``export.png``: per held-out view, the result before export | the exported file | 4x |difference|."""
    n = min(rows, len(reference))
    grid = [[reference[i], exported[i], ((reference[i] - exported[i]).abs() * 4).clamp(0, 1)] for i in range(n)]
    return {"export_preview": write_png(out_dir / "export.png", _grid(grid))}

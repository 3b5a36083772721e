"""``render-orbit``: a mesh file in, an SV3D-style orbit folder out, with its normalised ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recon.data.cameras import orbit_cameras
from recon.data.orbit import write_orbit
from recon.data.synthetic import sv3d_orbit_angles
from recon.io import atomic_path
from recon.log import track
from recon.render.mesh import load_render_mesh
from recon.render.views import render_views
from recon.shading.soft_light import SoftLight
from recon.types import Orbit


def normalization_transform(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """4x4 matrix scaling the box [lo, hi] to largest extent 1, centred at the origin."""
    scale = 1.0 / float((hi - lo).max())
    m = np.eye(4)
    m[:3, :3] *= scale
    m[:3, 3] = -(lo + hi) / 2.0 * scale
    return m


def _match_render_materials(loaded) -> None:
    """Make the ground truth's materials say what was rendered: an OBJ material with a texture renders
    the texture alone (recon.render.mesh), but trimesh would carry its Kd into the GLB's baseColorFactor
    and darken every later render of the ground truth."""
    import trimesh

    geoms = loaded.geometry.values() if isinstance(loaded, trimesh.Scene) else [loaded]
    for g in geoms:
        material = getattr(g.visual, "material", None)
        if isinstance(material, trimesh.visual.material.SimpleMaterial) and material.image is not None:
            material.diffuse = [255, 255, 255, 255]


def render_mesh_orbit(
    mesh_path: Path,
    out_dir: Path,
    size: int = 576,
    frames: int = 21,
    elevation: float = 10.0,
    dynamic_amplitude: float = 0.0,
    fov_deg: float = 33.8,
    radius: float = 2.0,
    supersample: int = 3,
    lit: str | None = None,
    alpha: bool = False,
    transforms: bool = True,
    normalize: bool = True,
) -> list[Path]:
    """Render ``mesh_path`` along an SV3D orbit into ``out_dir``.

    Writes ``000.png ...``, ``orbit.json``, optionally ``transforms.json``, and ``ground_truth.glb``: the
    mesh in the frame the views were rendered in (normalised unless ``normalize`` is False).
    ``lit``: None renders the albedo; 'linear' or 'srgb' shades under ``SoftLight`` in that space, with
    normals creased at 30 degrees (``crease_normals``: a box's faces flat, curved parts smooth, texture seams
    invisible; smooth vertex normals would shade a box's faces with gradients no light makes).
    Returns the written files (besides the frames).
    """
    import trimesh

    mesh = load_render_mesh(mesh_path)
    if normalize:
        lo, hi = (b.numpy().astype(np.float64) for b in mesh.bounds)
        m = normalization_transform(lo, hi)
        mesh = mesh.normalized()
    else:
        m = np.eye(4)
    elev, azim = sv3d_orbit_angles(frames, elevation, dynamic_amplitude)
    cams = orbit_cameras(elev, azim, radius, fov_deg, size)
    rgbs, alphas = [], []
    light = SoftLight(space=lit) if lit else None
    for v in track(range(frames), description=f"rendering {mesh_path.name}", total=frames):
        rgb, a = render_views(mesh, cams.subset([v]), supersample=supersample, light=light, crease_deg=30.0)
        rgbs.append(rgb)
        alphas.append(a)
    orbit = Orbit(
        images=torch.cat(rgbs), masks=torch.cat(alphas), cameras=cams, elevations_deg=elev, azimuths_deg=azim,
        radius=radius, fov_deg=fov_deg, source=str(mesh_path), kind="synthetic", mask_source="alpha",
    )
    write_orbit(orbit, out_dir, alpha=alpha, transforms=transforms)
    gt = trimesh.load(mesh_path, process=False)
    gt.apply_transform(m)
    _match_render_materials(gt)
    gt_path = out_dir / "ground_truth.glb"
    with atomic_path(gt_path) as tmp:
        gt.export(tmp)
    written = [out_dir / "orbit.json", gt_path]
    if transforms:
        written.insert(1, out_dir / "transforms.json")
    return written

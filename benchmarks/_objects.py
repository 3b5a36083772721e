"""Benchmark objects: analytic scenes, the demo object, and textured meshes available offline inside PyPI
wheels (fetched at benchmark time into a cache, never committed; licences vary, see README).

- ``duck``: pybullet_data/duck.obj + duckCM.png (pybullet wheel)
- ``bunny``: pymeshlab tests/sample_meshes/bunny10k_textured.obj + TextureDouble_A.png (pymeshlab wheel)
- ``cow``, ``airplane``: pymeshlab sample meshes (geometry only, rendered grey)
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

CACHE = Path.home() / ".cache" / "orbitmesh" / "objects"
WHEEL_FILES = {
    "duck": ("pybullet", ["pybullet_data/duck.obj", "pybullet_data/duck.mtl", "pybullet_data/duckCM.png"]),
    "bunny": ("pymeshlab", ["sample_meshes/bunny10k_textured.obj", "sample_meshes/bunny10k_textured.mtl",
                            "sample_meshes/TextureDouble_A.png"]),
    "cow": ("pymeshlab", ["sample_meshes/cow.obj"]),
    "airplane": ("pymeshlab", ["sample_meshes/airplane.obj"]),
}
ANALYTIC = ("sphere", "torus", "union", "toy")


def _wheel(package: str) -> Path:
    found = sorted(CACHE.glob(f"{package}-*.whl"))
    if found:
        return found[-1]
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), package], check=True)
    return sorted(CACHE.glob(f"{package}-*.whl"))[-1]


def object_mesh(name: str, workdir: Path) -> Path:
    """Path to a mesh file for benchmark object ``name`` (analytic scenes are exported as PLY)."""
    if name == "demo":
        return Path(__file__).resolve().parent.parent / "recon" / "assets" / "demo_object.glb"
    if name in ANALYTIC:
        from recon.data.synthetic import make_scene

        path = workdir / f"{name}.ply"
        if not path.exists():
            workdir.mkdir(parents=True, exist_ok=True)
            make_scene(name).mesh(detail=5).export(path)
        return path
    if name not in WHEEL_FILES:
        raise SystemExit(f"unknown object {name!r}; known: demo, {', '.join(ANALYTIC)}, {', '.join(WHEEL_FILES)}")
    package, members = WHEEL_FILES[name]
    target = CACHE / name
    first = target / Path(members[0]).name
    if not first.exists():
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_wheel(package)) as zf:
            names = zf.namelist()
            for member in members:
                full = next(n for n in names if n.endswith(member))
                (target / Path(member).name).write_bytes(zf.read(full))
    return first


def perturbed_orbit(mesh_path: Path, out_dir: Path, size: int, jitter_deg: float, color_shift: float,
                    blur_px: float, seed: int = 0) -> Path:
    """Render an SV3D static orbit the way generated views are imperfect, but write the *nominal* cameras.

    Each view is rendered with its elevation and azimuth off by up to ``jitter_deg``, its object colours
    scaled per channel by up to ``±color_shift`` (and exposure by half that), then blurred with a Gaussian of
    sigma ``blur_px``. orbit.json states the ideal orbit, as a generator's would.
    """
    from scipy import ndimage

    from recon.data.cameras import orbit_cameras
    from recon.data.orbit import write_orbit
    from recon.data.synthetic import sv3d_orbit_angles
    from recon.render.mesh import load_render_mesh
    from recon.render.views import render_views
    from recon.types import Orbit

    rng = np.random.default_rng(seed)
    mesh = load_render_mesh(mesh_path).normalized()
    elev, azim = sv3d_orbit_angles()
    n = len(azim)
    e_j = elev + torch.from_numpy(rng.uniform(-jitter_deg, jitter_deg, n))
    a_j = azim + torch.from_numpy(rng.uniform(-jitter_deg, jitter_deg, n))
    rgb, alpha = render_views(mesh, orbit_cameras(e_j, a_j, 2.0, 33.8, size), supersample=2)
    images = []
    for i in range(n):
        gain = 1 + rng.uniform(-color_shift, color_shift, 3) + rng.uniform(-color_shift, color_shift) / 2
        a = alpha[i].numpy()[..., None]
        img = rgb[i].numpy() * (1 - a) + np.clip(rgb[i].numpy() * gain, 0, 1) * a
        if blur_px > 0:
            img = ndimage.gaussian_filter(img, sigma=(blur_px, blur_px, 0))
        images.append(torch.from_numpy(img.astype(np.float32)))
    nominal = orbit_cameras(elev, azim, 2.0, 33.8, size)
    orbit = Orbit(images=torch.stack(images), masks=alpha, cameras=nominal, elevations_deg=elev, azimuths_deg=azim,
                  radius=2.0, fov_deg=33.8, kind="synthetic", mask_source="alpha")
    write_orbit(orbit, out_dir, alpha=False, transforms=False)
    return out_dir

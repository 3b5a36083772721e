"""Benchmark objects (see recon.eval.objects) and the perturbed orbits of ``bench_coarse.py --perturb``."""

from __future__ import annotations

from pathlib import Path

from recon.eval.objects import object_mesh
from recon.eval.realism import Realism, render_realistic_orbit

__all__ = ["object_mesh", "object_orbit", "perturbed_orbit"]


def object_orbit(name: str, work: Path, size: int, alpha: bool = False) -> Path:
    """``work/orbit``: the object's SV3D static orbit at ``size``² with ``ground_truth.glb`` (rendered once,
    reused when already there). RGB on white, masks from the background as for raw SV3D frames; ``alpha``:
    RGBA frames in ``work/orbit_rgba`` instead (masks from alpha), which white objects need (the cow and
    airplane, rendered white, and the soccer ball's white panels vanish into a white background)."""
    from recon.render.orbit import render_mesh_orbit

    orbit_dir = work / ("orbit_rgba" if alpha else "orbit")
    if not (orbit_dir / "ground_truth.glb").is_file():
        render_mesh_orbit(object_mesh(name, work / "src"), orbit_dir, size=size, supersample=2, alpha=alpha)
    return orbit_dir


def perturbed_orbit(mesh_path: Path, out_dir: Path, size: int, jitter_deg: float, color_shift: float,
                    blur_px: float, seed: int = 0) -> Path:
    """An SV3D static orbit with pose jitter, per-view colour (and half as much exposure) shift and blur,
    written with the nominal cameras (no JPEG, no texture noise: bench_coarse's protocol)."""
    realism = Realism(pose_jitter_deg=jitter_deg, color_shift=color_shift, exposure_shift=color_shift / 2,
                      blur_px=blur_px)
    return render_realistic_orbit(mesh_path, out_dir, size, realism, seed, rgba=False)

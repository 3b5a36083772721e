"""Benchmark objects (see recon.eval.objects) and the perturbed orbits of ``bench_coarse.py --perturb``."""

from __future__ import annotations

from pathlib import Path

from recon.eval.objects import object_mesh
from recon.eval.realism import Realism, render_realistic_orbit

__all__ = ["object_mesh", "perturbed_orbit"]


def perturbed_orbit(mesh_path: Path, out_dir: Path, size: int, jitter_deg: float, color_shift: float,
                    blur_px: float, seed: int = 0) -> Path:
    """An SV3D static orbit with pose jitter, per-view colour (and half as much exposure) shift and blur,
    written with the nominal cameras (no JPEG, no texture noise: bench_coarse's protocol)."""
    realism = Realism(pose_jitter_deg=jitter_deg, color_shift=color_shift, exposure_shift=color_shift / 2,
                      blur_px=blur_px)
    return render_realistic_orbit(mesh_path, out_dir, size, realism, seed, rgba=False)

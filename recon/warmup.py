"""Compile the numba kernels ahead of the first fit (``orbitmesh warmup``; ``make setup`` runs it).

numba compiles a kernel on its first call and caches the machine code (``NUMBA_CACHE_DIR``, set by
``recon._env``). Left to the first fit, that compilation lands inside its stages: about 53 s of the
sphere's refinement (default preset) and more in the coarse stage on 2 cores. Here every stage runs once
with the ``tiny`` preset on a small analytic orbit: the kernels see the same argument types as in a real
fit (float32 arrays, int64 indices), so a later fit finds them all in the cache.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def compile_kernels(work_dir: Path | None = None) -> float:
    """Run every stage (data, coarse, refine, export) on a 48² orbit of the analytic sphere with the
    ``tiny`` preset, in ``work_dir`` (a temporary folder when None); returns the seconds it took."""
    from recon.config import load_config
    from recon.data.orbit import write_orbit
    from recon.data.synthetic import make_scene, render_orbit, sv3d_orbit_angles
    from recon.pipeline import run

    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="orbitmesh-warmup-") as tmp:
            return compile_kernels(Path(tmp))
    start = time.perf_counter()
    elev, azim = sv3d_orbit_angles()
    orbit = render_orbit(make_scene("sphere"), elev, azim, size=48, supersample=2)
    orbit_dir = write_orbit(orbit, Path(work_dir) / "orbit", transforms=False)
    run(load_config("tiny", ["export.turntable_frames=0"]), orbit_dir, Path(work_dir) / "run")
    _blur_a_sub_box()
    return time.perf_counter() - start


def _blur_a_sub_box() -> None:
    """The gradient blur on a strided sub-box of a lattice, as a real grid's band gives it: the tiny run's
    band box is the whole (contiguous) lattice, which numba compiles as another variant."""
    import torch

    from recon.refine.train import binomial_blur

    for channels in (1, 3):
        lattice = torch.zeros(12, 12, 12, channels)
        lattice[6, 6, 6] = 1.0
        binomial_blur(lattice[2:10, 2:10, 2:10], 2)

"""Compile the numba kernels ahead of the first fit (``orbitmesh warmup``; ``make setup`` runs it).

numba compiles a kernel on its first call and caches the machine code (``NUMBA_CACHE_DIR``, set by
``recon._env``). Left to the first fit, that compilation lands inside its stages: about 40 s of the
refinement's time and more in the coarse stage on 2 cores. Here every stage runs once with the ``tiny``
preset on a small analytic orbit: the kernels see the same argument types as in a real fit (float32
arrays, int64 indices), so a later fit finds them all in the cache.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


def compile_kernels(work_dir: Path | None = None) -> float:
    """Run every stage (data, coarse, refine, export) on a 48² orbit of the analytic sphere with the
    ``tiny`` preset, in ``work_dir`` (a temporary folder when None); returns the seconds it took."""
    from recon.config import load_config
    from recon.data.orbit import write_orbit
    from recon.data.synthetic import make_scene, render_orbit, sv3d_orbit_angles
    from recon.pipeline import run

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="orbitmesh-warmup-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        elev, azim = sv3d_orbit_angles()
        orbit = render_orbit(make_scene("sphere"), elev, azim, size=48, supersample=2)
        orbit_dir = write_orbit(orbit, root / "orbit", transforms=False)
        cfg = load_config("tiny", ["export.turntable_frames=0"])
        run(cfg, orbit_dir, root / "run")
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

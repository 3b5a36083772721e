"""Process-wide threading set-up. Imported first by ``recon/__init__.py``.

numba's and torch's OpenMP pools fight each other on a loaded machine unless the wait policy is
passive (with a short spin, ``GOMP_SPINCOUNT``), and both read their thread counts and wait policy when
first imported, so this must run before either.
Values the user already exported are respected.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_threads() -> int:
    """Set OpenMP/MKL/numba thread variables from the cores available; returns the thread count."""
    cores = int(os.environ.get("ORBITMESH_THREADS", available_cores()))
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    # torch and numba each load their own libgomp, so two thread pools share the cores; passive keeps the
    # idle pool's threads from spinning against the busy one. But passive alone puts every thread to sleep
    # at the end of each parallel region, and the next region pays a wake-up (about 55 us on 2 cores)
    # for each of the thousand-odd torch ops and numba kernels of a refinement step. A very short spin
    # first (a few tens of us) catches back-to-back regions and then sleeps. 100 default-preset
    # refinement steps of the sphere, alone on 2 cores: 28.7-30.4 s with passive alone, 26.4-28.0 s with
    # 3k spins, 26.0-27.5 s with 10k-200k. Two fits sharing the 2 cores (each with 2 threads): 3k spins
    # cost nothing (sphere 46.5 s against 44.6-46.9 s), 6k +10%, 20k +35-45%: longer spins steal the cores
    # from the other process (README, "Threads, determinism, GPU").
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, str(cores))
    # Compiled numba kernels are cached next to the user's cache, not inside site-packages,
    # which may be read-only; a cold compile costs seconds.
    os.environ.setdefault(
        "NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "orbitmesh", "numba")
    )
    return cores


THREADS = configure_threads()

"""Process-wide threading set-up. Imported first by ``recon/__init__.py``.

numba's and torch's OpenMP pools fight each other on a loaded machine unless the wait policy is
passive, and both read their thread counts when first imported, so this must run before either.
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
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, str(cores))
    # Compiled numba kernels are cached next to the user's cache, not inside site-packages,
    # which may be read-only; a cold compile costs seconds.
    os.environ.setdefault(
        "NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "orbitmesh", "numba")
    )
    return cores


THREADS = configure_threads()

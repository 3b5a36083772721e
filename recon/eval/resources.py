"""Resource measurements shared by the benchmark runner and the benchmark scripts."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(interval_s: float = 0.001) -> Iterator[dict[str, float]]:
    """Sample the process's resident memory every ``interval_s``; yields a dict whose 'peak_mb' is the
    peak above the level at entry and 'seconds' the block's wall time, once the block ends (Linux /proc;
    peak 0 elsewhere)."""
    result = {"peak_mb": 0.0, "seconds": 0.0}
    start = time.perf_counter()
    if not Path("/proc/self/statm").exists():
        yield result
        result["seconds"] = time.perf_counter() - start
        return
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        result["peak_mb"] = (peak[0] - base) / 2**20
        result["seconds"] = time.perf_counter() - start

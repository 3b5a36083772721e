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
def peak_memory() -> Iterator[dict[str, float]]:
    """Sample the process's resident memory every millisecond; yields a dict whose 'peak_mb' is the
    peak above the level at entry once the block ends (Linux /proc; 0 elsewhere)."""
    result = {"peak_mb": 0.0}
    if not Path("/proc/self/statm").exists():
        yield result
        return
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        result["peak_mb"] = (peak[0] - base) / 2**20

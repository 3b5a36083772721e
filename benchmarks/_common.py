"""Helpers shared by the benchmark scripts: timing, peak-memory sampling, table and JSON output."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory():
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


def best_of(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Minimum wall time of ``fn`` in milliseconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return min(times)


def machine_info() -> dict[str, Any]:
    import torch

    from recon._env import THREADS

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": THREADS,
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print(" | ".join(c.rjust(widths[c]) for c in columns))
    print("-|-".join("-" * widths[c] for c in columns))
    for r in rows:
        print(" | ".join(_fmt(r.get(c)).rjust(widths[c]) for c in columns))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return "" if v is None else str(v)


def write_json(name: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    from recon.io import write_json as atomic_json

    out = path or RESULTS_DIR / f"{name}.json"
    return atomic_json(out, payload)


def run_isolated(cmd: list[str], what: str, overrides: list[str] = ()) -> str:
    """Run one benchmark case in its own process (clean peak-memory and timing); returns its stdout's last
    line. On failure prints the tail of its stderr and exits naming ``what``."""
    import subprocess
    import sys

    for o in overrides:
        cmd = [*cmd, "--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{what} failed")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""

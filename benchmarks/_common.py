"""Helpers shared by the benchmark scripts: timing, peak-memory sampling, table and JSON output."""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recon.eval.resources import peak_memory

__all__ = ["add_out_argument", "best_of", "machine_info", "peak_memory", "print_table", "run_isolated", "write_json"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


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


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """The benchmarks' ``--out`` option, read by ``write_json``."""
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file, or a folder for its default name (default benchmarks/results/)")


def write_json(name: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``payload`` atomically to ``path`` (a JSON file, or an existing folder that gets ``name``.json;
    default ``benchmarks/results/name.json``); returns the file written."""
    from recon.io import write_json as atomic_json

    out = path or RESULTS_DIR / f"{name}.json"
    if out.is_dir():  # a folder given as --out once cost a 20-minute run its JSON at the very end
        out = out / f"{name}.json"
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

"""Logging and progress: rich on a terminal, plain lines elsewhere (CI logs stay readable)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler

T = TypeVar("T")

console = Console(stderr=True)
"""Console for human-facing output on stderr (tables go to stdout through their own Console)."""


def setup_logging(verbose: bool = False) -> None:
    """Route ``logging`` through rich on stderr; INFO by default, DEBUG with ``verbose``."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("numba", "PIL", "matplotlib", "trimesh", "imageio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on a terminal; elsewhere log the start and the elapsed time."""
    if console.is_terminal:
        from rich.progress import track as rich_track

        yield from rich_track(items, description=description, total=total, console=console, transient=True)
        return
    log = logging.getLogger("orbitmesh")
    start = time.perf_counter()
    log.info("%s ...", description)
    yield from items
    log.info("%s: done in %.1f s", description, time.perf_counter() - start)


def is_interactive() -> bool:
    """True when stderr is a terminal (progress bars are drawn)."""
    return sys.stderr.isatty()

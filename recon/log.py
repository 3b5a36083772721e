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


class StepProgress:
    """Progress of an optimisation loop: a rich bar on a terminal, a log line every 10% elsewhere.

    Use as a context manager; call ``update(done, info)`` after each step.
    """

    def __init__(self, label: str, total: int, completed: int = 0, enabled: bool = True):
        self.label, self.total, self.completed = label, total, completed
        self.enabled = enabled
        self._bar = None
        self._task = None
        self._next_log = completed + max(1, total // 10)
        self._start = time.perf_counter()

    def __enter__(self) -> StepProgress:
        if self.enabled and console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn(self.label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                                 transient=True)
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.completed, info="")
            self._bar.start()
        return self

    def update(self, done: int, info: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=info)
        elif self.enabled and done >= self._next_log:
            self._next_log = done + max(1, self.total // 10)
            logging.getLogger("orbitmesh").info("%s: %d/%d  %s  (%.0f s)", self.label, done, self.total, info,
                                                time.perf_counter() - self._start)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

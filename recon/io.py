"""Small file helpers: every output is written to a temporary name and renamed into place, so a crash
or an interrupt never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary file keeps ``path``'s suffix, so writers that dispatch on the extension work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """Write text atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write indented JSON atomically; returns the path."""
    return write_text(path, json.dumps(data, indent=1) + "\n")


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float values in [0, 1] (clipped) to uint8, rounded to nearest; uint8 input is returned as is."""
    arr = np.asarray(values)
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def rgba_uint8(rgb: np.ndarray) -> np.ndarray:
    """[N, 3] colours in [0, 1] -> [N, 4] opaque uint8 RGBA (vertex colours for trimesh)."""
    rgb8 = to_uint8(rgb)
    return np.concatenate([rgb8, np.full((len(rgb8), 1), 255, np.uint8)], axis=1)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an image atomically as PNG.

    Args:
        image: [H, W], [H, W, 3] or [H, W, 4]; uint8, or float in [0, 1] (rounded to 8 bits).
    """
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
    return Path(path)

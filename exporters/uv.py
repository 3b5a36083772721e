"""UV unwrapping with xatlas, isolated in a child process with a timeout.

xatlas takes ~33 s on 94k faces here and segfaults on some meshes (a perfect icosphere(6) every time,
see shared/DESIGN.md), so it runs as ``python -m exporters._xatlas_child``: a crash or a timeout is
reported as ``UnwrapError`` and never takes the run down.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class UnwrapError(RuntimeError):
    """xatlas crashed, timed out or returned nothing usable."""


@dataclass
class Unwrapped:
    """A mesh re-indexed for its UV atlas (vertices on chart seams are split).

    Attributes:
        verts: [V', 3] float32 positions.
        faces: [F, 3] int64.
        uvs: [V', 2] float32 in [0, 1], glTF convention (origin top-left, v down).
        vmapping: [V'] index of each new vertex in the input mesh.
        method: which path produced it ('xatlas').
    """

    verts: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    vmapping: np.ndarray
    method: str


def unwrap_xatlas(verts: np.ndarray, faces: np.ndarray, resolution: int = 1024, padding: int = 4,
                  timeout_s: float = 120.0) -> Unwrapped:
    """Unwrap with xatlas in a child process.

    Args:
        resolution: texture side the charts are packed for (padding is in texels of it).
        padding: texels between charts, so bilinear lookups and mip levels do not bleed.
        timeout_s: the child is killed after this long.
    Raises:
        UnwrapError: on a crash (e.g. SIGSEGV), a timeout or an empty result.
    """
    with tempfile.TemporaryDirectory(prefix="orbitmesh-xatlas-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, verts=np.asarray(verts, np.float32), faces=np.asarray(faces, np.int64),
                 resolution=resolution, padding=padding)
        try:
            proc = subprocess.run([sys.executable, "-m", "exporters._xatlas_child", str(src), str(dst)],
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise UnwrapError(f"xatlas timed out after {timeout_s:.0f} s on {len(faces)} faces") from None
        if proc.returncode != 0:
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
            tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            raise UnwrapError(f"xatlas crashed ({how}) on {len(faces)} faces {tail}".strip())
        out = np.load(dst)
        vmapping, new_faces, uvs = out["vmapping"], out["faces"], out["uvs"]
    if len(new_faces) != len(faces) or len(uvs) == 0:
        raise UnwrapError("xatlas returned an incomplete atlas")
    uvs = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], axis=1).astype(np.float32)  # xatlas v up -> glTF v down
    return Unwrapped(verts=np.asarray(verts, np.float32)[vmapping], faces=new_faces, uvs=uvs,
                     vmapping=vmapping, method="xatlas")

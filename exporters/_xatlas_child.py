"""Child-process entry point for xatlas: ``python -m exporters._xatlas_child IN.npz OUT.npz``.

xatlas can crash the process (a segfault on some meshes), so it never runs inside the main process.
IN holds ``verts`` [V, 3], ``faces`` [F, 3], ``resolution`` and ``padding``; OUT receives ``vmapping``
[V'], ``faces`` [F, 3] and ``uvs`` [V', 2] (xatlas' normalised coordinates).
"""

from __future__ import annotations

import sys

import numpy as np


def main(src: str, dst: str) -> int:
    import xatlas

    data = np.load(src)
    atlas = xatlas.Atlas()
    atlas.add_mesh(data["verts"].astype(np.float32), data["faces"].astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(data["resolution"])
    pack.padding = int(data["padding"])
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, faces, uvs = atlas[0]
    np.savez(dst, vmapping=vmapping.astype(np.int64), faces=faces.astype(np.int64), uvs=uvs.astype(np.float32))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))

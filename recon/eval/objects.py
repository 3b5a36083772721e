"""Benchmark objects: analytic scenes, the demo object, and textured meshes available offline inside PyPI
wheels (fetched at benchmark time into a cache, never committed; licences vary, see README).

- ``duck``: pybullet_data/duck.obj + duckCM.png (pybullet wheel)
- ``soccerball``: pybullet_data/soccerball.obj + colors16.png (pybullet wheel)
- ``bunny``: pymeshlab tests/sample_meshes/bunny10k_textured.obj + TextureDouble_A.png (pymeshlab wheel)
- ``cow``, ``airplane``: pymeshlab sample meshes (geometry only, rendered grey)
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path.home() / ".cache" / "orbitmesh" / "objects"
WHEEL_FILES = {
    "duck": ("pybullet", ["pybullet_data/duck.obj", "pybullet_data/duck.mtl", "pybullet_data/duckCM.png"]),
    "soccerball": ("pybullet", ["pybullet_data/soccerball.obj", "pybullet_data/soccerball.mtl",
                                "pybullet_data/colors16.png"]),
    "bunny": ("pymeshlab", ["sample_meshes/bunny10k_textured.obj", "sample_meshes/bunny10k_textured.mtl",
                            "sample_meshes/TextureDouble_A.png"]),
    "cow": ("pymeshlab", ["sample_meshes/cow.obj"]),
    "airplane": ("pymeshlab", ["sample_meshes/airplane.obj"]),
}
ANALYTIC = ("sphere", "box", "printed_box", "torus", "union", "toy")


def _wheel(package: str) -> Path:
    found = sorted(CACHE.glob(f"{package}-*.whl"))
    if found:
        return found[-1]
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), package], check=True)
    return sorted(CACHE.glob(f"{package}-*.whl"))[-1]


OFFLINE_OBJECTS = ("demo", *ANALYTIC, *WHEEL_FILES)
"""Every object name ``object_mesh`` knows."""


def object_mesh(name: str, workdir: Path) -> Path:
    """Path to a mesh file for benchmark object ``name`` (analytic scenes are exported as PLY)."""
    if name == "demo":
        return Path(__file__).resolve().parents[1] / "assets" / "demo_object.glb"
    if name in ANALYTIC:
        from recon.data.synthetic import make_scene

        path = workdir / f"{name}.ply"
        if not path.exists():
            workdir.mkdir(parents=True, exist_ok=True)
            make_scene(name).mesh(detail=5).export(path)
        return path
    if name not in WHEEL_FILES:
        from recon.errors import InputError

        raise InputError(name, f"unknown object; known: {', '.join(OFFLINE_OBJECTS)}")
    package, members = WHEEL_FILES[name]
    target = CACHE / name
    first = target / Path(members[0]).name
    if not first.exists():
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_wheel(package)) as zf:
            names = zf.namelist()
            for member in members:
                full = next(n for n in names if n.endswith(member))
                (target / Path(member).name).write_bytes(zf.read(full))
    return first

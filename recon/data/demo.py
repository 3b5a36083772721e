"""Builds the bundled demo assets: ``python -m recon.data.demo`` (maintainers only; the results are committed).

The demo object is our own procedural toy (recon.data.synthetic 'toy': a box with text-like glyphs, a
checkered head, a striped handle with a hole, a nose): its exact union mesh is unwrapped with xatlas,
its procedural colours are baked into a 1024² texture, and it is written as ``demo_object.glb``. The demo
orbit is then rendered from that GLB with ``render-orbit`` (21 frames, 256², SV3D's static orbit).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def build_demo_object(path: Path, texture_size: int = 1024, detail: int = 4) -> Path:
    """Write the demo toy as a textured GLB (unwrap + bake of the analytic colours)."""
    from exporters.bake import bake_texture
    from exporters.glb import write_textured_glb
    from exporters.uv import unwrap_xatlas
    from recon.data.synthetic import make_scene

    scene = make_scene("toy")
    mesh = scene.mesh(detail=detail)
    unwrapped = unwrap_xatlas(np.asarray(mesh.vertices), np.asarray(mesh.faces), resolution=texture_size)
    verts = torch.from_numpy(unwrapped.verts)
    faces = torch.from_numpy(unwrapped.faces)
    tex, _ = bake_texture(verts, faces, torch.from_numpy(unwrapped.uvs),
                          lambda p: scene.color(p.double()).float(), size=texture_size)
    return write_textured_glb(path, unwrapped.verts, unwrapped.faces, unwrapped.uvs, tex)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ASSETS)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    from recon.log import setup_logging
    from recon.render.orbit import render_mesh_orbit

    setup_logging()
    glb = build_demo_object(args.out / "demo_object.glb")
    orbit_dir = args.out / "demo_orbit"
    for old in orbit_dir.glob("*"):
        old.unlink()
    render_mesh_orbit(glb, orbit_dir, size=args.size, supersample=3)
    (orbit_dir / "ground_truth.glb").unlink()  # the object itself is demo_object.glb beside the orbit
    print(f"wrote {glb} ({glb.stat().st_size / 1e6:.2f} MB) and {orbit_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

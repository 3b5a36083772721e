"""The bundled demo object and orbit: small, clean, and faithful to the analytic toy they come from."""

from __future__ import annotations

import torch

from recon.cli import DEMO_ORBIT
from recon.data.cameras import orbit_cameras
from recon.data.orbit import load_orbit
from recon.data.synthetic import make_scene, render_view
from recon.eval.metrics import psnr
from recon.render.mesh import load_render_mesh
from recon.render.views import render_views

DEMO_OBJECT = DEMO_ORBIT.parent / "demo_object.glb"


def test_demo_assets_are_small_and_clean():
    size = DEMO_OBJECT.stat().st_size + sum(p.stat().st_size for p in DEMO_ORBIT.iterdir())
    assert DEMO_OBJECT.stat().st_size < 2e6 and size < 3e6
    orbit = load_orbit(DEMO_ORBIT)
    assert len(orbit) == 21 and orbit.width == 256
    assert not orbit.notes, orbit.notes  # no border contact, orbit.json present
    mesh = load_render_mesh(DEMO_OBJECT)
    assert mesh.textures[0] is not None and mesh.textures[0].shape[:2] == (1024, 1024)


def test_demo_glb_renders_like_the_analytic_toy():
    """Bake + GLB + loader + rasterizer against exact ray casting of the same scene: the text survives."""
    mesh = load_render_mesh(DEMO_OBJECT)
    scene = make_scene("toy")
    cams = orbit_cameras(torch.tensor([10.0, 30.0]), torch.tensor([0.0, 200.0]), 2.0, 33.8, 96)
    ours, _ = render_views(mesh, cams, supersample=3)
    exact = torch.stack([render_view(scene, cams, v, supersample=3)[0] for v in range(2)])
    assert psnr(ours, exact) > 32.0  # measured 36.5 dB

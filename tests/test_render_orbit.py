"""render-orbit: our renderer reproduces the independently rendered axes fixture; textured files load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from recon.cli import main
from recon.data.orbit import load_orbit
from recon.render.mesh import load_render_mesh
from recon.render.views import render_views

from .conftest import SHARED


def _centroid(img: np.ndarray, c: int) -> tuple[float, float] | None:
    others = [i for i in range(3) if i != c]
    sel = (img[..., c] > 0.5) & (img[..., others[0]] < 0.35) & (img[..., others[1]] < 0.35)
    ys, xs = np.nonzero(sel)
    return (xs.mean() + 0.5, ys.mean() + 0.5) if len(xs) > 50 else None


def test_render_orbit_reproduces_axes_fixture(axes_orbit_dir, tmp_path: Path):
    out = tmp_path / "axes"
    assert main(["render-orbit", str(SHARED / "fixtures" / "axes_scene.ply"), "-o", str(out), "--size", "128",
                 "--no-normalize"]) == 0
    ours, theirs = load_orbit(out), load_orbit(axes_orbit_dir)
    for f in range(21):
        for c in range(3):
            a, b = _centroid(ours.images[f].numpy(), c), _centroid(theirs.images[f].numpy(), c)
            assert (a is None) == (b is None), (f, c)
            if a is not None:
                assert np.hypot(a[0] - b[0], a[1] - b[1]) < 1.0, (f, c, a, b)
    assert (ours.images - theirs.images).abs().mean() < 0.01


def test_textured_obj_with_mtl_renders_its_texture(tmp_path: Path):
    # A quad textured red, green / blue, white (row 0 at the top).
    quads = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], np.uint8)
    tex = quads.repeat(4, axis=0).repeat(4, axis=1)  # 8x8, uniform quadrants: bilinear-safe inside them
    Image.fromarray(tex).save(tmp_path / "tex.png")
    (tmp_path / "quad.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd tex.png\n")
    (tmp_path / "quad.obj").write_text(
        "mtllib quad.mtl\nv -0.5 -0.5 0\nv 0.5 -0.5 0\nv 0.5 0.5 0\nv -0.5 0.5 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nusemtl m\nf 1/1 2/2 3/3\nf 1/1 3/3 4/4\n"
    )
    mesh = load_render_mesh(tmp_path / "quad.obj")
    assert mesh.textures[0] is not None
    from recon.data.cameras import orbit_cameras

    cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), 2.0, 33.8, 64)
    rgb, _ = render_views(mesh, cams, supersample=1)
    img = rgb[0].numpy()
    # OBJ's v = 1 is the top of the image: top-left quadrant red, top-right green, bottom-left blue.
    q = 64 // 2
    tl, tr, bl = img[q - 8, q - 8], img[q - 8, q + 8], img[q + 8, q - 8]
    assert tl[0] > 0.8 and tl[1] < 0.2
    assert tr[1] > 0.8 and tr[0] < 0.2
    assert bl[2] > 0.8 and bl[0] < 0.2


def test_render_orbit_writes_normalised_ground_truth_and_dynamic_orbit(tmp_path: Path):
    box = trimesh.creation.box(extents=[2.0, 1.0, 0.5])
    box.apply_translation([3.0, 1.0, 0.0])
    box.visual.vertex_colors = [200, 50, 50, 255]
    src = tmp_path / "box.ply"
    box.export(src)
    out = tmp_path / "orbit"
    assert main(["render-orbit", str(src), "-o", str(out), "--size", "32", "--dynamic", "20", "--alpha",
                 "--supersample", "1"]) == 0
    gt = trimesh.load(out / "ground_truth.glb", force="mesh")
    np.testing.assert_allclose(gt.bounds, [[-0.5, -0.25, -0.125], [0.5, 0.25, 0.125]], atol=1e-6)
    meta = json.loads((out / "orbit.json").read_text())
    assert max(meta["elevations_deg"]) > 25
    assert load_orbit(out).mask_source == "alpha"


def test_unreadable_mesh_is_a_one_line_error(tmp_path: Path, capsys):
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"glTF garbage")
    assert main(["render-orbit", str(bad), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.glb" in err and "cannot read mesh" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("missing", ["nope.obj"])
def test_missing_mesh(tmp_path: Path, capsys, missing: str):
    assert main(["render-orbit", str(tmp_path / missing), "-o", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_ground_truth_glb_renders_like_the_orbit_for_textured_obj(tmp_path: Path):
    # An OBJ whose MTL has Kd 0.5 and a texture: the orbit shows the texture alone, and so must the GLB.
    box = trimesh.creation.box(extents=[0.8, 0.6, 0.5])
    uv = np.random.default_rng(0).random((len(box.vertices), 2))
    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(np.full((8, 8, 3), 200, np.uint8)),
                                                      diffuse=[128, 128, 128, 255])
    box.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    box.export(tmp_path / "q.obj")
    assert "Kd 0.50" in "".join(p.read_text() for p in tmp_path.glob("*.mtl"))
    out = tmp_path / "o"
    assert main(["render-orbit", str(tmp_path / "q.obj"), "-o", str(out), "--size", "32", "--supersample", "1"]) == 0
    from recon.data.cameras import orbit_cameras

    cams = orbit_cameras(torch.tensor([10.0]), torch.tensor([0.0]), 2.0, 33.8, 32)
    rgb, alpha = render_views(load_render_mesh(out / "ground_truth.glb"), cams, supersample=1)
    frame = load_orbit(out).images[-1]
    inside = alpha[0] > 0.99
    assert inside.sum() > 50
    assert (rgb[0][inside] - frame[inside]).abs().max() < 2 / 255

"""Cameras follow shared/CONVENTIONS.md; the independently rendered axes fixture is the judge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.data.cameras import (
    Cameras,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
    orbit_positions,
    rigid_error,
    sv3d_azimuths,
)
from recon.data.orbit import load_orbit

AXIS_CENTRES = {"red": (0.35, 0.0, 0.0), "green": (0.0, 0.35, 0.0), "blue": (0.0, 0.0, 0.35)}


def _blob_centroid(img: np.ndarray, color: str) -> tuple[float, float] | None:
    c = {"red": 0, "green": 1, "blue": 2}[color]
    others = [i for i in range(3) if i != c]
    sel = (img[..., c] > 0.5) & (img[..., others[0]] < 0.35) & (img[..., others[1]] < 0.35)
    ys, xs = np.nonzero(sel)
    if len(xs) < 150:  # mostly hidden behind another sphere: no reliable centroid
        return None
    return xs.mean() + 0.5, ys.mean() + 0.5


def test_sv3d_azimuths_put_input_frame_last_at_zero():
    az = sv3d_azimuths()
    assert az.shape == (21,)
    assert az[-1] == 0.0
    assert torch.allclose(az[:-1], torch.arange(1, 21, dtype=torch.float64) * 360.0 / 21)


def test_orbit_position_formula():
    f64 = torch.float64
    pos = orbit_positions(torch.tensor([0.0, 0.0, 90.0], dtype=f64), torch.tensor([0.0, 90.0, 0.0], dtype=f64), 2.0)
    torch.testing.assert_close(pos, torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]],
                                                 dtype=torch.float64), atol=1e-6, rtol=0)


def test_look_at_is_rigid_opengl_and_looks_at_origin():
    elev = torch.tensor([10.0, -30.0, 89.9, 45.0], dtype=torch.float64)
    azim = torch.tensor([0.0, 123.0, 200.0, 315.0], dtype=torch.float64)
    c2w = look_at(orbit_positions(elev, azim, 2.0))
    assert rigid_error(c2w).max() < 1e-9
    forward = -c2w[:, :3, 2]  # OpenGL cameras look along their -Z
    to_origin = torch.nn.functional.normalize(-c2w[:, :3, 3], dim=-1)
    torch.testing.assert_close(forward, to_origin)
    assert (c2w[:, 1, 1] > 0).all(), "camera +Y must point up in the world"


def test_look_at_straight_down_is_well_defined():
    c2w = look_at(torch.tensor([[0.0, 2.0, 0.0]], dtype=torch.float64))
    assert torch.isfinite(c2w).all()
    assert rigid_error(c2w)[0] < 1e-9


def test_projection_matrix_agrees_with_project():
    cams = orbit_cameras(torch.tensor([10.0, 25.0]), torch.tensor([30.0, 250.0]), 2.0, 33.8, 64)
    pts = torch.rand(50, 3) - 0.5
    xy, depth = cams.project(pts)
    clip = torch.einsum("nij,pj->npi", cams.mvp(), torch.cat([pts, torch.ones(50, 1)], dim=1))
    ndc = clip[..., :3] / clip[..., 3:4]
    px = (ndc[..., 0] + 1) / 2 * cams.width
    py = (1 - ndc[..., 1]) / 2 * cams.height  # NDC y up, row 0 at the top
    torch.testing.assert_close(torch.stack([px, py], -1), xy, atol=1e-3, rtol=0)
    assert (depth > 0).all()


def test_rays_pass_through_projected_points():
    cams = orbit_cameras(torch.tensor([10.0, -20.0]), torch.tensor([0.0, 140.0]), 2.0, 33.8, 64)
    pts = torch.rand(30, 3, dtype=torch.float64) - 0.5
    cams64 = Cameras(cams.c2w.double(), cams.K.double(), 64, 64)
    xy, _ = cams64.project(pts)
    for v in range(2):
        o, d = cams64.rays(torch.full((30,), v), xy[v])
        t = ((pts - o) * d).sum(-1)
        torch.testing.assert_close(o + d * t[:, None], pts, atol=1e-6, rtol=0)  # float32 poses


def test_intrinsics_from_fov_has_centred_principal_point():
    K = intrinsics_from_fov(33.8, 576, 576)
    assert K[0, 2] == 288 and K[1, 2] == 288
    assert K[0, 0] == pytest.approx(288 / np.tan(np.radians(16.9)), rel=1e-6)


def test_clockwise_orbit_mirrors_azimuth():
    ccw = orbit_cameras(torch.tensor([10.0]), torch.tensor([-40.0]), 2.0, 33.8, 32)
    cw = orbit_cameras(torch.tensor([10.0]), torch.tensor([40.0]), 2.0, 33.8, 32, azimuth_direction="cw")
    torch.testing.assert_close(ccw.c2w, cw.c2w)


def _occluded(view: int, k: int, xy: torch.Tensor, depth: torch.Tensor, focal: float, radius: float = 0.1) -> bool:
    """True when a nearer sphere (the three coloured ones or the grey one at the origin, index 3)
    overlaps sphere ``k``'s projected disc in this view."""
    r_k = focal * radius / float(depth[view, k])
    for j in range(xy.shape[1]):
        if j == k or depth[view, j] >= depth[view, k]:
            continue
        r_j = focal * radius / float(depth[view, j])
        if float((xy[view, j] - xy[view, k]).norm()) < r_j + r_k:
            return True
    return False


def test_axes_fixture_sphere_centres_land_on_their_blobs(axes_orbit_dir):
    orbit = load_orbit(axes_orbit_dir)
    images = orbit.images.numpy()
    pts = torch.tensor([*AXIS_CENTRES.values(), (0.0, 0.0, 0.0)])
    xy, depth = orbit.cameras.project(pts)
    focal = float(orbit.cameras.K[0, 0, 0])
    checked = 0
    for view in range(len(orbit)):
        for k, color in enumerate(AXIS_CENTRES):
            c = _blob_centroid(images[view], color)
            if c is None or _occluded(view, k, xy, depth, focal):
                continue  # a partly hidden blob's centroid is not its centre
            err = np.hypot(c[0] - float(xy[view, k, 0]), c[1] - float(xy[view, k, 1]))
            assert err < 1.0, (view, color, err)
            checked += 1
    assert checked >= 40


def test_axes_fixture_orientation_statements(axes_orbit_dir):
    """fixtures/README.md: frame 20 shows blue centre-front, red right, green on top;
    frame 4 shows red nearest, blue on the left."""
    orbit = load_orbit(axes_orbit_dir)
    img = orbit.images.numpy()
    r20, g20, b20 = (_blob_centroid(img[20], c) for c in ("red", "green", "blue"))
    assert r20[0] > 80 and abs(b20[0] - 64) < 1 and g20[1] < 40
    r4, b4 = _blob_centroid(img[4], "red"), _blob_centroid(img[4], "blue")
    assert b4[0] < 40 and abs(r4[0] - 64) < 5
    _, depth = orbit.cameras.project(torch.tensor(list(AXIS_CENTRES.values())))
    assert depth[4].argmin() == 0 and depth[20].argmin() == 2  # red nearest at a≈86°, blue at a=0

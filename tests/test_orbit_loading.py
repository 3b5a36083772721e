"""Orbit folders, videos and transforms.json load into the same cameras and images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from recon.config import DataConfig
from recon.data.cameras import sv3d_azimuths
from recon.data.images import blurred_outline_coverage, mask_from_background, outline_coverage
from recon.data.orbit import load_orbit, write_orbit
from recon.types import Orbit


def test_orbit_folder_round_trip(sphere_orbit: Orbit, sphere_dir: Path):
    loaded = load_orbit(sphere_dir)
    assert len(loaded) == 21 and loaded.kind == "orbit-folder"
    torch.testing.assert_close(loaded.cameras.c2w, sphere_orbit.cameras.c2w)
    torch.testing.assert_close(loaded.cameras.K, sphere_orbit.cameras.K)
    assert (loaded.images - sphere_orbit.images).abs().max() <= 1 / 255 + 1e-6
    torch.testing.assert_close(loaded.azimuths_deg, sv3d_azimuths())
    # Derived masks are the coverage the renderer had: 0 outside, 1 inside, and on the antialiased outline
    # an estimate from the colours (one of 26712 full pixels reads below 0.5 at this size: a texture edge).
    derived, exact = loaded.masks, sphere_orbit.masks
    assert (derived[exact == 0] == 0).all()
    assert (derived[exact == 1] > 0.5).float().mean() > 0.999
    rim = ((exact > 0) & (exact < 1)) | ((derived > 0) & (derived < 1))
    assert (derived - exact)[rim].abs().mean() < 0.06


def test_alpha_frames_give_masks_from_alpha(sphere_orbit: Orbit, tmp_path: Path):
    folder = write_orbit(sphere_orbit, tmp_path / "rgba", alpha=True, transforms=False)
    loaded = load_orbit(folder)
    assert loaded.mask_source == "alpha"
    assert (loaded.masks - sphere_orbit.masks).abs().max() <= 1 / 255 + 1e-6


def test_missing_orbit_json_with_21_frames_assumes_sv3d(sphere_dir: Path, caplog):
    (sphere_dir / "orbit.json").unlink()
    loaded = load_orbit(sphere_dir)
    assert any("SV3D" in n for n in loaded.notes)
    assert "assuming SV3D" in caplog.text
    assert loaded.fov_deg == 33.8 and loaded.radius == 2.0
    assert torch.allclose(loaded.elevations_deg, torch.full((21,), 10.0, dtype=torch.float64))


def test_transforms_json_round_trip(toy_orbit: Orbit, tmp_path: Path):
    folder = write_orbit(toy_orbit, tmp_path / "toy", transforms=True)
    (folder / "orbit.json").unlink()  # force the transforms.json path
    loaded = load_orbit(folder)
    assert loaded.kind == "transforms"
    torch.testing.assert_close(loaded.cameras.c2w, toy_orbit.cameras.c2w)
    torch.testing.assert_close(loaded.cameras.K, toy_orbit.cameras.K)
    torch.testing.assert_close(loaded.elevations_deg, toy_orbit.elevations_deg)


def test_plain_nerfstudio_transforms_without_orbit_metadata(toy_orbit: Orbit, tmp_path: Path):
    folder = write_orbit(toy_orbit, tmp_path / "toy", transforms=True)
    (folder / "orbit.json").unlink()
    data = json.loads((folder / "transforms.json").read_text())
    del data["orbit"]
    for fr in data["frames"]:  # global intrinsics as instant-ngp writes them
        for k in ("fl_x", "fl_y", "cx", "cy"):
            data[k] = fr.pop(k)
    (folder / "transforms.json").write_text(json.dumps(data))
    loaded = load_orbit(folder / "transforms.json")
    assert not loaded.is_orbit
    torch.testing.assert_close(loaded.cameras.c2w, toy_orbit.cameras.c2w)


def test_non_square_transforms_views_are_accepted(toy_orbit: Orbit, tmp_path: Path):
    folder = write_orbit(toy_orbit, tmp_path / "toy", transforms=True)
    (folder / "orbit.json").unlink()
    from PIL import Image

    for p in sorted(folder.glob("*.png")):
        Image.open(p).crop((0, 4, 48, 44)).save(p)  # 48x40
    data = json.loads((folder / "transforms.json").read_text())
    data["h"] = 40
    for fr in data["frames"]:
        fr["cy"] -= 4
    (folder / "transforms.json").write_text(json.dumps(data))
    loaded = load_orbit(folder)
    assert (loaded.width, loaded.height) == (48, 40)
    assert loaded.cameras.K[0, 1, 2] == 20.0


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_with_orbit_json(sphere_orbit: Orbit, sphere_dir: Path, tmp_path: Path, suffix: str):
    import imageio.v3 as iio

    frames = np.clip(np.rint(sphere_orbit.images.numpy() * 255), 0, 255).astype(np.uint8)
    video = tmp_path / "vid" / f"orbit{suffix}"
    video.parent.mkdir()
    if suffix == ".mp4":
        iio.imwrite(video, frames, plugin="FFMPEG", fps=10, codec="libx264", quality=9, macro_block_size=16)
    else:
        iio.imwrite(video, frames, plugin="pillow", duration=100, loop=0)
    (video.parent / "orbit.json").write_text((sphere_dir / "orbit.json").read_text())
    loaded = load_orbit(video)
    assert len(loaded) == 21 and loaded.kind == "video"
    assert (loaded.images - sphere_orbit.images).abs().mean() < 0.03
    torch.testing.assert_close(loaded.cameras.c2w, sphere_orbit.cameras.c2w)


def test_mask_clean_up_keeps_real_holes_and_drops_speckle():
    cfg = DataConfig()
    img = np.ones((100, 100, 3), dtype=np.float32)
    yy, xx = np.mgrid[:100, :100]
    r = np.hypot(yy - 50, xx - 50)
    ring = (r < 35) & (r > 15)  # a torus-like ring: its hole (radius 15) is real
    img[ring] = 0.3
    img[50, 50] = 0.0  # one speckle inside the hole
    img[45, 27] = 1.0  # a one-pixel white logo dot on the object
    img[5, 5] = 0.0  # speckle in the background
    mask = mask_from_background(img, np.ones(3, dtype=np.float32), cfg) > 0.5
    assert not mask[50, 50] and not mask[5, 5]  # the hole stays open; speckle is gone
    assert mask[45, 27]
    assert abs(mask.sum() - ring.sum()) < 0.05 * ring.sum()


def _outline_offset_px(mask: np.ndarray, coverage: np.ndarray) -> float:
    """Mean distance (pixels, positive outwards) of a mask's outline from the true coverage's."""
    perimeter = (np.abs(np.diff(coverage, axis=0)).sum() + np.abs(np.diff(coverage, axis=1)).sum()) / (4 / np.pi)
    return float((mask.sum() - coverage.sum()) / perimeter)


def _two_colour_disk(light_part: bool, n: int = 96, ss: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """An [n, n, 3] disk on white in two colours split by a texture edge that meets its outline (and, with
    ``light_part``, a part within 0.15 of white below row 75), antialiased by ss x ss supersampling, and
    its true [n, n] coverage."""
    yy, xx = (np.mgrid[: n * ss, : n * ss] + 0.5) / ss
    inside = np.hypot(yy - 48.3, xx - 47.6) < 35.2
    colour = np.where((xx < 52.1)[..., None], [0.2, 0.35, 0.8], [0.9, 0.5, 0.1])
    if light_part:
        colour = np.where((yy > 75.0)[..., None], [0.95, 0.93, 0.9], colour)
    fine = np.where(inside[..., None], colour, 1.0)
    img = fine.reshape(n, ss, n, ss, 3).mean((1, 3)).astype(np.float32)
    return img, inside.reshape(n, ss, n, ss).mean((1, 3))


def test_soft_outline_sits_on_the_coverage_of_a_textured_disk():
    """A disk in two colours (split by a texture edge that meets its outline) and with a light part, on
    white, antialiased by 8x8 supersampling: the binary mask stands a third of a pixel outside; the soft
    outline within a few hundredths, and the light part, too close to white to estimate, stays binary."""
    img, coverage = _two_colour_disk(light_part=True)
    n = img.shape[0]
    white = np.ones(3, dtype=np.float32)
    binary = mask_from_background(img, white, DataConfig(soft_outline=False))
    soft = mask_from_background(img, white, DataConfig())
    dark = slice(0, 70)  # rows away from the light part
    assert _outline_offset_px(binary[dark], coverage[dark]) > 0.25
    assert abs(_outline_offset_px(soft[dark], coverage[dark])) < 0.05
    rim = (coverage[dark] > 0) & (coverage[dark] < 1)
    assert np.abs(soft[dark] - coverage[dark])[rim].mean() < 0.05
    assert (soft[coverage == 1] > 0.5).all()  # the texture edge is not read as partial coverage
    light_rim = (binary > 0) & (np.arange(n)[:, None] > 80)
    assert (soft[light_rim] == binary[light_rim]).all()


def test_blurred_outline_widens_only_for_a_blurred_frame():
    """The two-colour disk, sharp and blurred (Gaussian sigma 0.5-1 px, as generated views are soft): on the
    sharp frame the outline stays one pixel (the same mask as ``outline_coverage``); on the blurred ones
    the binary mask stands 0.9-1.6 px outside the object and a one-pixel ring of estimates leaves
    0.25-1.0 px of that, the widening ring under 0.2 px."""
    sharp, coverage = _two_colour_disk(light_part=False)
    white = np.ones(3, dtype=np.float32)
    mask = mask_from_background(sharp, white, DataConfig(soft_outline=False)) > 0.5
    np.testing.assert_array_equal(blurred_outline_coverage(sharp, white, mask),
                                  outline_coverage(sharp, white, mask))
    for sigma in (0.5, 0.7, 1.0):
        img = ndimage.gaussian_filter(sharp, (sigma, sigma, 0))
        binary = mask_from_background(img, white, DataConfig(soft_outline=False))
        one_ring = mask_from_background(img, white, DataConfig(soft_outline_max_px=1))
        widening = mask_from_background(img, white, DataConfig())
        assert _outline_offset_px(binary, coverage) > 0.85
        assert _outline_offset_px(one_ring, coverage) > 0.2
        assert abs(_outline_offset_px(widening, coverage)) < 0.2


def test_outline_coverage_leaves_a_thin_part_binary():
    """A bar two pixels wide has no pixel deeper inside: it keeps its binary value, while the outline of
    a block beside it is estimated (its antialiased edge column reads its coverage, 0.375)."""
    img = np.ones((24, 24, 3), dtype=np.float32)
    img[4:20, 4] = 0.85  # the bar's antialiased edge
    img[4:20, 5] = 0.6  # the bar
    img[4:20, 12:20] = 0.6  # a block
    img[4:20, 11] = 0.85  # its antialiased left edge: coverage (1 - 0.85) / (1 - 0.6)
    mask = np.abs(img - 1).max(-1) > 0.05
    soft = outline_coverage(img, np.ones(3, dtype=np.float32), mask)
    np.testing.assert_array_equal(soft[:, :8], mask[:, :8].astype(np.float32))
    np.testing.assert_allclose(soft[6:18, 11], 0.375, atol=1e-6)
    assert (soft[5:19, 12:19] == 1).all()


def test_max_resolution_downsamples(sphere_dir: Path):
    loaded = load_orbit(sphere_dir, DataConfig(max_resolution=24))
    assert loaded.images.shape[1:3] == (24, 24)
    assert loaded.cameras.width == 24

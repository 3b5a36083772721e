"""Generated-view realism: render an SV3D orbit of a mesh the way a video model's views are imperfect,
while ``orbit.json`` states the ideal orbit (as a generator's would). Strengths are documented presets,
so robustness is measured, not assumed.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Realism:
    """How far each rendered view departs from a perfect render of the nominal camera."""

    pose_jitter_deg: float = 0.0
    """Each view's elevation and azimuth are off by a uniform amount in ±this (degrees)."""
    color_shift: float = 0.0
    """Per-view, per-channel gain on the object's colours, uniform in 1 ± this."""
    exposure_shift: float = 0.0
    """Per-view overall gain on the object's colours, uniform in 1 ± this."""
    blur_px: float = 0.0
    """Gaussian blur sigma in pixels."""
    jpeg_quality: int = 0
    """JPEG-compress each view at this quality (0: no compression)."""
    texture_noise: float = 0.0
    """Amplitude of per-view band-pass noise on the object: fine texture that differs between views."""

    @property
    def is_perfect(self) -> bool:
        return self == Realism()

    def key(self) -> str:
        return "-".join(f"{v}" for v in asdict(self).values())


REALISM_LEVELS: dict[str, Realism] = {
    "none": Realism(),
    "mild": Realism(1.0, 0.03, 0.015, 0.5, 90, 0.015),
    "default": Realism(2.0, 0.05, 0.025, 0.7, 80, 0.03),
    "strong": Realism(4.0, 0.10, 0.05, 1.0, 60, 0.06),
}
"""Named strengths. 'default' is what SV3D's frames look like to us: a couple of degrees of pose error,
a few percent of colour drift, slightly soft, compressed, with fine texture that is not view-consistent."""


def perturb_images(rgb: np.ndarray, alpha: np.ndarray, realism: Realism, rng: np.random.Generator) -> np.ndarray:
    """Apply colour, exposure, texture noise, blur and JPEG to [N, H, W, 3] renders over a white background
    with coverage [N, H, W]. Returns float32 images in [0, 1]."""
    from PIL import Image
    from scipy import ndimage

    out = []
    for img, a in zip(rgb, alpha, strict=True):
        a3 = a[..., None]
        gain = 1 + rng.uniform(-realism.color_shift, realism.color_shift, 3) \
            + rng.uniform(-realism.exposure_shift, realism.exposure_shift)
        obj = img * gain
        if realism.texture_noise > 0:
            white = rng.standard_normal(img.shape[:2])
            band = ndimage.gaussian_filter(white, 1.0) - ndimage.gaussian_filter(white, 3.0)
            band *= realism.texture_noise / max(float(band.std()), 1e-8)
            obj = obj + band[..., None]
        img = img * (1 - a3) + np.clip(obj, 0, 1) * a3
        if realism.blur_px > 0:
            img = ndimage.gaussian_filter(img, sigma=(realism.blur_px, realism.blur_px, 0))
        if realism.jpeg_quality > 0:
            buf = io.BytesIO()
            Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)).save(
                buf, format="JPEG", quality=realism.jpeg_quality)
            img = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255
        out.append(img.astype(np.float32))
    return np.stack(out)


def render_realistic_orbit(mesh_path: Path, out_dir: Path, size: int, realism: Realism, seed: int = 0,
                           frames: int = 21, elevation: float = 10.0, dynamic_amplitude: float = 0.0,
                           rgba: bool = True) -> Path:
    """Render an SV3D orbit of the (normalised) mesh with ``realism``'s imperfections; write the nominal
    cameras. Frames are RGBA: alpha is the renders' coverage at the jittered poses (what background
    matting of a generated view gives), so untextured white objects on white still have masks; with
    ``rgba`` False, RGB on white (masks then come from the background colour, as for raw SV3D frames)."""
    from recon.data.cameras import orbit_cameras
    from recon.data.orbit import write_orbit
    from recon.data.synthetic import sv3d_orbit_angles
    from recon.render.mesh import load_render_mesh
    from recon.render.views import render_views
    from recon.types import Orbit

    rng = np.random.default_rng(seed)
    mesh = load_render_mesh(mesh_path).normalized()
    elev, azim = sv3d_orbit_angles(frames, elevation, dynamic_amplitude)
    j = realism.pose_jitter_deg
    e_j = elev + torch.from_numpy(rng.uniform(-j, j, frames))
    a_j = azim + torch.from_numpy(rng.uniform(-j, j, frames))
    rgb, alpha = render_views(mesh, orbit_cameras(e_j, a_j, 2.0, 33.8, size), supersample=2)
    images = perturb_images(rgb.numpy(), alpha.numpy(), realism, rng)
    nominal = orbit_cameras(elev, azim, 2.0, 33.8, size)
    orbit = Orbit(images=torch.from_numpy(images), masks=alpha, cameras=nominal, elevations_deg=elev,
                  azimuths_deg=azim, radius=2.0, fov_deg=33.8, kind="synthetic", mask_source="alpha",
                  source=str(mesh_path))
    write_orbit(orbit, out_dir, alpha=rgba, transforms=False)
    return out_dir

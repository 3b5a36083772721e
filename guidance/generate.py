"""Image -> orbit: a generator protocol and SV3D_p as its first implementation.

``ViewGenerator`` is what the rest of the tool needs from a novel-view model: one conditioning image and
target cameras (elevation, azimuth relative to the input view) in, one image per camera out. SV3D_p samples
all 21 frames jointly with Euler steps on the EDM schedule and a frame-wise triangular classifier-free
guidance (1 at the input view, 2.5 opposite it, SV3D's default); other generators (Stable Zero123,
EscherNet, ...) can implement the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from guidance.models import SV3DModels, camera_ids


class ViewGenerator(Protocol):
    """Novel views of one object."""

    def generate(self, image: Tensor, elevations_deg: Tensor, azimuths_deg: Tensor, seed: int = 0) -> Tensor:
        """[N, S, S, 3] images in [0, 1] for the cameras (degrees; azimuth relative to the input view, ours:
        counter-clockwise seen from above) given the input ``image`` [S, S, 3] in [0, 1] on white."""
        ...


@dataclass
class SamplingConfig:
    """SV3D sampling (its published defaults)."""

    steps: int = 50
    """Euler steps on the EDM schedule."""
    cfg_min: float = 1.0
    """Guidance scale at the input view (the triangle's ends)."""
    cfg_max: float = 2.5
    """Guidance scale opposite the input view (the triangle's peak)."""
    cond_aug: float = 1e-5
    """Noise added to the conditioning image before encoding."""
    size: int = 576
    """Side of the generated frames (SV3D: 576)."""
    decode_chunk: int = 14
    """Frames decoded at once by the temporal VAE decoder."""


def triangle_scales(frames: int, lo: float, hi: float) -> Tensor:
    """[frames] guidance scales rising linearly from ``lo`` to ``hi`` at the middle frame and back."""
    x = torch.linspace(0.0, 1.0, frames, dtype=torch.float64)
    return (lo + (hi - lo) * (1 - (2 * x - 1).abs())).float()


class SV3DGenerator:
    """SV3D_p sampling as a ``ViewGenerator``."""

    def __init__(self, models: SV3DModels, cfg: SamplingConfig | None = None):
        self.models = models
        self.cfg = cfg or SamplingConfig()

    @torch.no_grad()
    def generate(self, image: Tensor, elevations_deg: Tensor, azimuths_deg: Tensor, seed: int = 0,
                 progress: bool = True) -> Tensor:
        from recon.log import StepProgress

        m, cfg = self.models, self.cfg
        frames = len(azimuths_deg)
        gen = torch.Generator().manual_seed(seed)
        embedding, cond = m.condition(image, cfg.size, cfg.cond_aug, gen)  # [1, 1, D], [C, h, w]
        ids = camera_ids(elevations_deg, azimuths_deg, cfg.cond_aug)
        scales = triangle_scales(frames, cfg.cfg_min, cfg.cfg_max).to(m.device)

        sched = m.scheduler
        sched.set_timesteps(cfg.steps, device=m.device)
        h = cfg.size // m.latent_scale
        channels = m.unet.config.out_channels
        latents = torch.randn((frames, channels, h, h), generator=gen).to(m.device) * sched.init_noise_sigma
        enc = torch.cat([torch.zeros_like(embedding), embedding])
        cond_b = torch.stack([torch.zeros_like(cond), cond]).to(m.device, m.dtype)
        cond_b = cond_b[:, None].expand(-1, frames, -1, -1, -1)
        ids_b = ids[None].expand(2, -1, -1).to(m.device)
        with StepProgress("SV3D sampling", len(sched.timesteps), enabled=progress) as bar:
            for i, t in enumerate(sched.timesteps):
                x = sched.scale_model_input(latents, t).to(m.dtype)
                sample = torch.cat([x[None].expand(2, -1, -1, -1, -1), cond_b], dim=2)
                out = m.unet(sample, t.reshape(1).expand(2).to(m.device), enc, ids_b).sample.float()
                pred = out[0] + scales[:, None, None, None] * (out[1] - out[0])
                latents = sched.step(pred, t, latents).prev_sample
                bar.update(i + 1)
        return m.decode(latents, cfg.decode_chunk)


def preprocess_image(path: str | Path, size: int = 576, fill: float = 0.85, threshold: float = 0.05) -> Tensor:
    """[size, size, 3] float image in [0, 1]: the object found by alpha (or by its difference from the
    background colour of the image's corners), cropped, padded to a square where it fills ``fill`` of
    the side, resized, composited on white.

    Raises:
        InputError: unreadable image, or no object in it.
    """
    from PIL import Image

    from recon.errors import InputError

    path = Path(path)
    try:
        pil = Image.open(path)
        pil.load()
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read image ({exc})") from None
    rgba = np.asarray(pil.convert("RGBA"), np.float32) / 255.0
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    if alpha.min() < 0.99:
        mask = alpha > 0.5
    else:
        corners = np.stack([rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]])
        background = np.median(corners, axis=0)
        mask = np.abs(rgb - background).max(axis=-1) > threshold
        alpha = mask.astype(np.float32)
    if mask.sum() < 16:
        raise InputError(path, "no object found (no alpha and nothing differs from the corners' colour)")
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = int(np.ceil(max(y1 - y0, x1 - x0) / fill))
    canvas = np.ones((side, side, 3), np.float32)
    oy, ox = (side - (y1 - y0)) // 2, (side - (x1 - x0)) // 2
    a = alpha[y0:y1, x0:x1, None]
    canvas[oy:oy + y1 - y0, ox:ox + x1 - x0] = rgb[y0:y1, x0:x1] * a + (1 - a)
    out = Image.fromarray(np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)).resize((size, size),
                                                                                         Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(out, np.float32) / 255.0)


def generate_orbit(generator: ViewGenerator, image: Tensor, out_dir: Path, elevation_deg: float = 10.0,
                   dynamic_amplitude_deg: float = 0.0, frames: int = 21, seed: int = 0) -> Path:
    """Generate an SV3D orbit (static or dynamic) of ``image`` and write it as an orbit folder with
    ``orbit.json`` (fov 33.8°, radius 2, white background), ready for ``orbitmesh fit``."""
    from recon.data.cameras import orbit_cameras
    from recon.data.orbit import write_orbit
    from recon.data.synthetic import sv3d_orbit_angles
    from recon.types import Orbit

    elev, azim = sv3d_orbit_angles(frames, elevation_deg, dynamic_amplitude_deg)
    views = generator.generate(image, elev, azim, seed=seed)
    size = views.shape[1]
    orbit = Orbit(images=views, masks=torch.ones(views.shape[:3]), cameras=orbit_cameras(elev, azim, 2.0, 33.8, size),
                  elevations_deg=elev, azimuths_deg=azim, radius=2.0, fov_deg=33.8, kind="generated")
    write_orbit(orbit, out_dir, alpha=False, transforms=True)
    return out_dir

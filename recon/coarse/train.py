"""Fitting the coarse radiance field to an orbit (SV3D recipe: RGB loss on the white composite, mask loss
on accumulated opacity, opacity entropy, coarse-to-fine images and grids, 600 steps)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from scipy import ndimage
from torch import Tensor

from recon.coarse.config import CoarseConfig
from recon.coarse.fields import DenseGridField, HashGridField
from recon.coarse.occupancy import Occupancy, visual_hull
from recon.coarse.render import render_rays
from recon.data.cameras import Cameras
from recon.log import StepProgress
from recon.ops import phase_index
from recon.types import CoarseField, Orbit

log = logging.getLogger(__name__)


@dataclass
class _Level:
    """One image scale: images, masks, cameras and the pixels worth sampling."""

    images: Tensor  # [N, H, W, 3]
    masks: Tensor  # [N, H, W]
    cameras: Cameras
    pixels: Tensor  # [P, 3] (view, y, x) of pixels inside the dilated masks


def _level(orbit: Orbit, scale: float) -> _Level:
    h = max(8, round(orbit.height * scale))
    w = max(8, round(orbit.width * scale))
    if (h, w) == (orbit.height, orbit.width):
        images, masks = orbit.images, orbit.masks
    else:
        images = torch.nn.functional.interpolate(orbit.images.permute(0, 3, 1, 2), size=(h, w), mode="area")
        images = images.permute(0, 2, 3, 1).contiguous()
        masks = torch.nn.functional.interpolate(orbit.masks[:, None], size=(h, w), mode="area")[:, 0].contiguous()
    cams = orbit.cameras.scaled(w, h)
    # Rays outside the dilated masks pass through carved space: they carry no gradient, so skip them.
    grow = max(2, round(0.03 * max(h, w)))
    sel = torch.from_numpy(ndimage.binary_dilation((masks > 0.05).numpy(), iterations=grow, structure=None))
    return _Level(images, masks, cams, sel.nonzero())


def _make_field(cfg: CoarseConfig) -> tuple[torch.nn.Module, dict]:
    finest_cell = 2 * cfg.bound / max(cfg.resolutions)
    if cfg.field == "grid":
        init = {"resolution": cfg.resolutions[0], "bound": cfg.bound, "init_sigma": 0.5,
                "density_scale": 1.0 / finest_cell}
        return DenseGridField(**init), init
    h = cfg.hash
    init = {"bound": cfg.bound, "levels": h.levels, "features": h.features, "log2_size": h.log2_size,
            "base_res": h.base_res, "max_res": h.max_res, "hidden": h.hidden, "init_sigma": 0.5,
            "density_scale": 1.0 / finest_cell}
    return HashGridField(**init), init


def _optimizer(cfg: CoarseConfig, field: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.field == "grid":
        return torch.optim.Adam(field.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    return torch.optim.Adam(field.parameters(), lr=cfg.hash.lr, betas=(0.9, 0.99), eps=1e-15)


@torch.no_grad()
def refresh_occupancy(field: torch.nn.Module, hull: Occupancy, step_len: float, threshold: float = 1e-3) -> Occupancy:
    """Cells of the hull whose density is non-negligible (opacity over one sample step > ``threshold``),
    dilated by one cell so the surface can still move."""
    centers = hull.centers()
    keep = hull.grid.reshape(-1).clone()
    idx = keep.nonzero()[:, 0]
    sig = torch.cat([field.sigma(c) for c in centers[idx].split(65536)]) if idx.numel() else torch.zeros(0)
    alive = torch.zeros_like(keep)
    alive[idx] = (1 - torch.exp(-sig * step_len)) > threshold
    grown = ndimage.binary_dilation(alive.reshape(hull.grid.shape).numpy(), iterations=1)
    return Occupancy(torch.from_numpy(grown) & hull.grid, hull.bound)


def fit_coarse_field(
    cfg: CoarseConfig,
    orbit: Orbit,
    seed: int = 0,
    checkpoint: Path | None = None,
    progress: bool = True,
) -> CoarseField:
    """Fit a radiance field to ``orbit`` (on the CPU; CUDA tensors are used when the orbit is on CUDA).

    Args:
        checkpoint: file to save to every ``cfg.checkpoint_every`` steps and to resume from when it exists.
    Returns:
        the fitted ``CoarseField`` (occupancy refreshed at the end).
    """
    if len(cfg.resolutions) != len(cfg.phase_ends) or len(cfg.image_scales) != len(cfg.phase_ends):
        raise ValueError("coarse.resolutions, coarse.image_scales and coarse.phase_ends must have equal length")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    orbit = orbit.to("cpu")
    hull = visual_hull(orbit, cfg.hull_res, cfg.bound, cfg.hull_dilation, cfg.hull_tolerance_views)
    log.info("visual hull: %.1f%% of the cube occupied", 100 * float(hull.grid.float().mean()))
    field, init = _make_field(cfg)
    start = 0
    occupancy = hull
    if checkpoint is not None and checkpoint.is_file():
        saved = CoarseField.load(checkpoint)
        if saved.kind == cfg.field and saved.init == init and saved.step < cfg.steps:
            field, occupancy, start = saved.field, Occupancy(saved.occupancy, cfg.bound), saved.step
            log.info("resuming the coarse field from %s at step %d", checkpoint, start)
    optimizer = _optimizer(cfg, field)
    levels: dict[int, _Level] = {}
    bg = torch.tensor(orbit.background, dtype=torch.float32)
    finest_cell = 2 * cfg.bound / max(cfg.resolutions)
    step_len = finest_cell / cfg.samples_per_cell
    phase = phase_index(start, cfg.steps, cfg.phase_ends)
    if cfg.field == "grid" and field.resolution != cfg.resolutions[phase]:
        field.upsample(cfg.resolutions[phase])
        optimizer = _optimizer(cfg, field)
    t0 = time.perf_counter()
    loss_val, psnr_val = float("nan"), float("nan")
    with StepProgress("coarse field", cfg.steps, start, enabled=progress) as bar:
        for step in range(start, cfg.steps):
            ph = phase_index(step, cfg.steps, cfg.phase_ends)
            if ph != phase:
                phase = ph
                if cfg.field == "grid" and field.resolution != cfg.resolutions[phase]:
                    field.upsample(cfg.resolutions[phase])
                    optimizer = _optimizer(cfg, field)
            if ph not in levels:
                levels[ph] = _level(orbit, cfg.image_scales[ph])
            lvl = levels[ph]
            # Coarser phases take longer steps: the sample spacing follows the current grid.
            cur_step = step_len * max(cfg.resolutions) / cfg.resolutions[ph] if cfg.field == "grid" else step_len
            pick = torch.randint(0, lvl.pixels.shape[0], (cfg.rays_per_step,), generator=gen)
            v, y, x = lvl.pixels[pick].unbind(-1)
            jitter = torch.rand(cfg.rays_per_step, 2, generator=gen)
            xy = torch.stack([x.float() + jitter[:, 0], y.float() + jitter[:, 1]], -1)
            o, d = lvl.cameras.rays(v, xy)
            out = render_rays(field, occupancy, o, d, cur_step, bg, jitter=True, generator=gen,
                              distortion=cfg.distortion_weight > 0)
            target = lvl.images[v, y, x]
            mask = lvl.masks[v, y, x]
            mse = ((out.rgb - target) ** 2).mean()
            acc = out.acc.clamp(1e-4, 1 - 1e-4)
            mask_loss = torch.nn.functional.binary_cross_entropy(acc, mask)
            entropy = -(acc * torch.log(acc) + (1 - acc) * torch.log(1 - acc)).mean()
            loss = mse + cfg.mask_weight * mask_loss + cfg.entropy_weight * entropy
            if out.distortion is not None:
                loss = loss + cfg.distortion_weight * out.distortion.mean()
            if cfg.field == "grid" and cfg.tv_weight > 0:
                loss = loss + cfg.tv_weight * field.total_variation(generator=gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_val = float(loss.detach())
            psnr_val = -10 * math.log10(max(float(mse.detach()), 1e-10))
            done = step + 1
            if cfg.refresh_every and done % cfg.refresh_every == 0 and done < cfg.steps:
                occupancy = refresh_occupancy(field, hull, cur_step)
            bar.update(done, f"loss {loss_val:.4f}  PSNR {psnr_val:.1f}")
            save_now = cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps
            if checkpoint is not None and save_now:
                CoarseField(field, occupancy.grid, cfg.bound, cfg.field, init, done).save(checkpoint)
    seconds = time.perf_counter() - t0
    occupancy = refresh_occupancy(field, hull, step_len)
    metrics = {"loss": loss_val, "train_psnr": psnr_val, "seconds": seconds, "steps": cfg.steps - start}
    log.info("coarse field: %d steps in %.1f s, loss %.4f, train PSNR %.2f dB", cfg.steps - start, seconds,
             loss_val, psnr_val)
    result = CoarseField(field, occupancy.grid, cfg.bound, cfg.field, init, cfg.steps, metrics)
    if checkpoint is not None:
        result.save(checkpoint)
    return result

"""Soft-masked score distillation (SDS) with SV3D, as an extra loss of the refinement (SV3D recipe).

Each step: render the current surface along a random dynamic orbit (21 views), encode with the VAE, noise
the latents at a level t drawn from a range annealed from [0.7, 0.9] to [0.3, 0.8], let SV3D denoise them
conditioned on the input image and the views' cameras (classifier-free guidance, scale 3), and pull the
latents towards the denoised ones — weighted per latent cell by the soft visibility mask
``clip(1 - smoothstep(max_ref dot(n, v), 0.1, 0.5), 0.2, 1)``: surface the input views saw well is left
to the photometric loss, surface they never saw is shaped by the diffusion model. The loss is ramped in
over the last ``sds_ramp_steps`` refinement steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from guidance.models import GuidanceConfig, SV3DModels, camera_ids


def smoothstep(x: Tensor, lo: float, hi: float) -> Tensor:
    """Hermite smoothstep: 0 below ``lo``, 1 above ``hi``, 3u² - 2u³ between."""
    u = ((x - lo) / (hi - lo)).clamp(0, 1)
    return u * u * (3 - 2 * u)


def visibility_weight(points: Tensor, normals: Tensor, ref_centers: Tensor) -> Tensor:
    """[P] SDS weight of surface points: ``clip(1 - smoothstep(max_ref dot(n, v), 0.1, 0.5), 0.2, 1)`` with v
    the unit direction from the point to each reference (input) camera centre [N, 3]."""
    v = torch.nn.functional.normalize(ref_centers[None] - points[:, None], dim=-1)  # [P, N, 3]
    best = (v * normals[:, None]).sum(-1).amax(dim=1)
    return (1 - smoothstep(best, 0.1, 0.5)).clamp(0.2, 1.0)


def sigma_at(t: Tensor | float, sigma_min: float, sigma_max: float) -> Tensor:
    """Noise level at fraction ``t`` of the log-sigma range (t = 0: sigma_min, t = 1: sigma_max)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.exp(math.log(sigma_min) + t * (math.log(sigma_max) - math.log(sigma_min)))


def denoise(models: SV3DModels, noisy: Tensor, sigma: float, cond_latent: Tensor, embedding: Tensor,
            ids: Tensor, cfg_scale: Tensor | float) -> Tensor:
    """SV3D's estimate of the clean latents [F, C, h, w] from ``noisy`` at noise level ``sigma`` (EDM
    preconditioning, v- or epsilon-prediction as the scheduler says), with classifier-free guidance:
    ``uncond + scale * (cond - uncond)``, the unconditional branch seeing zero image embedding and latent.

    Args:
        cond_latent: [C, h, w] unscaled VAE latent of the input image; embedding: [1, 1, D] CLIP embedding;
        ids: [F, 3] per-frame (cond_aug, polar, azimuth); cfg_scale: scalar or [F] per frame.
    """
    frames = noisy.shape[0]
    c_in = 1.0 / math.sqrt(sigma**2 + 1.0)
    c_noise = torch.tensor([0.25 * math.log(sigma)] * 2, device=models.device, dtype=models.dtype)
    x = (noisy * c_in).to(models.device, models.dtype)
    cond = cond_latent.to(models.device, models.dtype).expand(frames, -1, -1, -1)
    sample = torch.stack([torch.cat([x, torch.zeros_like(cond)], dim=1), torch.cat([x, cond], dim=1)])
    enc = torch.cat([torch.zeros_like(embedding), embedding]).to(models.device, models.dtype)
    out = models.unet(sample, c_noise, enc, ids[None].expand(2, -1, -1).to(models.device)).sample.float()
    noisy = noisy.float().to(out.device)
    if getattr(models.scheduler.config, "prediction_type", "v_prediction") == "v_prediction":
        den = out * (-sigma / math.sqrt(sigma**2 + 1.0)) + noisy / (sigma**2 + 1.0)
    else:
        den = noisy - sigma * out
    scale = torch.as_tensor(cfg_scale, dtype=den.dtype, device=den.device).reshape(-1, 1, 1, 1)
    return den[0] + scale * (den[1] - den[0])


def sds_loss(latents: Tensor, denoised: Tensor, mask: Tensor, weight: float) -> Tensor:
    """The SDS surrogate whose gradient w.r.t. ``latents`` [F, C, h, w] is
    ``weight * mask * (latents - denoised) / F``; ``mask`` [F, 1, h, w] in [0, 1]."""
    grad = torch.nan_to_num((latents.detach() - denoised.detach()) * mask)
    target = (latents - grad).detach()
    return weight * 0.5 * ((latents - target) ** 2).sum() / latents.shape[0]


class MaskedSDS:
    """The refinement's extra loss: soft-masked SDS with SV3D (see the module docstring).

    Args:
        cfg: guidance settings; models: the loaded SV3D; orbit: the input orbit (its camera centres are the
            reference views of the visibility mask; ``input_view`` — default: the view at azimuth 0, SV3D's
            input — is the conditioning image).
    """

    def __init__(self, cfg: GuidanceConfig, models: SV3DModels, orbit, input_view: int | None = None):
        self.cfg, self.models = cfg, models
        if input_view is None:
            input_view = 0
            if orbit.azimuths_deg is not None:
                az = orbit.azimuths_deg.double() % 360
                input_view = int(torch.minimum(az, 360 - az).argmin())
        self.embedding, self.cond_latent = models.condition(
            orbit.images[input_view].float().cpu(), cfg.sds_resolution, cfg.cond_aug, torch.Generator().manual_seed(0))
        self.ref_centers = orbit.cameras.centers.float().cpu()
        sched = models.scheduler.config
        self.sigma_min = float(getattr(sched, "sigma_min", None) or 0.002)
        self.sigma_max = float(getattr(sched, "sigma_max", None) or 700.0)

    def weight(self, step: int, steps: int) -> float:
        """SDS weight at ``step``: 0 before the last ``sds_ramp_steps``, then linear up to ``sds_weight``."""
        ramp = max(1, min(self.cfg.sds_ramp_steps, steps))
        start = steps - ramp
        return 0.0 if step < start else self.cfg.sds_weight * (step - start + 1) / ramp

    def t_range(self, step: int, steps: int) -> tuple[float, float]:
        """The range t is drawn from, annealed over the ramp from ``t_start`` to ``t_end``."""
        ramp = max(1, min(self.cfg.sds_ramp_steps, steps))
        a = min(1.0, max(0.0, (step - (steps - ramp)) / max(1, ramp - 1)))
        lo = self.cfg.t_start[0] + a * (self.cfg.t_end[0] - self.cfg.t_start[0])
        hi = self.cfg.t_start[1] + a * (self.cfg.t_end[1] - self.cfg.t_start[1])
        return lo, hi

    def __call__(self, ctx) -> Tensor | None:
        from recon.data.cameras import orbit_cameras
        from recon.data.synthetic import sv3d_orbit_angles
        from recon.refine.render import render_surface
        from recon.render import interpolate
        from recon.render.views import vertex_normals

        w = self.weight(ctx.step, ctx.steps)
        if w <= 0:
            return None
        g = ctx.generator
        cfg = self.cfg
        u = torch.rand(4, generator=g, dtype=torch.float64)
        mean_elev = cfg.sds_elevation_range[0] + float(u[0]) * (cfg.sds_elevation_range[1] - cfg.sds_elevation_range[0])
        elev, azim = sv3d_orbit_angles(cfg.sds_views, mean_elev, 10.0 * float(u[1]))
        azim = (azim + 360.0 * float(u[2])) % 360
        cams = orbit_cameras(elev, azim, 2.0, 33.8, cfg.sds_resolution).to(ctx.verts.device)
        r = render_surface(ctx.verts, ctx.faces, ctx.albedo, ctx.light, cams)
        with torch.no_grad():
            vis = visibility_weight(ctx.verts.detach(), vertex_normals(ctx.verts.detach(), ctx.faces),
                                    self.ref_centers.to(ctx.verts.device))
            tri = ctx.faces.int().contiguous()
            px = interpolate(vis[:, None].contiguous(), r["rast"], tri)[..., 0]
            px = torch.where(r["rast"][..., 3] > 0, px, torch.zeros_like(px))
        latents = self.models.encode(r["rgb"]).float()
        mask = torch.nn.functional.adaptive_avg_pool2d(px[:, None].float(), latents.shape[-2:]).to(latents.device)
        lo, hi = self.t_range(ctx.step, ctx.steps)
        t = lo + float(u[3]) * (hi - lo)
        sigma = float(sigma_at(t, self.sigma_min, self.sigma_max))
        noise = torch.randn(latents.shape, generator=g).to(latents.device)
        ids = camera_ids(elev, azim, cfg.cond_aug)
        with torch.no_grad():
            den = denoise(self.models, latents.detach() + sigma * noise, sigma, self.cond_latent, self.embedding, ids,
                          cfg.cfg_scale)
        return sds_loss(latents, den.to(latents.device), mask, w)

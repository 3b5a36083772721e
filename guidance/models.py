"""Loading SV3D (diffusers format) from a hub id or a local folder, and encoding its conditioning.

The folder (or hub repository) holds the usual diffusers layout: ``unet/`` (an SV3D_p UNet: SVD's
architecture with ``projection_class_embeddings_input_dim = 1280``), ``vae/`` (``AutoencoderKL``, as the
published SV3D_p conversion has it, or SVD's ``AutoencoderKLTemporalDecoder``), ``image_encoder/``
(``CLIPVisionModelWithProjection``), ``feature_extractor/`` (``CLIPImageProcessor``) and ``scheduler/``
(``EulerDiscreteScheduler``). Nothing is downloaded unless a hub id is given and the files are not in the
local cache.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from recon.errors import OrbitMeshError

log = logging.getLogger(__name__)

WEIGHTS_HELP = (
    "SV3D's weights are not bundled and never downloaded by default. Get SV3D_p from "
    "https://huggingface.co/stabilityai/sv3d (accept the Stability AI Non-Commercial Community Licence there: "
    "research and non-commercial use only), convert it to diffusers format (folders unet/, vae/, image_encoder/, "
    "feature_extractor/, scheduler/; published conversions of SV3D_p load as they are), put it in a folder and "
    "pass it with --set guidance.model=/path/to/sv3d (or a hub id of such a conversion)."
)


class ModelNotFoundError(OrbitMeshError):
    """The configured diffusion model cannot be found or loaded."""


@dataclass
class GuidanceConfig:
    """The diffusion model behind SDS and generation (guidance)."""

    model: str = ""
    """SV3D_p in diffusers format: a local folder or a hub id; empty = no guidance (SDS off)."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Weights' dtype: 'auto' = float16 on CUDA, float32 on the CPU."""
    cpu_offload: bool = False
    """Keep sub-models on the CPU and move each to the GPU only while it runs (needs accelerate)."""
    attention_slicing: bool = False
    """Compute attention in slices: less memory, a little slower."""
    sds_weight: float = 0.1
    """Weight of the SDS loss at full strength (SV3D recipe ~0.1)."""
    sds_ramp_steps: int = 200
    """SDS is ramped in linearly over the last this-many refinement steps."""
    cfg_scale: float = 3.0
    """Classifier-free guidance scale of SDS."""
    t_start: tuple[float, float] = (0.7, 0.9)
    """Range of the noise level t (fraction of the log-sigma range) when SDS starts."""
    t_end: tuple[float, float] = (0.3, 0.8)
    """Range of t at the last step (annealed linearly from t_start)."""
    sds_views: int = 21
    """Views per SDS step (SV3D denoises 21 frames jointly)."""
    sds_resolution: int = 576
    """Side of the rendered views fed to the VAE (SV3D: 576; latents are 8x smaller)."""
    sds_elevation_range: tuple[float, float] = (-5.0, 30.0)
    """Mean elevation of the random dynamic orbit of each SDS step is drawn from this range (degrees)."""
    cond_aug: float = 1e-5
    """Noise added to the conditioning image's latent (SV3D: 1e-5)."""


@dataclass
class SV3DModels:
    """The loaded sub-models and where they run."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    image_encoder: torch.nn.Module
    feature_extractor: object
    scheduler: object
    device: torch.device
    dtype: torch.dtype

    @property
    def latent_scale(self) -> int:
        """Pixels per latent cell (8 for SV3D)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def image_embedding(self, image: Tensor) -> Tensor:
        """[B, 1, D] CLIP image embedding of [B, H, W, 3] images in [0, 1] (as SVD: 224², CLIP-normalised)."""
        crop = getattr(self.feature_extractor, "crop_size", None)
        size = int(getattr(crop, "height", None) or (crop or {}).get("height", 224)) if crop is not None else 224
        x = torch.nn.functional.interpolate(image.permute(0, 3, 1, 2).float(), size=(size, size), mode="bicubic",
                                            antialias=True, align_corners=False).clamp(0, 1)
        mean = torch.tensor(self.feature_extractor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.feature_extractor.image_std).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.device, self.dtype)
        return self.image_encoder(x).image_embeds.unsqueeze(1)

    def encode(self, images: Tensor, scaled: bool = True) -> Tensor:
        """[B, C, h, w] latents (the distribution's mode) of [B, H, W, 3] images in [0, 1], differentiable.
        ``scaled``: times the VAE's scaling factor (the diffusion space); the conditioning image's latent
        is used unscaled (as SVD and SV3D do)."""
        x = (images.permute(0, 3, 1, 2) * 2 - 1).to(self.device, self.dtype)
        z = self.vae.encode(x).latent_dist.mode()
        return z * self.vae.config.scaling_factor if scaled else z

    @torch.no_grad()
    def condition(self, image: Tensor, size: int, cond_aug: float, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor]:
        """SV3D's conditioning on one input image [H, W, 3] in [0, 1]: its CLIP embedding [1, 1, D] and the
        unscaled VAE latent [C, h, w] of the image resized to ``size``² with ``cond_aug`` noise added (as
        SVD and SV3D encode their conditioning frame)."""
        resized = torch.nn.functional.interpolate(image.permute(2, 0, 1)[None].float(), size=(size, size),
                                                  mode="bilinear", antialias=True, align_corners=False)
        resized = resized.permute(0, 2, 3, 1).clamp(0, 1)
        noisy = resized + cond_aug * torch.randn(resized.shape, generator=generator)
        return self.image_embedding(image[None].float()), self.encode(noisy, scaled=False)[0]

    @torch.no_grad()
    def decode(self, latents: Tensor, chunk: int = 14) -> Tensor:
        """[F, H, W, 3] images in [0, 1] from [F, C, h, w] scaled latents (temporal decoder, in chunks)."""
        z = latents.to(self.device, self.dtype) / self.vae.config.scaling_factor
        temporal = "num_frames" in inspect.signature(self.vae.decode).parameters
        out = [self.vae.decode(z[i:i + chunk], **({"num_frames": len(z[i:i + chunk])} if temporal else {})).sample
               for i in range(0, len(z), chunk)]
        return ((torch.cat(out).float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def load_sv3d(cfg: GuidanceConfig, device: str | torch.device = "cpu") -> SV3DModels:
    """Load SV3D_p from ``cfg.model`` (local folder or hub id) with ``from_pretrained``.

    Raises:
        ModelNotFoundError: no model configured, or the folder/hub id holds no loadable SV3D; the message
            says where to get the weights, where to put them, and their licence.
    """
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from guidance.unet import SV3DUNet

    if not cfg.model:
        raise ModelNotFoundError(f"no diffusion model configured (guidance.model is empty). {WEIGHTS_HELP}")
    device = torch.device(device)
    dtype = resolve_dtype(cfg.dtype, device)
    source = cfg.model
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "unet").is_dir():
            raise ModelNotFoundError(f"{local}: not an SV3D folder in diffusers format (no unet/). {WEIGHTS_HELP}")
        source = str(local)
    try:
        unet = SV3DUNet.from_pretrained(source, subfolder="unet", torch_dtype=dtype)
        vae_class = AutoencoderKLTemporalDecoder if _vae_class_name(source) == "AutoencoderKLTemporalDecoder" \
            else AutoencoderKL
        vae = vae_class.from_pretrained(source, subfolder="vae", torch_dtype=dtype)
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(source, subfolder="image_encoder",
                                                                      torch_dtype=dtype)
        feature_extractor = CLIPImageProcessor.from_pretrained(source, subfolder="feature_extractor")
        scheduler = EulerDiscreteScheduler.from_pretrained(source, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelNotFoundError(f"{source}: cannot load SV3D ({first}). {WEIGHTS_HELP}") from None
    expected = unet.config.projection_class_embeddings_input_dim - unet.config.addition_time_embed_dim
    if expected <= 0 or expected % 2:
        raise ModelNotFoundError(f"{source}: the UNet is not SV3D_p's (its added-time embedding takes "
                                 f"{unet.config.projection_class_embeddings_input_dim} inputs). {WEIGHTS_HELP}")
    models = [unet, vae, image_encoder]
    for m in models:
        m.eval().requires_grad_(False)
    if cfg.attention_slicing and hasattr(unet, "set_attention_slice"):
        unet.set_attention_slice("auto")
    if cfg.cpu_offload and device.type == "cuda":
        from accelerate import cpu_offload

        for m in models:
            cpu_offload(m, execution_device=device)
    else:
        for m in models:
            m.to(device)
    log.info("loaded SV3D from %s (%s, %s)", source, device, str(dtype).replace("torch.", ""))
    return SV3DModels(unet, vae, image_encoder, feature_extractor, scheduler, device, dtype)


def _vae_class_name(source: str) -> str:
    """The ``_class_name`` in ``vae/config.json`` of a local folder or (cached/downloaded) hub repository."""
    local = Path(source) / "vae" / "config.json"
    if not local.is_file():
        from huggingface_hub import hf_hub_download

        local = Path(hf_hub_download(source, "vae/config.json"))
    return str(json.loads(local.read_text()).get("_class_name", "AutoencoderKL"))


def camera_ids(elevations_deg: Tensor, azimuths_deg: Tensor, cond_aug: float) -> Tensor:
    """[F, 3] SV3D_p's per-frame conditioning: (cond_aug, polar = 90° - elevation, azimuth), radians.

    Azimuths are ours (counter-clockwise seen from above, 0 = the input view, CONVENTIONS.md), which is
    how SV3D's sampling script numbers its frames relative to the input view."""
    polar = torch.deg2rad(90.0 - elevations_deg.double())
    azim = torch.deg2rad(azimuths_deg.double() % 360.0)
    return torch.stack([torch.full_like(polar, cond_aug), polar, azim], dim=-1).float()

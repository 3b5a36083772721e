"""Spherical-Gaussian lighting for Lambertian surfaces (SV3D recipe: 24 SGs, grey amplitudes).

A lobe is ``G(w) = a exp(lambda (mu . w - 1))``. The irradiance a surface with normal n receives from
it, ``E(n) = integral G(w) max(0, n . w) dw``, is evaluated in closed form with S. Hill's fitted
approximation (2016): the lobe's integral times a smooth function of ``mu . n``. We measured it against
numerical quadrature (tests): within 2% of the peak for sharpness >= 2, where the common
cosine-as-an-SG product formula is off by 6-12%. Irradiance is linear in the amplitudes.

Light is white (grey amplitudes); the lobes' axes (a Fibonacci sphere) and sharpness are fixed and
only the amplitudes fitted, unless ``learn_lobes`` fits them too. Shading happens in linear RGB:
``srgb(linear(albedo) * E(n) / E_max)``, where ``E_max`` is the largest irradiance over all normals. That
normalisation removes the albedo/light scale ambiguity: the albedo is the colour a surface shows under the
brightest light it receives, so unlit inputs give E = 1 everywhere and the albedo equals the image colour.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

MIN_SHARPNESS = 2.0
"""Sharpness below which the fitted irradiance formula loses accuracy (> 2% of the peak)."""


def fibonacci_sphere(n: int) -> Tensor:
    """[n, 3] unit vectors spread evenly over the sphere (golden-angle spiral)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * i / n
    r = torch.sqrt((1 - y * y).clamp(min=0))
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([r * torch.cos(phi), y, r * torch.sin(phi)], dim=-1).float()


def srgb_to_linear(x: Tensor) -> Tensor:
    """sRGB [0, 1] -> linear [0, 1] (IEC 61966-2-1)."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).clamp(min=1e-8) ** 2.4)


LUMA = (0.2126, 0.7152, 0.0722)
"""Rec. 709 weights of linear RGB in luminance."""


def linear_luminance(srgb: Tensor) -> Tensor:
    """[..., 3] sRGB colours -> [...] linear luminance (Rec. 709 weights of linear RGB)."""
    return (srgb_to_linear(srgb) * srgb.new_tensor(LUMA)).sum(-1)


def linear_to_srgb(x: Tensor) -> Tensor:
    """Linear [0, 1] -> sRGB [0, 1]."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=1e-8) ** (1 / 2.4) - 0.055)


def shade_linear(albedo: Tensor, factor: Tensor) -> Tensor:
    """sRGB ``albedo`` [..., 3] times a light ``factor`` [...], the product taken in linear RGB."""
    return linear_to_srgb(srgb_to_linear(albedo) * factor[..., None])


def sg_irradiance_basis(normals: Tensor, axes: Tensor, sharpness: Tensor) -> Tensor:
    """Irradiance from each unit-amplitude lobe at each normal.

    Args:
        normals: [..., 3] unit normals; axes: [K, 3] unit lobe axes; sharpness: [K] lobe sharpness (>= 2).
    Returns:
        [..., K] ~ ``integral exp(lambda_k (mu_k . w - 1)) max(0, n . w) dw``: the lobe's integral
        ``2 pi / lambda (1 - e^{-2 lambda})`` times a fitted smooth clamped-cosine response of ``mu . n``
        (within 2% of the peak of numerical quadrature for sharpness >= 2; tests/test_shading.py).
    """
    cos = normals @ axes.t()
    eml = torch.exp(-sharpness)
    em2l = eml * eml
    scale = 1 + 2 * em2l - 1 / sharpness
    bias = (eml - em2l) / sharpness - em2l
    x = torch.sqrt((1 - scale).clamp(min=1e-12))
    c0 = 0.36
    c1 = 1 / (4 * c0)
    x0, x1 = c0 * cos, c1 * x
    # Near the terminator (|mu.n| small) a quadratic blends the lit and unlit sides smoothly.
    y = torch.where(x0.abs() <= x1, (x0 + x1) ** 2 / x, cos.clamp(min=0))
    integral = 2 * math.pi / sharpness * (1 - em2l)
    return (scale * y + bias) * integral


class SGLight(nn.Module):
    """White lighting from ``count`` spherical Gaussians (grey amplitudes).

    By default the lobes' axes (a Fibonacci sphere) and sharpness are fixed and only the amplitudes are
    fitted. With ``learn_lobes`` each lobe's axis and sharpness (in [2, ``max_sharpness``]) are fitted too:
    a lobe can then turn towards a directional light and sharpen, which fixed lobes cannot (a white
    directional + ambient light: log-irradiance error 0.047 rms with fixed lobes at sharpness 12, 0.014
    with learnt ones up to 64, over all normals).

    ``irradiance(n)`` is relative: divided by its maximum over a dense set of normals, so it lies in (0, 1]
    and equals 1 everywhere for uniform light.
    """

    def __init__(self, count: int = 24, sharpness: float = 4.0, probe_normals: int = 512, learn_lobes: bool = False,
                 max_sharpness: float = 64.0):
        super().__init__()
        if sharpness < MIN_SHARPNESS:
            raise ValueError(f"SG sharpness must be >= {MIN_SHARPNESS} (the irradiance fit is inaccurate below)")
        if learn_lobes and max_sharpness < sharpness:
            raise ValueError(f"SG max_sharpness ({max_sharpness}) must be >= the initial sharpness ({sharpness})")
        self.learn_lobes = learn_lobes
        self.max_sharpness = max_sharpness
        self.register_buffer("axes", fibonacci_sphere(count))
        self.register_buffer("sharpness", torch.full((count,), float(sharpness)))
        self.register_buffer("probes", fibonacci_sphere(probe_normals))
        # Amplitudes through softplus keep the light non-negative; equal logits = uniform light.
        self.amplitude_logits = nn.Parameter(torch.zeros(count))
        if learn_lobes:
            # Offsets from the initial lobes: zero is the fixed light, and old checkpoints load unchanged.
            self.axis_offsets = nn.Parameter(torch.zeros(count, 3))
            self.log_sharpness_offsets = nn.Parameter(torch.zeros(count))

    @property
    def amplitudes(self) -> Tensor:
        """[K] non-negative lobe amplitudes."""
        return torch.nn.functional.softplus(self.amplitude_logits)

    def lobes(self) -> tuple[Tensor, Tensor]:
        """The lobes' unit axes [K, 3] and sharpness [K] (fitted ones when ``learn_lobes``)."""
        if not self.learn_lobes:
            return self.axes, self.sharpness
        axes = torch.nn.functional.normalize(self.axes + self.axis_offsets, dim=-1)
        sharpness = (self.sharpness * self.log_sharpness_offsets.exp()).clamp(MIN_SHARPNESS, self.max_sharpness)
        return axes, sharpness

    def raw_irradiance(self, normals: Tensor) -> Tensor:
        """[...] irradiance at unit ``normals`` [..., 3] (unnormalised)."""
        axes, sharpness = self.lobes()
        return sg_irradiance_basis(normals, axes, sharpness) @ self.amplitudes

    def irradiance(self, normals: Tensor) -> Tensor:
        """[...] irradiance at unit ``normals`` [..., 3] relative to the brightest normal."""
        peak = self.raw_irradiance(self.probes).max()
        return self.raw_irradiance(normals) / peak

    def shade(self, albedo: Tensor, normals: Tensor, irradiance: Tensor | None = None) -> Tensor:
        """[..., 3] sRGB colour of Lambertian ``albedo`` [..., 3] (sRGB) with ``normals`` [..., 3]
        (``irradiance`` [...]: ``self.irradiance(normals)`` when the caller already has it)."""
        irr = self.irradiance(normals) if irradiance is None else irradiance
        return shade_linear(albedo, irr)

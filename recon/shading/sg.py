"""Spherical-Gaussian lighting for Lambertian surfaces (SV3D recipe: 24 SGs, grey amplitudes).

A lobe is ``G(w) = a exp(lambda (mu . w - 1))``. The irradiance a surface with normal n receives from
it, ``E(n) = integral G(w) max(0, n . w) dw``, is evaluated in closed form with S. Hill's fitted
approximation (2016): the lobe's integral times a smooth function of ``mu . n``. We measured it against
numerical quadrature (tests): within 2% of the peak for sharpness >= 2, where the common
cosine-as-an-SG product formula is off by 6-12%. Irradiance is linear in the amplitudes.

Light is white (grey amplitudes); the lobes' axes (a Fibonacci sphere) and sharpness are fixed and
only the amplitudes fitted, unless ``learn_lobes`` fits them too. Shading happens in linear RGB:
``srgb(linear(albedo) * E(n) / E_ref)``. The reference ``E_ref`` removes the albedo/light scale ambiguity;
either way a uniform light gives E / E_ref = 1 everywhere, so the albedo of an unlit input is its colour:

- ``'peak'``: the largest irradiance over all normals. The albedo is the colour a surface shows under the
  brightest light it receives. Fragile: light from directions the orbit never sees (from below) is
  unconstrained, and where it grows it dims the whole albedo (an unlit torus: albedo 0.81x in linear).
- ``'mean'``: the mean irradiance over a weighted set of normals, in the refinement the normals the orbit
  sees (``set_reference_normals``). Light from unseen directions barely moves it.
"""

from __future__ import annotations

import math
from typing import Literal

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

    ``irradiance(n)`` is relative, and equals 1 everywhere for uniform light. ``reference='peak'`` divides by
    its maximum over a dense set of probe normals (then it lies in (0, 1]); ``'mean'`` by its mean over the
    probes weighted by ``probe_weights`` (uniform until ``set_reference_normals``; saved with the light).
    """

    def __init__(self, count: int = 24, sharpness: float = 4.0, probe_normals: int = 512, learn_lobes: bool = False,
                 max_sharpness: float = 64.0, reference: Literal["peak", "mean"] = "peak"):
        super().__init__()
        if reference not in ("peak", "mean"):
            raise ValueError(f"SG light reference must be 'peak' or 'mean', got {reference!r}")
        if sharpness < MIN_SHARPNESS:
            raise ValueError(f"SG sharpness must be >= {MIN_SHARPNESS} (the irradiance fit is inaccurate below)")
        if learn_lobes and max_sharpness < sharpness:
            raise ValueError(f"SG max_sharpness ({max_sharpness}) must be >= the initial sharpness ({sharpness})")
        self.learn_lobes = learn_lobes
        self.max_sharpness = max_sharpness
        self.register_buffer("axes", fibonacci_sphere(count))
        self.register_buffer("sharpness", torch.full((count,), float(sharpness)))
        self.reference = reference
        self.register_buffer("probes", fibonacci_sphere(probe_normals))
        # Persistent only where used, so lights saved before 'mean' existed ('peak') load unchanged.
        self.register_buffer("probe_weights", torch.full((probe_normals,), 1.0 / probe_normals),
                             persistent=reference == "mean")
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

    @torch.no_grad()
    def set_reference_normals(self, normals: Tensor, weights: Tensor | None = None) -> None:
        """Weight each probe by the (``weights``-weighted) count of unit ``normals`` [P, 3] nearest to it:
        the ``'mean'`` reference is then the mean irradiance over those normals (to the probes' ~9 degree
        spacing)."""
        if normals.shape[0] == 0:
            raise ValueError("set_reference_normals needs at least one normal")
        w = torch.ones(normals.shape[0]) if weights is None else weights
        nearest = torch.cat([(chunk @ self.probes.t()).argmax(-1) for chunk in normals.to(self.probes).split(65536)])
        hist = torch.zeros_like(self.probe_weights).index_add_(0, nearest, w.to(self.probe_weights))
        if not float(hist.sum()) > 0:
            raise ValueError("set_reference_normals: the weights sum to zero")
        self.probe_weights.copy_(hist / hist.sum())

    def reference_irradiance(self) -> Tensor:
        """Scalar the raw irradiance is divided by: its peak or weighted mean over the probes."""
        probe = self.raw_irradiance(self.probes)
        return probe.max() if self.reference == "peak" else probe @ self.probe_weights

    def irradiance(self, normals: Tensor) -> Tensor:
        """[...] irradiance at unit ``normals`` [..., 3] relative to the reference (peak or observed mean)."""
        return self.raw_irradiance(normals) / self.reference_irradiance()

    def shade(self, albedo: Tensor, normals: Tensor, irradiance: Tensor | None = None) -> Tensor:
        """[..., 3] sRGB colour of Lambertian ``albedo`` [..., 3] (sRGB) with ``normals`` [..., 3]
        (``irradiance`` [...]: ``self.irradiance(normals)`` when the caller already has it)."""
        irr = self.irradiance(normals) if irradiance is None else irradiance
        return shade_linear(albedo, irr)

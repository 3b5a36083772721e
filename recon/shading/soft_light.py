"""The known test light of ``synth --lit`` and ``render-orbit --lit``: white, directional plus ambient.

Shading multiplies radiance, so by default it is applied in linear RGB, as a physically based renderer
does: ``srgb(linear(albedo) * s)`` with ``s = ambient + (1 - ambient) max(0, n . l)``. ``space='srgb'``
multiplies the sRGB colour instead (``albedo * s``), which no physical light produces: its shadows are
~``s^2.2`` in linear terms, a harder case kept for stress tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.shading.sg import shade_linear


@dataclass
class SoftLight:
    """White Lambertian light: ``ambient + (1 - ambient) * max(0, n.l)``, applied in ``space``."""

    direction: tuple[float, float, float] = (0.4, 0.8, 0.45)
    """Direction towards the light, world space (normalised on use)."""
    ambient: float = 0.35
    """Share of light arriving from everywhere."""
    space: str = "linear"
    """Where the shading multiplies the colour: 'linear' (physical) or 'srgb' (a stress test)."""

    def __post_init__(self) -> None:
        if self.space not in ("linear", "srgb"):
            raise ValueError(f"SoftLight.space must be 'linear' or 'srgb', not {self.space!r}")

    def factor(self, normals: Tensor) -> Tensor:
        """[..., 3] unit normals -> [...] shading factor in [ambient, 1]."""
        l_dir = torch.nn.functional.normalize(torch.tensor(self.direction, dtype=normals.dtype,
                                                           device=normals.device), dim=0)
        return self.ambient + (1 - self.ambient) * (normals @ l_dir).clamp(min=0)

    def shade(self, albedo: Tensor, normals: Tensor) -> Tensor:
        """sRGB albedo [..., 3] lit at unit ``normals`` [..., 3] -> sRGB colour [..., 3]."""
        s = self.factor(normals)
        return albedo * s[..., None] if self.space == "srgb" else shade_linear(albedo, s)

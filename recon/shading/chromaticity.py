"""Groups of pixels that likely share an albedo, by chromaticity (a Retinex-style cue).

A grey (white) light scales a surface's linear RGB without changing its chromaticity ``rgb / (r+g+b)``,
so pixels of one chromaticity differ in brightness by shading alone, while a change of chromaticity is a
change of material. The illumination loss compares the light's shape with the image luminance within
each group (``recon.refine.train.illumination_loss``), so a texture of another colour (a duck's orange
beak, a checker's red squares) no longer bends the fitted light. A texture that differs in brightness
only (a grey checker) stays in one group: that case is no better than a single group, and no worse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.shading.sg import linear_luminance, srgb_to_linear


def chromaticity(srgb: Tensor) -> Tensor:
    """[..., 3] sRGB colours in [0, 1] -> [..., 2] linear chromaticity (r, g) / (r + g + b); black -> (1/3, 1/3)."""
    lin = srgb_to_linear(srgb)
    total = lin.sum(-1, keepdim=True)
    chrom = lin[..., :2] / total.clamp(min=1e-6)
    return torch.where(total > 1e-6, chrom, torch.full_like(chrom, 1 / 3))


def kmeans(points: Tensor, count: int, gen: torch.Generator, iterations: int = 30) -> Tensor:
    """[N, D] points -> [K, D] centres (K = min(count, N)), k-means++ seeding from ``gen``, Lloyd steps."""
    count = min(count, points.shape[0])
    centres = points[torch.randint(0, points.shape[0], (1,), generator=gen)]
    for _ in range(count - 1):
        d2 = torch.cdist(points, centres).min(1).values ** 2
        if float(d2.sum()) <= 0:
            # Fewer distinct points than centres: the rest would duplicate one.
            break
        centres = torch.cat([centres, points[torch.multinomial(d2 / d2.sum(), 1, generator=gen)]])
    for _ in range(iterations):
        nearest = torch.cdist(points, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, nearest, points)
        counts = torch.bincount(nearest, minlength=centres.shape[0]).to(points.dtype)[:, None]
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        if torch.equal(moved, centres):
            break
        centres = moved
    return centres


@dataclass
class ChromaticityGroups:
    """Albedo groups: k-means centres in chromaticity, clusters closer than the merge distance joined.
    Pixels too dark for their chromaticity to mean anything (an eye, a deep shadow) are in none (-1)."""

    centres: Tensor
    """[K, 2] cluster centres, linear (r, g) chromaticity."""
    group_of_centre: Tensor
    """[K] long: the group each centre belongs to (merged clusters share one), in 0..G-1."""
    dark_fraction: float
    """Pixels with linear luminance below this fraction of the brightest belong to no group."""
    brightest: float
    """Linear luminance of the brightest pixel the groups were fitted on."""

    @property
    def count(self) -> int:
        """Number of groups."""
        return int(self.group_of_centre.max()) + 1 if self.centres.shape[0] else 0

    @classmethod
    def fit(cls, srgb: Tensor, count: int, merge: float, seed: int = 0, dark_fraction: float = 0.03,
            sample: int = 20000) -> ChromaticityGroups:
        """Fit on [N, 3] sRGB colours of object pixels; ``count`` clusters (1: one group), merged when
        their centres are nearer than ``merge`` in chromaticity; deterministic in ``seed``."""
        if count < 1:
            raise ValueError(f"chromaticity groups: count must be >= 1, not {count}")
        colours = srgb.reshape(-1, 3).float()
        lum = linear_luminance(colours)
        brightest = float(lum.max()) if lum.numel() else 0.0
        lit = colours[lum >= dark_fraction * brightest] if lum.numel() else colours
        gen = torch.Generator().manual_seed(seed)
        if lit.shape[0] == 0:
            return cls(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), dark_fraction, brightest)
        if lit.shape[0] > sample:
            lit = lit[torch.randperm(lit.shape[0], generator=gen)[:sample]]
        centres = kmeans(chromaticity(lit), count, gen)
        # Union-find over centre pairs closer than ``merge``: one material split by k-means is rejoined.
        parent = list(range(centres.shape[0]))

        def root(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        close = (torch.cdist(centres, centres) < merge).nonzero().tolist()
        for i, j in close:
            parent[root(j)] = root(i)
        roots = torch.tensor([root(i) for i in range(centres.shape[0])])
        group_of_centre = torch.unique(roots, return_inverse=True)[1]
        return cls(centres, group_of_centre, dark_fraction, brightest)

    def labels(self, srgb: Tensor) -> Tensor:
        """[..., 3] sRGB colours -> [...] long group labels in 0..count-1, -1 for dark pixels."""
        shape = srgb.shape[:-1]
        colours = srgb.reshape(-1, 3).float()
        if self.centres.shape[0] == 0:
            return torch.full(shape, -1, dtype=torch.long)
        lum = linear_luminance(colours)
        out = torch.empty(colours.shape[0], dtype=torch.long)
        # Chunked: an orbit at full resolution is a few million pixels.
        for lo in range(0, colours.shape[0], 1 << 18):
            part = colours[lo:lo + (1 << 18)]
            out[lo:lo + part.shape[0]] = self.group_of_centre[torch.cdist(chromaticity(part), self.centres).argmin(1)]
        out[lum < self.dark_fraction * self.brightest] = -1
        return out.reshape(shape)

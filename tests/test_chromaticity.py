"""Chromaticity groups: one material, however shaded, is one group; another colour is another."""

import torch

from recon.shading.chromaticity import ChromaticityGroups, chromaticity, kmeans
from recon.shading.sg import linear_to_srgb, srgb_to_linear

YELLOW = torch.tensor([1.0, 0.85, 0.05])
ORANGE = torch.tensor([1.0, 0.45, 0.05])
BLUE = torch.tensor([0.2, 0.35, 0.9])


def _shaded(srgb: torch.Tensor, n: int, gen: torch.Generator, low: float = 0.3) -> torch.Tensor:
    """[n, 3] sRGB colours of one albedo under white light from ``low`` to 1 (applied in linear RGB)."""
    shade = low + (1 - low) * torch.rand(n, 1, generator=gen)
    return linear_to_srgb(srgb_to_linear(srgb) * shade)


def test_chromaticity_ignores_white_shading():
    shade = torch.tensor([[1.0], [0.5], [0.1]])
    c = chromaticity(linear_to_srgb(srgb_to_linear(ORANGE) * shade))
    assert torch.allclose(c, c[:1].expand(3, 2), atol=1e-4)
    assert torch.allclose(chromaticity(torch.zeros(1, 3)), torch.full((1, 2), 1 / 3))


def test_kmeans_finds_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(300, 2, generator=gen) * 0.01 + torch.tensor(c) for c in
                        ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0])])
    centres = kmeans(points, 3, gen)
    want = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert torch.cdist(want, centres).min(1).values.max() < 0.01
    # Fewer distinct points than clusters: no duplicate centres.
    assert kmeans(torch.ones(10, 2), 4, gen).shape[0] == 1


def test_shaded_materials_get_one_group_each_and_dark_pixels_none():
    gen = torch.Generator().manual_seed(0)
    colours = torch.cat([_shaded(YELLOW, 3000, gen), _shaded(ORANGE, 1000, gen), _shaded(BLUE, 500, gen),
                         torch.full((100, 3), 0.02)])
    groups = ChromaticityGroups.fit(colours, count=8, merge=0.03, seed=0)
    labels = groups.labels(colours)
    assert groups.count == 3, groups.count
    parts = labels[:3000], labels[3000:4000], labels[4000:4500]
    for part in parts:
        assert (part == part[0]).all() and part[0] >= 0
    assert len({int(p[0]) for p in parts}) == 3
    assert (labels[4500:] == -1).all()
    # Deterministic in the seed; labels keep the input's shape.
    again = ChromaticityGroups.fit(colours, count=8, merge=0.03, seed=0)
    assert torch.equal(again.labels(colours.reshape(46, 100, 3)).reshape(-1), labels)


def test_a_grey_checker_is_one_group():
    """Materials that differ in brightness only cannot be told from shading by chromaticity."""
    gen = torch.Generator().manual_seed(1)
    colours = torch.cat([_shaded(torch.tensor([0.9, 0.9, 0.9]), 1000, gen),
                         _shaded(torch.tensor([0.4, 0.4, 0.4]), 1000, gen)])
    groups = ChromaticityGroups.fit(colours, count=8, merge=0.03, seed=0)
    assert groups.count == 1
    assert (groups.labels(colours) == 0).all()

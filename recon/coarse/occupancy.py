"""Empty-space skipping: an occupancy grid initialised from the masks (visual hull), refreshed from the
field's density during training.

The grid covers [-bound, bound]^3 with ``res`` cells per side, indexed [x, y, z]. A cell is kept by the
hull when its centre projects inside the (dilated) mask of every view that sees it, except for at most
``tolerance_views`` views, so one bad mask or a jittered pose does not carve the object away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from recon.data.cameras import pixel_index
from recon.types import Orbit


@dataclass
class Occupancy:
    """Boolean occupancy over [-bound, bound]^3.

    Attributes:
        grid: [res, res, res] bool, indexed [x, y, z].
        bound: half extent of the cube.
    """

    grid: Tensor
    bound: float

    @property
    def res(self) -> int:
        return self.grid.shape[0]

    @property
    def cell(self) -> float:
        return 2 * self.bound / self.res

    def centers(self) -> Tensor:
        """[res^3, 3] cell centres, x slowest."""
        c = (torch.arange(self.res, dtype=torch.float32) + 0.5) * self.cell - self.bound
        gx, gy, gz = torch.meshgrid(c, c, c, indexing="ij")
        return torch.stack([gx, gy, gz], -1).reshape(-1, 3)

    def lookup(self, x: Tensor) -> Tensor:
        """[..., 3] points -> [...] bool: inside an occupied cell (False outside the cube)."""
        idx = torch.floor((x + self.bound) / self.cell).long()
        inside = ((idx >= 0) & (idx < self.res)).all(-1)
        idx = idx.clamp(0, self.res - 1)
        return inside & self.grid[idx[..., 0], idx[..., 1], idx[..., 2]]

    def box(self) -> tuple[Tensor, Tensor]:
        """Bounding box (lo, hi) of the occupied cells, one cell of margin; the whole cube if empty."""
        nz = self.grid.nonzero()
        if nz.numel() == 0:
            return torch.full((3,), -self.bound), torch.full((3,), self.bound)
        lo = (nz.min(0).values.float() - 1).clamp(min=0) * self.cell - self.bound
        hi = (nz.max(0).values.float() + 2).clamp(max=self.res) * self.cell - self.bound
        return lo, hi

    def dilated(self, iterations: int = 1) -> Occupancy:
        g = ndimage.binary_dilation(self.grid.numpy(), iterations=iterations)
        return Occupancy(torch.from_numpy(g), self.bound)


def visual_hull(orbit: Orbit, res: int = 64, bound: float = 0.6, dilation_frac: float = 0.01,
                tolerance_views: int = 1) -> Occupancy:
    """Carve cells whose centre projects outside the dilated masks.

    Args:
        res: cells per side.
        dilation_frac: mask dilation as a fraction of the image size (plus the projected half-diagonal of
            a cell, so cells straddling the silhouette survive).
        tolerance_views: views allowed to disagree before a cell is carved.
    """
    cams = orbit.cameras.to("cpu")
    masks = orbit.masks.detach().cpu().numpy() > 0.5
    occ = Occupancy(torch.ones(res, res, res, dtype=torch.bool), bound)
    centers = occ.centers()
    xy, depth = cams.project(centers)  # [N, P, 2], [N, P]
    focal = float(cams.K[:, 0, 0].mean())
    cell_px = occ.cell * math.sqrt(3) / 2 * focal / float(depth.clamp(min=1e-3).min())
    radius = int(math.ceil(cell_px + dilation_frac * max(orbit.width, orbit.height)))
    r = np.arange(-radius, radius + 1)
    disk = (r[:, None] ** 2 + r[None] ** 2) <= radius * radius
    outside_votes = torch.zeros(centers.shape[0], dtype=torch.int32)
    for v in range(len(cams)):
        m = torch.from_numpy(ndimage.binary_dilation(masks[v], structure=disk))
        px, seen = pixel_index(xy[v], orbit.width, orbit.height)
        seen &= depth[v] > 0
        in_mask = m[px[:, 1], px[:, 0]]
        outside_votes += (seen & ~in_mask).int()
    keep = outside_votes <= tolerance_views
    return Occupancy(keep.reshape(res, res, res), bound)

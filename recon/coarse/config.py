"""Configuration of the coarse stage (recon.coarse) and of mesh extraction (recon.extract)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from recon.errors import ConfigError


@dataclass
class HashConfig:
    """Multiresolution hash encoding + MLPs (the 'hash' field)."""

    levels: int = 12
    """Resolution levels of the encoding."""
    features: int = 2
    """Features per table entry."""
    log2_size: int = 15
    """log2 of the entries per level (2^14-2^16 suit a CPU; 2^19 a GPU)."""
    base_res: int = 16
    """Coarsest level's grid resolution."""
    max_res: int = 512
    """Finest level's grid resolution."""
    hidden: int = 32
    """Width of the density and colour MLPs."""
    lr: float = 0.01
    """Adam learning rate of the table and MLPs."""


@dataclass
class CoarseConfig:
    """The coarse radiance field fitted to the orbit (SV3D recipe: 600 steps, RGB + mask losses)."""

    field: Literal["grid", "hash"] = "grid"
    """Field type: dense voxel grids (fast on CPU) or an Instant-NGP hash encoding + MLPs."""
    steps: int = 600
    """Optimisation steps."""
    rays_per_step: int = 4096
    """Rays per step, drawn from all views."""
    resolutions: tuple[int, ...] = (32, 64, 128)
    """Grid field: voxel resolution per phase (coarse-to-fine, upsampled between phases)."""
    image_scales: tuple[float, ...] = (0.25, 0.5, 1.0)
    """Image downsampling per phase (coarse-to-fine rays, as the SV3D recipe)."""
    phase_ends: tuple[float, ...] = (0.2, 0.5, 1.0)
    """Fraction of the steps at which each phase ends."""
    bound: float = 0.6
    """Half extent of the reconstruction cube (objects live in [-0.5, 0.5]^3 plus a margin)."""
    samples_per_cell: float = 2.0
    """Ray samples per finest-cell length (the step is cell / this)."""
    lr: float = 0.1
    """Grid field: Adam learning rate of the density and colour grids."""
    mask_weight: float = 0.5
    """Weight of the mask loss (BCE of accumulated opacity against the input mask)."""
    entropy_weight: float = 0.002
    """Weight of the opacity entropy regulariser (pushes opacity to 0 or 1)."""
    tv_weight: float = 0.001
    """Weight of the total-variation prior on the density grid."""
    distortion_weight: float = 0.1
    """Weight of Mip-NeRF 360's distortion loss (weights spread along a ray: fog); 0 turns it off."""
    hull_res: int = 64
    """Resolution of the occupancy grid (visual hull, then refreshed from density)."""
    hull_dilation: float = 0.01
    """Mask dilation for carving, as a fraction of the image size (tolerates pose and mask errors)."""
    hull_tolerance_views: int = 1
    """Views allowed to disagree before a cell is carved."""
    refresh_every: int = 100
    """Steps between occupancy refreshes from the density."""
    checkpoint_every: int = 100
    """Steps between checkpoints (0: only at the end)."""
    hash: HashConfig = dataclasses.field(default_factory=HashConfig)
    """Settings of the 'hash' field."""

    def __post_init__(self) -> None:
        if not self.distortion_weight >= 0:
            raise ConfigError(f"coarse.distortion_weight must be 0 or more, got {self.distortion_weight}")


@dataclass
class ExtractConfig:
    """Marching cubes on the coarse density (recon.extract)."""

    resolution: int = 256
    """Grid points per side of the density volume (evaluated in memory-bounded chunks)."""
    search_resolution: int = 128
    """Volume resolution used while searching the threshold."""
    silhouette_size: int = 128
    """Side of the silhouettes rendered to choose the threshold."""
    depth_size: int = 256
    """Side of the surface-depth maps rendered per input view."""
    depth_opacity: float = 0.25
    """A view's surface depth is where a ray's accumulated opacity reaches this (lower carves less)."""
    robust_rank: int = 1
    """Views whose depth may wrongly say 'empty' before a point is carved (0: any single view carves)."""
    max_offset_cells: float = 4.0
    """Largest shift of the surface (in search-grid cells) tried to match the silhouettes to the masks."""
    min_component_frac: float = 0.02
    """Components with less area than this fraction of the largest are removed (floaters)."""
    centred_object: bool = True
    """The object's box is centred at the origin (SV3D, GSO): the unseen underside may reach minus its top."""

    def __post_init__(self) -> None:
        if not 0 < self.depth_opacity < 1:
            raise ConfigError(f"extract.depth_opacity must lie strictly between 0 and 1, got {self.depth_opacity}")

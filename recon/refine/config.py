"""Configuration of the refinement stage (recon.refine)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from recon.errors import ConfigError


@dataclass
class AlbedoConfig:
    """The albedo field: hash encoding + small MLP, queried at surface points."""

    levels: int = 12
    """Resolution levels of the hash encoding."""
    log2_size: int = 16
    """log2 of the table entries per level."""
    base_res: int = 16
    """Coarsest level's resolution."""
    max_res: int = 1024
    """Finest level's resolution (about the texel density of a 1024² texture)."""
    hidden: int = 32
    """Width of the MLP's hidden layer."""
    lr: float = 0.01
    """Adam learning rate of the encoding and MLP."""


@dataclass
class RefineConfig:
    """DMTet refinement (SV3D recipe: grid 128, 1000 steps, 24 SGs, illumination and smoothness losses)."""

    steps: int = 1000
    """Optimisation steps."""
    grid: int = 128
    """Cells per side of the tetrahedral grid over [-bound, bound]^3."""
    bound: float = 0.6
    """Half extent of the grid (objects live in [-0.5, 0.5]^3 plus a margin)."""
    band_width: int = 1
    """Cells on each side of the surface that take part (the narrow band)."""
    band_every: int = 20
    """Steps between re-derivations of the band as the surface moves."""
    init_smoothing: float = 1.0
    """Gaussian blur (sigma, in cells) of the coarse mesh's SDF before refinement starts (0: none)."""
    offset_grid_steps: int = 150
    """First steps in which the SDF moves only through a coarse offset grid, whole regions at once (0: none)."""
    offset_grid_cells: int = 8
    """Lattice cells per cell of that offset grid (trilinear; must divide ``grid``)."""
    lr_offset_grid: float = 0.02
    """Adam learning rate of the offset grid (in cells)."""
    max_deform: float = 0.45
    """Largest vertex displacement, as a fraction of a cell (tanh-bounded)."""
    floor_margin: float = 1.0
    """Cells the surface may sink below the coarse mesh's lowest point (centred: 0, or down to -top; < 0: none)."""
    floor_follows_top: bool = True
    """Centred objects, after the offset-grid phase: the floor is minus the top even above the coarse bottom."""
    base_fill_cells: float = 2.0
    """Centred objects: a hidden base up to this many cells above the floor is filled down to it (< 1: off)."""
    unit_box: bool = True
    """Centred objects: no surface forms outside [-0.5, 0.5]^3, where CONVENTIONS.md's normalisation puts them."""
    unit_box_tolerance: float = 0.03
    """The unit box is not imposed when the coarse mesh reaches further than this beyond it (another scale)."""
    views_per_step: int = 4
    """Views rendered per step (a random subset; all views when >= their number)."""
    resolutions: tuple[int, ...] = (128, 256, 384)
    """Render resolution per phase (coarse-to-fine; capped at the input size)."""
    phase_ends: tuple[float, ...] = (0.3, 0.7, 1.0)
    """Fraction of the steps at which each resolution phase ends."""
    pixels_per_step: int = 12288
    """Covered pixels whose colour is compared per step (the albedo field is queried there)."""
    warmup_steps: int = 50
    """First steps in which colour gradients reach only the albedo and light, not the geometry."""
    photometric_moves_geometry: bool = True
    """Let colour gradients move the surface through the albedo lookup positions (multi-view stereo cue)."""
    shading_moves_geometry: bool = True
    """Shape from shading: the illumination losses fit the surface's own normals to the input's shading."""
    normal_smoothing: int = 16
    """1-ring averaging passes over the normals the shading sees (when shading does not move geometry)."""
    photometric: Literal["l1", "l2"] = "l1"
    """Photometric loss on the sampled pixels (sRGB)."""
    rgb_weight: float = 1.0
    """Weight of the photometric loss."""
    mask_weight: float = 2.0
    """Weight of the silhouette loss (squared error of antialiased coverage against the input mask)."""
    illumination_weight: float = 0.1
    """Weight of the illumination (demodulation) loss: shading explains the low-frequency luminance."""
    illumination_loss: Literal["l1", "l2"] = "l2"
    """Illumination loss penalty: l2 (mean per normal) suits balanced textures, l1 (median) minority ones (a beak)."""
    illumination_groups: int = 8
    """Chromaticity clusters (k-means) within which the illumination loss compares light and luminance (1: one)."""
    illumination_group_merge: float = 0.03
    """Clusters whose chromaticity centres are nearer than this are one group (one material split in two)."""
    illumination_pair_weight: float = 0.3
    """Weight of the pairwise (gradient-domain) illumination loss: light log-ratios match luminance ones."""
    illumination_pair_offsets: tuple[float, ...] = (0.03125, 0.0625, 0.125, 0.25)
    """Distances between the pixels of a pair, fractions of the image size (one drawn per pair)."""
    illumination_pair_tau: float = 0.3
    """Scale of the pairwise loss's Cauchy penalty (log luminance): larger residuals, texture edges, barely pull."""
    photometric_moves_light: bool = False
    """Photometric gradients reach the light too (else the illumination loss alone fits it, albedo the rest)."""
    illumination_blur: float = 0.0
    """Blur (sigma, fraction of the image size) of the input luminance the illumination loss matches (0: none)."""
    sdf_weight: float = 0.02
    """Weight of DMTet's SDF sign regulariser on crossed edges (decays linearly to 1% of this)."""
    normal_weight: float = 0.1
    """Weight of normal consistency between faces sharing an edge."""
    laplacian_weight: float = 0.1
    """Weight of uniform Laplacian smoothing (offsets measured in cells)."""
    albedo_smooth_weight: float = 0.05
    """Weight of albedo smoothness (difference to the albedo a small random step away)."""
    albedo_smooth_radius: float = 0.01
    """Standard deviation of that step, world units."""
    grad_smooth_cells: float = 2.0
    """Gaussian blur (sigma, in cells) of the SDF and deformation gradients before each step (0: none)."""
    lr_sdf: float = 0.02
    """Adam learning rate of the SDF (in cells)."""
    lr_deform: float = 0.02
    """Adam learning rate of the deformation (pre-tanh)."""
    geometry_lr_final: float = 0.1
    """Geometry learning rates decay linearly to this fraction of their value by the last step."""
    lr_light: float = 0.2
    """Adam learning rate of the SG amplitudes (pre-softplus); at 0.05 the light stayed too flat in 200 steps."""
    sg_count: int = 24
    """Spherical Gaussians in the light (axes start on a Fibonacci sphere, grey amplitudes)."""
    sg_sharpness: float = 12.0
    """Sharpness of every lobe (>= 2); the initial one when the lobes are fitted."""
    sg_learn_lobes: bool = True
    """Fit each lobe's axis and sharpness too (else only the amplitudes)."""
    sg_max_sharpness: float = 64.0
    """Largest sharpness a fitted lobe may reach."""
    lr_light_lobes: float = 0.02
    """Adam learning rate of the lobes' axis offsets and log-sharpness (when fitted)."""
    light_reference: Literal["observed", "peak"] = "observed"
    """Irradiance relative to its mean over the normals the orbit sees, or to its peak over all normals."""
    sign_cleanup: bool = True
    """Final mesh: lattice vertices on the other side from 4+ of their 6 neighbours join them (spurious handles)."""
    tunnel_close_cells: int = 2
    """Final mesh: tunnels up to about twice this many cells wide are filled where that lowers the genus (0: off)."""
    min_component_frac: float = 0.02
    """Final mesh: components with less area than this fraction of the largest are removed."""
    denoise_iterations: int = 10
    """Final mesh: bilateral face-normal filtering passes, then twice as many vertex passes (0: off)."""
    denoise_sigma: float = 0.35
    """Final mesh: normal-difference scale of that filter (0.35: a 20-degree turn; creases stay sharp)."""
    checkpoint_every: int = 100
    """Steps between checkpoints (0: only at the end)."""
    albedo: AlbedoConfig = dataclasses.field(default_factory=AlbedoConfig)
    """The albedo field."""

    def __post_init__(self) -> None:
        if self.illumination_groups < 1:
            raise ConfigError(f"refine.illumination_groups must be 1 or more, got {self.illumination_groups}")
        if not self.illumination_group_merge >= 0:
            raise ConfigError(f"refine.illumination_group_merge must be 0 or more, got {self.illumination_group_merge}")
        if not self.illumination_pair_weight >= 0:
            raise ConfigError(f"refine.illumination_pair_weight must be 0 or more, got {self.illumination_pair_weight}")
        if not self.illumination_pair_tau > 0:
            raise ConfigError(f"refine.illumination_pair_tau must be positive, got {self.illumination_pair_tau}")
        if not all(0 < o < 1 for o in self.illumination_pair_offsets) or not self.illumination_pair_offsets:
            raise ConfigError("refine.illumination_pair_offsets must be fractions of the image size in (0, 1), got "
                              f"{list(self.illumination_pair_offsets)}")
        if self.offset_grid_steps > 0 and (self.offset_grid_cells < 1 or self.grid % self.offset_grid_cells):
            raise ConfigError(f"refine.offset_grid_cells ({self.offset_grid_cells}) must divide refine.grid "
                              f"({self.grid})")
        if self.denoise_iterations < 0 or not self.denoise_sigma > 0:
            raise ConfigError("refine.denoise_iterations must be 0 or more and refine.denoise_sigma positive, got "
                              f"{self.denoise_iterations} and {self.denoise_sigma}")
        if not self.illumination_blur >= 0:
            raise ConfigError(f"refine.illumination_blur must be 0 or more, got {self.illumination_blur}")
        if not self.unit_box_tolerance >= 0:
            raise ConfigError(f"refine.unit_box_tolerance must be 0 or more, got {self.unit_box_tolerance}")

    @property
    def cell(self) -> float:
        """Edge length of a grid cell, world units (derived: 2 bound / grid)."""
        return 2 * self.bound / self.grid

"""DMTet refinement of the coarse mesh against the orbit (SV3D recipe, made to fit a CPU).

Geometry: an SDF (in cells, inside where > 0) and a tanh-bounded deformation on the lattice of a Kuhn
tetrahedral grid, initialised from the coarse mesh's signed distances; only the narrow band of cells near
the surface is extracted and optimised, re-derived every ``band_every`` steps. Appearance: an albedo
field queried at interpolated surface points and 24 spherical Gaussians of grey light (Lambertian,
shading in linear RGB). Each step renders a random subset of views at the phase's resolution:

- silhouette: antialiased coverage against the input masks (gradients through ``antialias``);
- photometric: L1/L2 of the shaded colour at ``pixels_per_step`` covered pixels (the albedo field is
  queried only there; gradients reach the geometry through the barycentrics and normals);
- illumination (demodulation): the relative irradiance E(n)/mean(E) at those pixels should match the
  relative linear luminance of the input there, so shading goes into the light. The irradiance depends on
  the normal only, so texture averages out over the many pixels sharing a normal (squared by default;
  an L1 penalty treats a minority texture as outliers, see ``illumination_loss``). The luminance is
  blurred by ``illumination_blur`` (none by default: a blur mixes pixels of different normals and
  flattens the light);
- DMTet's SDF sign regulariser, normal consistency, Laplacian smoothing, albedo smoothness;
- any extra losses passed as hooks (the SDS guidance plugs in here).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from recon.data.cameras import Cameras, pixel_index
from recon.errors import ConfigError
from recon.extract import with_floor
from recon.geometry._kernels import (
    band_state_backward_kernel,
    band_state_forward_kernel,
    binomial_filter_kernel,
    binomial_segments_kernel,
)
from recon.geometry.denoise import bilateral_denoise
from recon.geometry.mesh_sdf import mesh_sdf_grid
from recon.geometry.regularizers import (
    laplacian_smoothing,
    normal_consistency,
    sdf_sign_regularizer,
    smooth_vertex_normals,
)
from recon.geometry.tets import (
    KUHN_NEIGHBOURS,
    TetBand,
    border_cap,
    kuhn_euler_characteristic,
    lattice_indices,
    lattice_vertices,
    narrow_band,
)
from recon.log import StepProgress
from recon.ops import cpu_float32, numpy_of, phase_index, take_rows
from recon.refine.config import RefineConfig
from recon.render import antialias, interpolate, rasterize
from recon.render.topology import compute_edge_topology
from recon.render.views import clip_positions, vertex_normals
from recon.shading.albedo import AlbedoField
from recon.shading.chromaticity import ChromaticityGroups
from recon.shading.sg import SGLight, linear_luminance
from recon.types import Mesh, Orbit, RefinedAsset, load_state, save_state

log = logging.getLogger(__name__)


@dataclass
class HookContext:
    """What an extra loss sees at each step.

    Attributes:
        step, steps: the current step (0-based) and the total.
        verts: [V, 3] current mesh vertices (differentiable); faces: [F, 3] int64.
        albedo: the albedo field; light: the SG light.
        orbit: the input orbit (CPU).
        generator: the run's seeded random generator.
    """

    step: int
    steps: int
    verts: Tensor
    faces: Tensor
    albedo: AlbedoField
    light: SGLight
    orbit: Orbit
    generator: torch.Generator


ExtraLoss = Callable[[HookContext], "Tensor | None"]
"""A hook returning a weighted scalar loss to add (or None to skip this step)."""


@dataclass
class _Level:
    """Images at one render resolution: colours, masks, linear luminance (blurred as configured), cameras."""

    images: Tensor  # [N, r, r, 3]
    masks: Tensor  # [N, r, r]
    luminance: Tensor  # [N, r, r]
    groups: Tensor | None  # [N, r, r] long chromaticity group per pixel (-1: none); None: one group
    cameras: Cameras


def _level(orbit: Orbit, size: int, blur: float, groups: ChromaticityGroups | None = None) -> _Level:
    if (size, size) == (orbit.height, orbit.width):
        images, masks = orbit.images, orbit.masks
    else:
        images = torch.nn.functional.interpolate(orbit.images.permute(0, 3, 1, 2), size=(size, size), mode="area")
        images = images.permute(0, 2, 3, 1).contiguous()
        masks = torch.nn.functional.interpolate(orbit.masks[:, None], size=(size, size), mode="area")[:, 0]
    lum = linear_luminance(images).numpy()
    low = lum
    if blur > 0:
        m = masks.numpy()
        sigma = (0, blur * size, blur * size)
        # Blur inside the mask only (normalised convolution), so the background does not leak in.
        low = ndimage.gaussian_filter(lum * m, sigma) / np.maximum(ndimage.gaussian_filter(m, sigma), 1e-4)
    labels = groups.labels(images) if groups is not None else None
    return _Level(images.contiguous(), masks.contiguous(), torch.from_numpy(low.astype(np.float32)), labels,
                  orbit.cameras.scaled(size, size))


class _Geometry(torch.nn.Module):
    """SDF and deformation on the lattice, and the band currently extracted."""

    def __init__(self, sdf_cells: Tensor, cfg: RefineConfig, floor: float = -math.inf, box: float = math.inf):
        """``floor``: no surface below this height; ``box``: none beyond this distance from the origin's planes
        x = 0 and z = 0, nor above this height (the unit box's half-size 0.5; inf: none)."""
        super().__init__()
        self.resolution, self.bound, self.max_deform = cfg.grid, cfg.bound, cfg.max_deform
        self.cell = cfg.cell
        self.register_buffer("lattice", lattice_vertices(cfg.grid, cfg.bound))
        # The most the SDF may read at each lattice vertex (cells; ``with_floor`` cuts it there): the height
        # above the floor, so no surface forms below the floor (as the coarse mesh was cut), and half a cell
        # outside on the lattice's border (``border_cap``), so the surface always closes inside the grid.
        # An object the views crop (wider than SV3D's frame) otherwise reached the border and left the
        # surface open there, and an open surface is rasterized with its back faces: 2.5x the time.
        # ``fixed_cap`` is that border cap and, with a ``box``, the depth inside the box's sides and below its
        # top: an object normalised to the unit box cannot reach beyond it, and the ends of flat faces that no
        # view's silhouette or stereo pins (a box's wedges, which set its bounding box) are cut there.
        fixed_cap = border_cap(cfg.grid)
        self.box = box
        if math.isfinite(box):
            x, y, z = self.lattice.unbind(-1)
            inside = torch.minimum(torch.minimum(box - x.abs(), box - z.abs()), box - y) / self.cell
            fixed_cap = torch.minimum(fixed_cap, inside)
        self.register_buffer("fixed_cap", fixed_cap)
        self.register_buffer("sdf_cap", torch.minimum(self._above(floor), self.fixed_cap))
        self.floor = floor
        self.sdf = torch.nn.Parameter(sdf_cells.clone())
        self.deform = torch.nn.Parameter(torch.zeros(sdf_cells.shape[0], 3))
        # The offset grid (``offset_grid_steps``): while it is on, the SDF is ``sdf`` plus the grid upsampled
        # trilinearly, and only the grid learns; ``end_offset_phase`` bakes it into ``sdf``. It moves whole
        # regions, so that a patch without a cue of its own (a checker square's inside, a blank face) follows
        # its neighbours instead of staying behind as a pit: on the six benchmark objects the surface comes
        # out 0.30-0.40 cell at the median over the phase (the coarse meshes lie 0.5-0.75 cell inside their
        # masks), some regions in, and the refined normals end 0.2-1.2 degrees better (README, "Offset-grid
        # phase"). A uniform shift fitted to the masks instead moved the union's blank box faces out too.
        self.offset_step = cfg.offset_grid_cells
        self.offset_grid: torch.nn.Parameter | None = None
        # What the grid has baked into ``sdf`` so far in its phase (``capped_sdf`` bakes it at every band and
        # checkpoint), so the phase's whole motion can be reported at its end, not only the last band's.
        self._offset_baked: Tensor | None = None
        if cfg.offset_grid_steps > 0:  # (``RefineConfig`` checks that the grid's cells divide ``grid``)
            self.offset_grid = torch.nn.Parameter(torch.zeros((cfg.grid // cfg.offset_grid_cells + 1) ** 3))
            self._offset_baked = torch.zeros_like(self.offset_grid.detach())
        self._offset_rows: tuple[Tensor, Tensor] | None = None
        self.band: TetBand | None = None
        # Lattice layer -> [n, n] hidden_from_views: the depths are the coarse mesh's, so each layer is
        # projected once.
        self._hidden_layers: dict[int, Tensor] = {}
        # smooth_gradients' (band, passes, box low, box high, blur_supports, {channels: blur_segments}) for the
        # current band.
        self._blur_plan: tuple | None = None

    def _above(self, floor: float, rows: Tensor | None = None) -> Tensor:
        """Height in cells above the plane y = ``floor`` of the lattice vertices (or of those in ``rows``)."""
        y = self.lattice[:, 1] if rows is None else self.lattice[rows, 1]
        return (y - floor) / self.cell

    @torch.no_grad()
    def set_floor(self, floor: float) -> None:
        """Move the floor plane to height ``floor`` (world units); the next band sees the new cut."""
        if floor != self.floor:
            torch.minimum(self._above(floor), self.fixed_cap, out=self.sdf_cap)
            self.floor = floor

    @torch.no_grad()
    def fill_hidden_base(self, max_cells: float, cameras: Cameras, masks: Tensor, depths: Tensor) -> int:
        """Fill a hidden base up to ``max_cells`` cells above the floor down to it (``hidden_base_fill``; the
        views' ``masks`` and the ``surface_depths`` of the coarse mesh tell what is hidden, with half a cell
        of tolerance for the coarse surface's error); returns how many lattice vertices' SDF changed."""
        if not math.isfinite(self.floor):
            return 0
        first = math.ceil((self.floor + self.bound) / self.cell - 1e-6)
        depth = math.floor(max_cells)
        n = self.resolution + 1
        if depth < 1 or first < 1 or first + depth >= n:
            return 0
        layers = []
        for j in range(first - 1, first + depth + 1):
            if j not in self._hidden_layers:
                layer = self.lattice.reshape(n, n, n, 3)[:, j].reshape(-1, 3)
                self._hidden_layers[j] = hidden_from_views(layer, cameras, masks, depths, 0.5 * self.cell).reshape(n, n)
            layers.append(self._hidden_layers[j])
        idx = hidden_base_fill(self.capped_sdf(), first, torch.stack(layers, dim=1))
        raise_to = self._above(self.floor, idx)
        lower = self.sdf[idx] < raise_to
        self.sdf[idx[lower]] = raise_to[lower]
        return int(lower.sum())

    def rebuild_band(self, width: int) -> TetBand:
        n = self.resolution + 1
        self.band = narrow_band(self.capped_sdf().reshape(n, n, n), width)
        if self.offset_grid is not None:
            self._offset_rows = offset_grid_rows(self.band.verts, self.resolution, self.offset_step)
        return self.band

    @torch.no_grad()
    def bake_offset_grid(self) -> None:
        """Add the coarse offset grid, upsampled to the lattice, to ``sdf`` and zero it (the field is unchanged)."""
        if self.offset_grid is None:
            return
        m, n = self.resolution // self.offset_step + 1, self.resolution + 1
        up = torch.nn.functional.interpolate(self.offset_grid.reshape(1, 1, m, m, m), size=(n, n, n),
                                             mode="trilinear", align_corners=True)
        self.sdf += up.reshape(-1)
        self._offset_baked += self.offset_grid
        self.offset_grid.zero_()

    def _band_offset(self, nodes: Tensor | None = None) -> Tensor:
        """[Vb] the offset grid (or other ``nodes`` on it) interpolated at the band's vertices (cells;
        differentiable)."""
        rows, weights = self._offset_rows
        return (take_rows(self.offset_grid if nodes is None else nodes, rows) * weights).sum(dim=1)

    @torch.no_grad()
    def end_offset_phase(self) -> Tensor:
        """Bake the offset grid into ``sdf`` and drop it: from here on the lattice's own values learn.
        Returns the offset (cells, outward > 0) that the grid gave the band's vertices [Vb] over the whole
        phase (since the phase began, or since the checkpoint a run resumed from)."""
        self.bake_offset_grid()
        # (No rows on a resume past the phase, before the first band.)
        moved = self._band_offset(self._offset_baked) if self._offset_rows is not None \
            else self._offset_baked.new_zeros(0)
        self.offset_grid, self._offset_rows, self._offset_baked = None, None, None
        return moved

    @torch.no_grad()
    def smooth_gradients(self, sigma: float) -> None:
        """Blur the SDF and deformation gradients over the lattice (approximately Gaussian, ``sigma`` in cells).

        Per-vertex Adam steps turn noisy per-vertex gradients into cell-scale bumps; a smoothed gradient
        moves the surface in patches (a Sobolev-style preconditioner), which keeps it smooth. The blur is
        ``round(2 sigma^2)`` passes of the binomial filter [1, 2, 1] / 4 per axis (variance 1/2 each),
        applied only inside the bounding box of the band's vertices, and there only where the band's
        vertices (the only ones with a gradient) can carry their values (``blur_supports``).
        """
        n = self.resolution + 1
        passes = max(1, round(2 * sigma * sigma))
        assert self.band is not None
        if self._blur_plan is None or self._blur_plan[0] is not self.band or self._blur_plan[1] != passes:
            # Once per band: its box and where the gradients can be nonzero (on the band's vertices only).
            idx = lattice_indices(self.band.verts, self.resolution)
            lo = (idx.min(0).values - passes).clamp(min=0)
            hi = (idx.max(0).values + passes + 1).clamp(max=n)
            support = np.zeros(tuple((hi - lo).tolist()), dtype=np.uint8)
            local = (idx - lo).numpy()
            support[local[:, 0], local[:, 1], local[:, 2]] = 1
            self._blur_plan = (self.band, passes, lo.tolist(), hi.tolist(), blur_supports(support, passes), {})
        _, _, lo, hi, supports, segments = self._blur_plan
        for param in (self.sdf, self.deform):
            if param.grad is None:
                continue
            box = param.grad.reshape(n, n, n, -1)[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            channels = box.shape[3]
            if channels not in segments:  # the band's segments, once per channel count
                segments[channels] = blur_segments(box.shape, passes, supports)
            binomial_blur(box, passes, segments=segments[channels])  # in place on the view

    @torch.no_grad()
    def clean_sign_speckles(self) -> int:
        """Remove the sign speckles of the surface as the band sees it (``clean_sign_speckles``, on the SDF
        cut by the floor); returns how many lattice vertices changed side."""
        return self._edit_capped_sdf(clean_sign_speckles)

    @torch.no_grad()
    def close_small_tunnels(self, reach: int) -> int:
        """Fill the tunnels that a closing of ``reach`` cells closes (``close_small_tunnels``, on the SDF cut by
        the floor; vertices at or below the floor, and on the lattice's border, stay cut); returns how many
        lattice vertices joined the inside."""
        n = self.resolution + 1
        frozen = (self.sdf_cap <= 0).reshape(n, n, n).numpy()
        return self._edit_capped_sdf(lambda volume: close_small_tunnels(volume, reach, frozen))

    def _edit_capped_sdf(self, edit: Callable[[np.ndarray], tuple[np.ndarray, int]]) -> int:
        """Run ``edit`` (the SDF cut by the floor as an [R+1]^3 volume -> (edited volume, count)) and write the
        lattice values it changed back into the SDF; returns its count."""
        n = self.resolution + 1
        capped = self.capped_sdf().reshape(n, n, n).numpy()
        edited, count = edit(capped)
        if count:
            changed = torch.from_numpy((edited != capped).reshape(-1))
            self.sdf[changed] = torch.from_numpy(edited.reshape(-1)[changed.numpy()]).to(self.sdf.dtype)
        return count

    @torch.no_grad()
    def capped_sdf(self) -> Tensor:
        """[(R+1)^3] the SDF on the whole lattice as the surface sees it (cut by the floor)."""
        self.bake_offset_grid()
        return with_floor(self.sdf, self.sdf_cap, 0.0)

    def band_state(self) -> tuple[Tensor, Tensor]:
        """(positions [Vb, 3], sdf [Vb]) of the band's vertices, differentiable."""
        assert self.band is not None
        v = self.band.verts
        scale = self.max_deform * self.cell
        if self.offset_grid is not None:
            # Only the grid learns in its phase: the lattice's own values are read as constants.
            pos = self.lattice[v] + scale * torch.tanh(self.deform.detach()[v])
            return pos, with_floor(self.sdf.detach()[v] + self._band_offset(), self.sdf_cap[v], 0.0)
        if cpu_float32(self.sdf):
            return _BandState.apply(self.deform, self.sdf, self.lattice, self.sdf_cap, v, scale)
        pos = self.lattice[v] + scale * torch.tanh(take_rows(self.deform, v))
        return pos, with_floor(take_rows(self.sdf, v), self.sdf_cap[v], 0.0)

    def extract(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(verts [V, 3], faces [F, 3], the band's sdf [Vb], the band edges the surface crosses [V, 2])."""
        pos, sdf = self.band_state()
        verts, faces, vert_edge = self.band.extract(pos, sdf)
        return self.inside_points(verts), faces, sdf, take_rows(self.band.edges, vert_edge)

    def inside_points(self, verts: Tensor) -> Tensor:
        """``verts`` [V, 3] with heights below the floor raised to it and, with a box, coordinates beyond it
        brought back to its sides and top (a new tensor; differentiable).

        The SDF's cut puts the surface at the floor (and the box) on the lattice; the deformation (or a later
        smoothing of the mesh) could still move it further (the union's hidden bottom went 0.45 cell below)."""
        if not (math.isfinite(self.box) or math.isfinite(self.floor)):
            return verts
        # One clamp per coordinate (infinite bounds leave it as it is), on every step's vertices.
        b = self.box
        low = torch.tensor([-b, self.floor, -b], dtype=verts.dtype, device=verts.device)
        high = torch.tensor([b, b, b], dtype=verts.dtype, device=verts.device)
        return verts.clamp(min=low, max=high)


class _BandState(torch.autograd.Function):
    """``_Geometry.band_state``'s torch code with numba kernels (float32 CPU): the gathers and the floor cut
    in one pass, and a backward that writes the band's entries of the lattice-sized gradients directly
    (the band's vertices are distinct) instead of ``index_add`` into zeros."""

    @staticmethod
    def forward(ctx, deform: Tensor, sdf: Tensor, lattice: Tensor, sdf_cap: Tensor, verts: Tensor,
                scale: float) -> tuple[Tensor, Tensor]:
        arrays = [numpy_of(t) for t in (deform, sdf, lattice, sdf_cap, verts)]
        raw, base, band_sdf = band_state_forward_kernel(*arrays)
        bounded = torch.tanh(torch.from_numpy(raw))
        ctx.state = (arrays[1], arrays[3], arrays[4], bounded.numpy(), scale, sdf.shape[0])
        return torch.from_numpy(base) + scale * bounded, torch.from_numpy(band_sdf)

    @staticmethod
    def backward(ctx, grad_pos: Tensor, grad_sdf: Tensor):
        sdf, sdf_cap, verts, bounded, scale, n = ctx.state
        g_deform, g_sdf = band_state_backward_kernel(sdf, sdf_cap, verts, bounded, scale,
                                                     grad_pos.float().contiguous().numpy(),
                                                     grad_sdf.float().contiguous().numpy(), n)
        return torch.from_numpy(g_deform), torch.from_numpy(g_sdf), None, None, None, None


def offset_grid_rows(verts: Tensor, resolution: int, step: int) -> tuple[Tensor, Tensor]:
    """Trilinear interpolation from a grid with a node every ``step`` lattice cells (``resolution // step + 1``
    per axis, same corners) to the lattice vertices ``verts`` [V] (flat indices into the (R+1)^3 lattice):
    (node indices [V, 8], weights [V, 8])."""
    m = resolution // step + 1
    ijk = lattice_indices(verts, resolution)
    base = (ijk // step).clamp(max=m - 2)
    frac = (ijk - base * step).float() / step
    rows, weights = [], []
    for corner in range(8):
        bits = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        node = base + bits
        rows.append((node[:, 0] * m + node[:, 1]) * m + node[:, 2])
        weights.append(torch.where(bits.bool(), frac, 1 - frac).prod(dim=1))
    return torch.stack(rows, dim=1), torch.stack(weights, dim=1)


def blur_supports(support: np.ndarray, passes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where a box may be nonzero before each axis's passes of ``binomial_blur`` (uint8 [X, Y, Z] each),
    given where it may be nonzero before any (``support``, [X, Y, Z]): ``passes`` passes carry a value at
    most ``passes`` entries along their axis."""
    before_x = np.ascontiguousarray(support, dtype=np.uint8)
    size = 2 * passes + 1
    before_y = ndimage.maximum_filter1d(before_x, size, axis=0, mode="constant")
    before_z = ndimage.maximum_filter1d(before_y, size, axis=1, mode="constant")
    return before_x, before_y, before_z


def blur_segments(shape: tuple[int, ...], passes: int, supports: tuple[np.ndarray, ...]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The segments that ``binomial_blur``'s x, y and z passes filter on a box of ``shape`` [X, Y, Z, C]
    whose values may be nonzero where ``supports`` (``blur_supports``) says (``binomial_segments_kernel``).
    They depend on the supports alone: the refinement finds them once per band, not at every step."""
    X, Y, Z, C = shape
    before_x, before_y, before_z = supports
    # The supports laid out as ``binomial_blur``'s views of the box, with Z where those have Z * C.
    return (binomial_segments_kernel(before_x.transpose(1, 0, 2)[None], passes, C, 1, Y, X, Z * C),
            binomial_segments_kernel(before_y[:, None], passes, C, X, 1, Y, Z * C),
            binomial_segments_kernel(before_z[..., None], passes, C, X, Y, Z, C))


def binomial_blur(box: Tensor, passes: int, supports: tuple[np.ndarray, ...] | None = None,
                  segments: tuple[np.ndarray, ...] | None = None) -> Tensor:
    """``passes`` passes of the filter [1, 2, 1] / 4 along each of the first three axes of ``box``
    [X, Y, Z, C], in place; entries on the box's faces are left as they are along that axis.

    float32 CPU boxes whose (Z, C) part is packed (a contiguous box, or a sub-box view of a contiguous
    [N, N, N, C] lattice) go through numba kernels, in place on the view: bit-identical to the torch
    code (26 -> 12 ms per step), and no copy of the box in or out. They filter only where ``supports``
    (``blur_supports`` of a superset of the box's nonzero vertices; None: found from the values) says a
    value can be, over the ``segments`` that ``blur_segments`` finds from them (None: found here)."""
    if box.device.type == "cpu" and box.dtype == torch.float32 and box.stride(3) == 1 \
            and box.stride(2) == box.shape[3]:
        X, Y, Z, C = box.shape
        volume = box.numpy()
        if segments is None:
            if supports is None:
                supports = blur_supports((volume != 0).any(axis=3), passes)
            segments = blur_segments(box.shape, passes, supports)
        sx, sy, _, sc = volume.strides
        # Views only (as_strided over the same memory): (z, c) merge into one packed axis of Z * C.
        rows = np.lib.stride_tricks.as_strided(volume, (1, Y, X, Z * C), (0, sy, sx, sc))
        cols = np.lib.stride_tricks.as_strided(volume, (X, 1, Y, Z * C), (sx, 0, sy, sc))
        for view, axis_segments in zip((rows, cols, volume), segments, strict=True):
            binomial_filter_kernel(view, passes, axis_segments)
        return box
    for axis in range(3):
        for _ in range(passes):
            inner = box.narrow(axis, 1, box.shape[axis] - 2)
            left = box.narrow(axis, 0, box.shape[axis] - 2)
            right = box.narrow(axis, 2, box.shape[axis] - 2)
            inner.copy_(0.5 * inner + 0.25 * (left + right))
    return box


def _sample(covered: Tensor, masks: Tensor, count: int, gen: torch.Generator) -> Tensor:
    """[P, 3] (view, y, x) of up to ``count`` random pixels covered by the mesh and inside the input mask."""
    cand = (covered & (masks > 0.9)).nonzero()
    if cand.shape[0] > count:
        cand = cand[torch.randint(0, cand.shape[0], (count,), generator=gen)]
    return cand


def _penalty(diff: Tensor, kind: str) -> Tensor:
    """Mean absolute ('l1') or mean squared ('l2') value of ``diff``."""
    return diff.abs().mean() if kind == "l1" else (diff ** 2).mean()


def illumination_loss(irradiance: Tensor, luminance: Tensor, penalty: str = "l2", groups: Tensor | None = None,
                      min_group: int = 32) -> Tensor:
    """Mismatch of relative irradiance [P] and relative linear luminance [P] at the same pixels (scalar).

    Both are divided by their mean, so only the light's shape is matched, not its level. With ``groups``
    [P] (long; ``ChromaticityGroups`` labels, -1 for none) the means are taken within each group, so each
    material is compared with the light on its own and its brightness does not matter: a texture of
    another colour no longer bends the light. Groups with fewer than ``min_group`` of the pixels, and
    pixels in none, are left out (their mean is noise); when none is left, all pixels are one group.
    Irradiance is a function of the normal alone, so a texture that grouping misses is an outlier against
    it; 'l1' (a median) resists a minority texture but flips between the colours of a balanced one (a
    checker: the union's unlit albedo 30.4 -> 28.2 dB), so 'l2' is the default.
    """
    if groups is not None:
        labels = groups.clamp(min=0)
        n = int(labels.max()) + 1 if labels.numel() else 1
        counts = torch.bincount(labels, weights=(groups >= 0).to(irradiance.dtype), minlength=n)
        used = counts >= min_group
        keep = (groups >= 0) & used[labels]
        if bool(keep.any()):
            sum_irr = torch.zeros(n, dtype=irradiance.dtype).index_add(0, labels, irradiance * keep)
            sum_lum = torch.zeros(n, dtype=luminance.dtype).index_add(0, labels, luminance * keep)
            # Groups left out get a mean of 1, not 0: a 0/0 there would make the backward pass NaN.
            mean_irr = torch.where(used, sum_irr / counts.clamp(min=1), torch.ones_like(sum_irr))
            mean_lum = torch.where(used, sum_lum / counts.clamp(min=1), torch.ones_like(sum_lum))
            diff = irradiance / mean_irr[labels] - luminance / mean_lum[labels].clamp(min=1e-4)
            return _penalty(diff[keep], penalty)
    return _penalty(irradiance / irradiance.mean() - luminance / luminance.mean().clamp(min=1e-4), penalty)


def pairwise_illumination_loss(irradiance: Tensor, partner_irradiance: Tensor, luminance: Tensor,
                               partner_luminance: Tensor, tau: float = 0.3) -> Tensor:
    """Gradient-domain (Retinex) illumination loss over pixel pairs (scalar).

    For each pair of pixels of the same view [P], the log-ratio of the light's irradiance at their normals
    should equal the log-ratio of their linear luminance, through a Cauchy penalty ``log(1 + (r / tau)^2)``:
    where both pixels show one albedo the ratio is the shading's; where they straddle a texture edge the
    residual is large and, bounded by the penalty, barely pulls. Unlike the grouped means this needs no
    colour difference: patches of one hue in two brightnesses (the bunny's greys) stay in the albedo.
    Being a ratio, it is free of the light's level.
    """
    if irradiance.numel() == 0:
        return irradiance.sum()
    log_light = torch.log(irradiance.clamp(min=1e-4)) - torch.log(partner_irradiance.clamp(min=1e-4))
    log_lum = torch.log(luminance.clamp(min=1e-4)) - torch.log(partner_luminance.clamp(min=1e-4))
    return torch.log1p(((log_light - log_lum) / tau) ** 2).mean()


def _surface_at(rast: Tensor, faces: Tensor, pix: Tensor) -> tuple[Tensor, Tensor]:
    """The surface at pixels ``pix`` [P, 3] (view, y, x) of ``rast`` [B, H, W, 4] (covered ones): their
    faces' vertex indices [P, 3] and barycentric weights [P, 3, 1] (weights times per-vertex values, summed
    over dim 1, interpolate)."""
    b, y, x = pix.unbind(-1)
    H, W = rast.shape[1:3]
    r = take_rows(rast.reshape(-1, 4), (b * H + y) * W + x)
    return faces[r[:, 3].long() - 1], torch.stack([r[:, 0], r[:, 1], 1 - r[:, 0] - r[:, 1]], dim=-1)[..., None]


def _partners(pix: Tensor, covered: Tensor, masks: Tensor, offsets: tuple[float, ...], size: int,
              gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """For pixels ``pix`` [P, 3] (view, y, x): a partner each, a random one of ``offsets`` (fractions of the
    image ``size``) away along +-x or +-y in the same view. Returns the kept pixels' indices into ``pix``
    [Q] and their partners [Q, 3]; kept: the partner is inside the image, covered and inside the mask."""
    steps = torch.tensor([max(1, round(o * size)) for o in offsets])
    dist = steps[torch.randint(0, len(offsets), (pix.shape[0],), generator=gen)]
    axis = torch.randint(0, 2, (pix.shape[0],), generator=gen)
    sign = torch.randint(0, 2, (pix.shape[0],), generator=gen) * 2 - 1
    partner = pix.clone()
    partner[:, 1] += torch.where(axis == 0, dist * sign, 0)
    partner[:, 2] += torch.where(axis == 1, dist * sign, 0)
    H, W = covered.shape[1:]
    inside = (partner[:, 1] >= 0) & (partner[:, 1] < H) & (partner[:, 2] >= 0) & (partner[:, 2] < W)
    idx = inside.nonzero()[:, 0]
    b, y, x = partner[idx].unbind(-1)
    ok = covered[b, y, x] & (masks[b, y, x] > 0.9)
    return idx[ok], partner[idx[ok]]


def refine_floor(cfg: RefineConfig, coarse_low: float, top: float, centred_object: bool,
                 step: int | None = None) -> float:
    """Height below which no surface forms during refinement (world units; -inf: none).

    The coarse stage cut its mesh at its floor (``recon.extract.floor_height``): below the lowest point
    any view saw, nothing holds the hidden underside of an object seen from above, and over the default
    preset's 1000 steps it sank up to 2.7 cm there, invisible in every view but enough to shift a
    bounding-box-normalised evaluation. An object that is not centred may sink ``cfg.floor_margin`` cells
    below the coarse mesh's lowest point ``coarse_low``. A centred object's bottom lies opposite its top,
    which the views do see: the floor is ``min(coarse_low, -top)`` with ``top`` the current surface's
    highest point, so nothing sinks below the centred box (the benchmark union, whose bottom no view shows,
    sank the full margin: normalised Chamfer 0.0119 against 0.0097 cut at its coarse floor). Once the top
    has settled where the silhouettes put it (``step`` past the offset-grid phase; None: not yet) and with
    ``cfg.floor_follows_top``, the floor is ``-top`` even where the coarse bottom lies lower: that bottom is
    a low quantile of depth pixels, which bleed past the silhouette's lower edge (the benchmark box's and
    demo's came out 6.4 and 4.8 mm low, while their refined tops were within 1.1 mm).
    """
    if cfg.floor_margin < 0:
        return -math.inf
    if centred_object:
        if cfg.floor_follows_top and step is not None and step >= cfg.offset_grid_steps:
            return -top
        return min(coarse_low, -top)
    return coarse_low - cfg.floor_margin * cfg.cell


UNIT_BOX_HALF = 0.5
"""Half-size of the box a normalised object fills along its largest extent (CONVENTIONS.md)."""


def refine_box(cfg: RefineConfig, coarse: Mesh, centred_object: bool) -> float:
    """Half-size of the box outside which no surface forms during refinement (world units; inf: none).

    SV3D's objects, and the GSO evaluation's, are normalised to a largest bounding-box extent of 1, centred
    (CONVENTIONS.md): a centred object lies inside [-0.5, 0.5]^3. Where no cue pins a flat face's ends, the
    refinement leaves them where the visual hull allows: the benchmark box's ends stood 10-15 mm beyond the
    truth, and the normalised evaluation divides by that length (README, "The unit box"). The six curved
    benchmark objects' refined extremes lie within 2 mm of 0.5, so the box barely touches them. With
    ``cfg.unit_box`` and a centred object the box is ``UNIT_BOX_HALF``, unless the coarse mesh reaches more
    than ``cfg.unit_box_tolerance`` beyond it: then the orbit shows an object of another scale, and no box
    is imposed (logged).
    """
    if not (cfg.unit_box and centred_object):
        return math.inf
    v = coarse.verts
    reach = float(torch.maximum(torch.maximum(v[:, 0].abs(), v[:, 2].abs()), v[:, 1]).max())
    if reach > UNIT_BOX_HALF + cfg.unit_box_tolerance:
        log.warning("the coarse mesh reaches %.3f, beyond the unit box (+/-%.1f, +%.2f tolerance): the object is "
                    "not normalised to it, so refinement does not cut the surface there", reach, UNIT_BOX_HALF,
                    cfg.unit_box_tolerance)
        return math.inf
    return UNIT_BOX_HALF


def surface_depths(verts: Tensor, faces: Tensor, cameras: Cameras) -> Tensor:
    """[N, H, W] distance along each camera's viewing axis to the nearest surface of the mesh (verts [V, 3],
    faces [F, 3]) at each pixel of the cameras' images; +inf where the mesh does not cover the pixel."""
    clip = clip_positions(verts.float(), cameras)
    tri = faces.int()
    rast = rasterize(clip, tri, (cameras.height, cameras.width))
    depth = interpolate(clip[..., 3:4].contiguous(), rast, tri)[..., 0]  # w = the camera-space depth
    return torch.where(rast[..., 3] > 0, depth, torch.full_like(depth, math.inf))


def hidden_from_views(points: Tensor, cameras: Cameras, masks: Tensor, depths: Tensor, tolerance: float) -> Tensor:
    """[P] bool: no view can see whether the points [P, 3] are solid. In every view a point projects inside
    the mask [N, H, W] (inside where > 0.5; outside it the view would see the background through the point)
    and does not lie more than ``tolerance`` in front of the surface at its pixel (``depths``
    [N, H, W] from ``surface_depths``; where the surface does not cover a masked pixel, the surface is
    missing there and the point may fill it)."""
    xy, dist = cameras.project(points)
    H, W = masks.shape[1:]
    px, in_image = pixel_index(xy, W, H)
    views = torch.arange(masks.shape[0])[:, None]
    surface = depths[views, px[..., 1], px[..., 0]]
    in_front = torch.isfinite(surface) & (dist < surface - tolerance)
    return (in_image & (dist > 0) & (masks[views, px[..., 1], px[..., 0]] > 0.5) & ~in_front).all(dim=0)


def hidden_base_fill(capped: Tensor, first: int, hidden: Tensor) -> Tensor:
    """Lattice vertices to raise so that a hidden flat base follows the floor down.

    A centred object's floor is minus its top (``refine_floor``); as refinement raises the top towards the
    truth, the floor drops, and the base's rim follows it (the silhouettes show the rim) while the base's
    middle, which no view from above shows, stays where the coarse stage left it (the benchmark duck: its
    base's middle came out a cell above the floor). For each lattice column whose lowest solid vertex lies
    within the ``D`` layers above the floor's, the vertices below it are filled, downwards, as long as each
    is hidden from every view (``hidden_from_views``: a filled vertex that a view could see would show
    there, as under an overhang that a view looks into), and the first vertex below the floor is raised to
    its own (negative) height above the floor, so that the cut (``with_floor``) puts the surface exactly at
    the floor.

    Args:
        capped: [n^3] the SDF as the surface sees it (cut by the floor; inside where > 0), n = R + 1, lattice
            order (x-major, then y, then z).
        first: the lowest lattice layer (y index) at or above the floor, >= 1.
        hidden: [n, D + 2, n] bool, ``hidden_from_views`` of the lattice layers ``first - 1 .. first + D``.
    Returns:
        [K] int64 lattice indices of the vertices whose SDF the caller raises to their height above the floor
        (in cells; positive above it, so those are filled), possibly empty.
    """
    n = round(capped.shape[0] ** (1 / 3))
    depth = hidden.shape[1] - 2
    empty = torch.zeros(0, dtype=torch.int64)
    # Below the floor the capped SDF is outside, so the lowest solid vertex of a column within this slab is
    # the lowest of the whole column.
    slab = capped.reshape(n, n, n)[:, first:first + depth + 1, :] > 0
    cols = slab.any(dim=1).nonzero()
    if cols.numel() == 0:
        return empty
    x, z = cols[:, 0], cols[:, 1]
    k = slab.int().argmax(dim=1)[x, z] + 1  # the column's lowest solid vertex, as a layer of ``hidden``
    alive = torch.ones(cols.shape[0], dtype=torch.bool)
    filled: list[Tensor] = []
    for _ in range(depth + 1):  # downwards, all columns at once, to the first layer below the floor
        k = k - 1
        alive &= (k >= 0) & hidden[x, k.clamp(min=0), z]
        if not alive.any():
            break
        filled.append(((x * n + (first - 1 + k)) * n + z)[alive])
    return torch.cat(filled) if filled else empty


def initial_sdf(cfg: RefineConfig, coarse: Mesh) -> Tensor:
    """[(R+1)^3] SDF of the coarse mesh on the lattice, in cells (inside > 0), clamped to the band scale."""
    cell = cfg.cell
    sdf = mesh_sdf_grid(coarse.verts.numpy(), coarse.faces.numpy(), cfg.grid, cfg.bound) / cell
    if cfg.init_smoothing > 0:
        # Dents and bumps of a cell or two in the coarse mesh come from its depth noise; the refinement's
        # small steps keep what they start from, so they are smoothed away before it starts. A blur would
        # also erase parts a few cells thin (a wing, a handle), which the refinement cannot grow back (the
        # band holds only the current surface), so those are left as they are.
        n = cfg.grid + 1
        grid = sdf.reshape(n, n, n).numpy()
        blurred = ndimage.gaussian_filter(grid, cfg.init_smoothing, mode="nearest")
        reach = max(2, math.ceil(3 * cfg.init_smoothing))
        thin = thin_inside(grid, 2 * cfg.init_smoothing, reach)
        keep = ndimage.binary_dilation(thin, iterations=2)
        sdf = torch.from_numpy(np.where(keep, grid, blurred).reshape(-1).astype(np.float32))
    return sdf.clamp(-4 * max(cfg.band_width, 1), 4 * max(cfg.band_width, 1))


def clean_sign_speckles(sdf: np.ndarray, max_passes: int = 20, min_thin_part: int = 27) -> tuple[np.ndarray, int]:
    """The SDF volume [X, Y, Z] (in cells, inside > 0) with its sign speckles removed, and how many lattice
    vertices changed side.

    Speckles are the cell-sized spikes, pits, bridges and tunnels that noisy per-vertex steps leave on
    a surface; a bridge or a tunnel adds a spurious handle (genus) to the mesh. A vertex with at most two
    of its 6 axis neighbours on its own side joins the other side, repeated until none is left (at most
    ``max_passes``); its new value is the mean of the neighbours on the side it joins, so the surface
    there lies where they put it. Any surface of a part at least two vertices thick keeps its vertices
    (three or more neighbours on their own side), but parts one vertex thick would erode from their
    edges, so inside parts thinner than 4 cells (``thin_inside``) of at least ``min_thin_part`` vertices,
    and the vertices within 2 of them, never join the outside. Outside vertices there still join the
    inside: a pinhole through a thin part (4 of its 6 neighbours inside) is a spurious handle, and filling
    it cannot erode the part (the benchmark bunny's ear, default preset: genus 1 -> 0, 11 vertices).
    """
    shape = sdf.shape
    offsets = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    thin = thin_inside(sdf, 2.0, 3)
    # A thin part spans many vertices; a handful are a speckle themselves (a bridge, an islet).
    labels, count = ndimage.label(thin, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.reshape(-1), minlength=count + 1)
    big = sizes >= min_thin_part
    big[0] = False
    protect = ndimage.binary_dilation(big[labels], iterations=2)
    out = sdf.copy()
    changed = np.zeros(shape, dtype=bool)
    for _ in range(max_passes):
        padded = np.pad(out, 1, mode="edge")
        neighbours = np.stack([padded[tuple(slice(1 + d, shape[a] + 1 + d) for a, d in enumerate(o))]
                               for o in offsets])
        inside = out > 0
        side_in = neighbours > 0
        n_in = side_in.sum(0)
        flip = np.where(inside, (n_in <= 2) & ~protect, n_in >= 4)
        if not flip.any():
            break
        mean_in = np.where(side_in, neighbours, 0).sum(0) / np.maximum(n_in, 1)
        mean_out = np.where(~side_in, neighbours, 0).sum(0) / np.maximum(6 - n_in, 1)
        to_out, to_in = flip & inside, flip & ~inside
        # Strictly on the joined side (a value of exactly 0 counts as outside).
        out[to_out] = np.minimum(mean_out[to_out], -1e-3)
        out[to_in] = np.maximum(mean_in[to_in], 1e-3)
        changed |= flip
    return out, int(changed.sum())


def close_small_tunnels(sdf: np.ndarray, reach: int, frozen: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The SDF volume [X, Y, Z] (in cells, inside > 0) with its small tunnels filled, and how many lattice
    vertices joined the inside.

    A tunnel no wider than the grid can resolve is a spurious handle: on a part a cell or two thick, two
    strands of vertices joined only along tetrahedron diagonals close a loop around a gap of a vertex or
    two (the benchmark cow's legs: genus 2 at grid 128, its truth 0), which the 6-neighbour speckle
    rule does not see. Candidates are the vertices that a morphological closing of ``reach`` cells adds
    (gaps up to about ``2 reach`` cells wide), in 26-connected clusters; a cluster joins the inside only
    if it raises the Euler characteristic of the solid that marching tetrahedra bounds
    (``kuhn_euler_characteristic``, counted on the cluster's box), i.e. it closes a tunnel. A cluster
    that joins two parts or makes a handle lowers it and is left out, so wide holes (a torus, a mug
    handle), gaps between parts and plain concavities stay. A cluster that seals a pocket (a cavity, which
    raises it too) is left out as well. ``frozen`` [X, Y, Z] (bool) marks vertices that must stay as they
    are. A filled vertex takes the mean of its inside axis neighbours (at least 1e-3), like a speckle.
    """
    inside = sdf > 0
    pad = reach + 1
    closed = ndimage.binary_closing(np.pad(inside, pad), structure=np.ones((3, 3, 3), bool), iterations=reach)
    candidates = closed[pad:-pad, pad:-pad, pad:-pad] & ~inside
    if frozen is not None:
        candidates &= ~frozen
    labels, _ = ndimage.label(candidates, structure=np.ones((3, 3, 3)))
    grown = inside.copy()
    chosen = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        window = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        cluster = labels[window] == label
        before = grown[window]
        if kuhn_euler_characteristic(before | cluster) > kuhn_euler_characteristic(before):
            grown[window] |= cluster
            chosen.append(label)
    if not chosen:
        return sdf.copy(), 0
    cavities = _enclosed_outside(grown) & ~_enclosed_outside(inside)
    if cavities.any():
        sealing = set(np.unique(labels[ndimage.binary_dilation(cavities, structure=KUHN_NEIGHBOURS)]).tolist())
        chosen = [label for label in chosen if label not in sealing]
    fill = np.isin(labels, chosen)
    if not fill.any() or kuhn_euler_characteristic(inside | fill) <= kuhn_euler_characteristic(inside):
        return sdf.copy(), 0
    points = np.argwhere(fill)
    upper = np.asarray(sdf.shape) - 1
    # The few filled points' axis neighbours only (a full [6, X, Y, Z] stack was 100 MB at grid 128).
    neighbours = np.stack([sdf[tuple(np.clip(points + step, 0, upper).T)]
                           for step in np.concatenate([np.eye(3, dtype=np.int64), -np.eye(3, dtype=np.int64)])])
    n_in = (neighbours > 0).sum(0)
    mean_in = np.where(neighbours > 0, neighbours, 0).sum(0) / np.maximum(n_in, 1)
    out = sdf.copy()
    out[tuple(points.T)] = np.maximum(mean_in, 1e-3)
    return out, int(fill.sum())


def _enclosed_outside(inside: np.ndarray) -> np.ndarray:
    """Outside points [X, Y, Z] (bool) cut off from the volume's border by ``inside`` (cavities), with the
    connectivity marching tetrahedra gives them."""
    labels, _ = ndimage.label(~inside, structure=KUHN_NEIGHBOURS)
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                                       labels[:, :, [0, -1]].ravel()]))
    return (labels > 0) & ~np.isin(labels, border)


def thin_inside(sdf: np.ndarray, half_thickness: float, reach: int) -> np.ndarray:
    """Inside points of an SDF volume [X, Y, Z] (in cells, inside > 0) that belong to parts thinner than
    ``2 * half_thickness`` cells: no point within ``reach`` cells lies deeper than ``half_thickness``.
    A bulk's surface layer always has deeper points nearby; a sheet or a rod does not."""
    deepest = ndimage.maximum_filter(sdf, size=2 * reach + 1, mode="nearest")
    return (sdf > 0) & (deepest < half_thickness)


@torch.no_grad()
def observed_normals(mesh: Mesh, cameras: Cameras, size: int = 128) -> Tensor:
    """[P, 3] unit normals of ``mesh`` at the pixels it covers in the views of ``cameras`` rendered at
    ``size``² (pixel-weighted: a normal counts as often as the views show it)."""
    cams = cameras.scaled(size, size)
    verts, tri = mesh.verts.float(), mesh.faces.int()
    rast = rasterize(clip_positions(verts, cams), tri, (size, size))
    vn = vertex_normals(verts, mesh.faces.long())
    normals = interpolate(vn, rast, tri)[rast[..., 3] > 0]
    return torch.nn.functional.normalize(normals, dim=-1)


def fit_refined(
    cfg: RefineConfig,
    orbit: Orbit,
    coarse: Mesh,
    seed: int = 0,
    checkpoint: Path | None = None,
    progress: bool = True,
    extra_losses: list[ExtraLoss] | None = None,
    centred_object: bool = False,
) -> RefinedAsset:
    """Refine ``coarse`` against ``orbit``; returns the refined mesh, albedo field and light.

    Args:
        centred_object: the object's box is centred at the origin (``extract.centred_object``): the floor
            follows minus the surface's top as it moves (``refine_floor``).
        checkpoint: saved every ``cfg.checkpoint_every`` steps; an unfinished one is resumed.
        extra_losses: hooks called each step with a ``HookContext``; their results are added to the loss.
    """
    if len(cfg.resolutions) != len(cfg.phase_ends):
        raise ValueError("refine.resolutions and refine.phase_ends must have equal length")
    if len(coarse.faces) == 0:
        raise ValueError("the coarse mesh is empty: nothing to refine")
    if cfg.sg_learn_lobes and cfg.sg_max_sharpness < cfg.sg_sharpness:
        raise ConfigError(f"refine.sg_max_sharpness ({cfg.sg_max_sharpness}) must be >= refine.sg_sharpness "
                          f"({cfg.sg_sharpness})")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    orbit = orbit.to("cpu")
    t_init = time.perf_counter()
    coarse_low = float(coarse.verts[:, 1].min())
    top = float(coarse.verts[:, 1].max())
    geometry = _Geometry(initial_sdf(cfg, coarse), cfg, refine_floor(cfg, coarse_low, top, centred_object),
                         refine_box(cfg, coarse, centred_object))
    albedo_init = {"bound": cfg.bound, "levels": cfg.albedo.levels, "log2_size": cfg.albedo.log2_size,
                   "base_res": cfg.albedo.base_res, "max_res": cfg.albedo.max_res, "hidden": cfg.albedo.hidden}
    light_init = {"count": cfg.sg_count, "sharpness": cfg.sg_sharpness, "learn_lobes": cfg.sg_learn_lobes,
                  "max_sharpness": cfg.sg_max_sharpness,
                  "reference": "mean" if cfg.light_reference == "observed" else "peak"}
    albedo = AlbedoField(**albedo_init)
    light = SGLight(**light_init)
    if cfg.light_reference == "observed":
        light.set_reference_normals(observed_normals(coarse, orbit.cameras))
    groups = [
        {"params": [geometry.sdf], "lr": cfg.lr_sdf},
        {"params": [geometry.deform], "lr": cfg.lr_deform},
        {"params": list(albedo.parameters()), "lr": cfg.albedo.lr},
        {"params": [light.amplitude_logits], "lr": cfg.lr_light},
    ]
    if cfg.sg_learn_lobes:
        groups.append({"params": [light.axis_offsets, light.log_sharpness_offsets], "lr": cfg.lr_light_lobes})
    if geometry.offset_grid is not None:
        groups.append({"params": [geometry.offset_grid], "lr": cfg.lr_offset_grid})
    # fused: one kernel per tensor, 5 ms a step instead of 30 ms for the lattice-sized parameters.
    optimizer = torch.optim.Adam(groups, fused=True)
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        saved = load_state(checkpoint)
        if saved.get("step", 0) < cfg.steps and saved["sdf"].shape == geometry.sdf.shape:
            with torch.no_grad():
                geometry.sdf.copy_(saved["sdf"])
                geometry.deform.copy_(saved["deform"])
            albedo.load_state_dict(saved["albedo"])
            light.load_state_dict(saved["light"])
            optimizer.load_state_dict(saved["optimizer"])
            gen.set_state(saved["generator"])
            start = saved["step"]
            top = saved.get("top", top)
            log.info("resuming refinement from %s at step %d", checkpoint, start)
    init_seconds = time.perf_counter() - t_init
    max_size = min(orbit.height, orbit.width)
    chroma_groups = None
    if cfg.illumination_groups > 1:
        chroma_groups = ChromaticityGroups.fit(orbit.images[orbit.masks > 0.9], cfg.illumination_groups,
                                               cfg.illumination_group_merge, seed)
        log.info("illumination loss: %d chromaticity groups", chroma_groups.count)
    levels: dict[int, _Level] = {}
    n_views = len(orbit)
    loss_val, psnr_val = float("nan"), float("nan")
    band_fracs: list[float] = []
    # The floor of a centred object moves with its top; the hidden base follows it (``hidden_base_fill``).
    fill_base = centred_object and cfg.base_fill_cells >= 1 and cfg.floor_margin >= 0
    coarse_depths = surface_depths(coarse.verts, coarse.faces, orbit.cameras) if fill_base else None
    topo_faces: Tensor | None = None  # the faces ``topo`` was computed from
    topo_reused = 0
    t0 = time.perf_counter()
    with StepProgress("refine", cfg.steps, start, enabled=progress) as bar:
        for step in range(start, cfg.steps):
            ph = phase_index(step, cfg.steps, cfg.phase_ends)
            if ph not in levels:
                levels[ph] = _level(orbit, min(cfg.resolutions[ph], max_size), cfg.illumination_blur, chroma_groups)
            lvl = levels[ph]
            if geometry.offset_grid is not None and step >= cfg.offset_grid_steps:
                moved = geometry.end_offset_phase()
                geometry.band = None
                if moved.numel():
                    q = torch.quantile(moved[::max(1, moved.shape[0] // 100000)], torch.tensor([0.05, 0.5, 0.95]))
                    log.info("offset grid: over the phase the SDF moved %.2f cells at the median, %.2f to %.2f "
                             "(5th-95th percentile) near the surface", *q[[1, 0, 2]].tolist())
            if geometry.band is None or (step - start) % cfg.band_every == 0:
                geometry.set_floor(refine_floor(cfg, coarse_low, top, centred_object, step))
                if fill_base:
                    geometry.fill_hidden_base(cfg.base_fill_cells, orbit.cameras, orbit.masks, coarse_depths)
                band_fracs.append(geometry.rebuild_band(cfg.band_width).fraction)
            verts, faces, band_sdf, crossed = geometry.extract()
            if faces.shape[0] == 0:
                raise RuntimeError(f"refinement lost the surface at step {step}: try a lower learning rate")
            top = float(verts.detach()[:, 1].max())
            k = min(cfg.views_per_step, n_views)
            views = torch.randperm(n_views, generator=gen)[:k]
            cams = lvl.cameras.subset(views)
            masks = lvl.masks[views]
            tri = faces.int()
            # Computed, not looked up in the content-keyed cache (its hash costs); reused when the faces equal
            # the last step's, as they do on most late steps, once the surface no longer changes sides.
            if topo_faces is None or not torch.equal(topo_faces, tri):
                topo, topo_faces = compute_edge_topology(tri.numpy()), tri
            else:
                topo_reused += 1
            clip = clip_positions(verts, cams)
            # A surface without boundary edges (the usual case: the band's surface is closed, the orbit's
            # cameras outside it) is rasterized without its back faces, which cannot be seen.
            closed = bool((topo.edge_faces >= 0).all())
            rast = rasterize(clip, tri, (cams.height, cams.width), closed=closed)
            covered = rast[..., 3] > 0
            alpha = antialias(covered.float()[..., None], rast, clip, tri, topo)[..., 0]
            mask_loss = ((alpha - masks) ** 2).mean()

            pix = _sample(covered, masks, cfg.pixels_per_step, gen)
            b, y, x = pix.unbind(-1)
            H, W = cams.height, cams.width
            f, w = _surface_at(rast, faces, pix)
            points = (take_rows(verts, f) * w).sum(1)
            if cfg.shading_moves_geometry:
                # Shape from shading: the illumination losses, which ask the irradiance at these normals to follow
                # the input's luminance, move the geometry too (photometric gradients reach the normals only with
                # ``photometric_moves_light``, as they reach the light). A lit input's shading so refines the
                # normals that its light is divided by (lighting gap, default preset: duck 3.5 -> 2.0-2.1 dB,
                # union 4.4 -> 1.3 dB). An unlit input's light stays flat and gives the normals no gradient, so
                # texture is not carved into relief as it once was by the photometric loss (the demo's letters;
                # see README "Shape from shading").
                vn = vertex_normals(verts, faces)
                normals = torch.nn.functional.normalize((take_rows(vn, f) * w).sum(1), dim=-1)
            else:
                # Fixed normals, smoothed over a few rings so cell-scale bumps do not speckle the albedo.
                with torch.no_grad():
                    vn = vertex_normals(verts, faces)
                    vn = smooth_vertex_normals(vn, torch.from_numpy(topo.edges), cfg.normal_smoothing)
                    normals = torch.nn.functional.normalize((vn[f] * w.detach()).sum(1), dim=-1)
            if step < cfg.warmup_steps or not cfg.photometric_moves_geometry:
                points, normals = points.detach(), normals.detach()
            # Albedo smoothness compares the first pixels' albedo with the albedo a small random step away.
            # Both sets go through the albedo field in one call: the hash encoding's time is mostly its
            # tables' cache misses, paid once per call (12288 + 4096 points, forward and backward: 67 -> 58 ms).
            m = min(pix.shape[0], 4096)
            jitter = torch.randn(m, 3, generator=gen) * cfg.albedo_smooth_radius
            alb, alb_jitter = albedo(torch.cat([points, points[:m].detach() + jitter])).split([points.shape[0], m])
            irr = light.irradiance(normals)
            partner_normals = None
            if cfg.illumination_pair_weight > 0:
                anchor, partner = _partners(pix, covered, masks, cfg.illumination_pair_offsets, H, gen)
                pb, py, px = partner.unbind(-1)
                partner_flat = (views[pb] * H + py) * W + px
                # The light learns from these only, so their normals carry no gradient to the geometry.
                with torch.no_grad():
                    fp, wp = _surface_at(rast, faces, partner)
                    partner_normals = torch.nn.functional.normalize((vn.detach()[fp] * wp).sum(1), dim=-1)
            # By default the light is fitted by the illumination loss alone: given photometric gradients
            # too, it flattened towards what the albedo had already absorbed (duck, lit, frozen mesh: light
            # log-error 0.067 -> 0.054 without them; the irradiance is relative, so its level cannot drift).
            rgb = light.shade(alb, normals, irradiance=irr if cfg.photometric_moves_light else irr.detach())
            # Gathered from the whole stack by flat index: indexing lvl.images[views] first would copy the
            # views' full images every step.
            flat = (views[b] * H + y) * W + x
            target = take_rows(lvl.images.reshape(-1, 3), flat)
            rgb_loss = _penalty(rgb - target, cfg.photometric)
            lum = lvl.luminance.reshape(-1)[flat]
            pixel_groups = lvl.groups.reshape(-1)[flat] if lvl.groups is not None else None
            illum_loss = illumination_loss(irr, lum, cfg.illumination_loss, pixel_groups)
            pair_loss = irr.new_zeros(())
            if partner_normals is not None:
                partner_lum = lvl.luminance.reshape(-1)[partner_flat]
                if pixel_groups is not None:
                    # Pairs across materials, or with a dark pixel (no group), say nothing about the light.
                    partner_groups = lvl.groups.reshape(-1)[partner_flat]
                    same = (pixel_groups[anchor] == partner_groups) & (partner_groups >= 0)
                    anchor, partner_normals, partner_lum = anchor[same], partner_normals[same], partner_lum[same]
                pair_loss = pairwise_illumination_loss(irr[anchor], light.irradiance(partner_normals), lum[anchor],
                                                       partner_lum, cfg.illumination_pair_tau)
            smooth_loss = (alb[:m] - alb_jitter).abs().mean()

            decay = 1 - 0.99 * step / max(cfg.steps - 1, 1)
            # Geometry learning rates fall linearly to ``geometry_lr_final`` of their value: late steps only
            # polish, so noise in the gradients cannot keep moving a converged surface.
            geo_scale = 1 - (1 - cfg.geometry_lr_final) * step / max(cfg.steps - 1, 1)
            optimizer.param_groups[0]["lr"] = cfg.lr_sdf * geo_scale
            optimizer.param_groups[1]["lr"] = cfg.lr_deform * geo_scale
            # Only edges whose ends differ in sign contribute: the ones the surface crosses, a tenth of the band's.
            sdf_loss = sdf_sign_regularizer(band_sdf, crossed)
            normal_loss = normal_consistency(verts, faces, torch.from_numpy(topo.edge_faces))
            lap_loss = laplacian_smoothing(verts / geometry.cell, torch.from_numpy(topo.edges))
            loss = (cfg.rgb_weight * rgb_loss + cfg.mask_weight * mask_loss + cfg.illumination_weight * illum_loss
                    + cfg.illumination_pair_weight * pair_loss
                    + cfg.albedo_smooth_weight * smooth_loss + cfg.sdf_weight * decay * sdf_loss
                    + cfg.normal_weight * normal_loss + cfg.laplacian_weight * lap_loss)
            if extra_losses:
                ctx = HookContext(step, cfg.steps, verts, faces, albedo, light, orbit, gen)
                for hook in extra_losses:
                    extra = hook(ctx)
                    if extra is not None:
                        loss = loss + extra
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_smooth_cells > 0:
                geometry.smooth_gradients(cfg.grad_smooth_cells)
            optimizer.step()
            loss_val = float(loss.detach())
            mse = float(((rgb.detach() - target) ** 2).mean())
            psnr_val = -10 * math.log10(max(mse, 1e-10))
            done = step + 1
            bar.update(done, f"loss {loss_val:.4f}  PSNR {psnr_val:.1f}  faces {faces.shape[0]}")
            if checkpoint is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 \
                    and done < cfg.steps:
                geometry.bake_offset_grid()
                save_state({"sdf": geometry.sdf.detach(), "deform": geometry.deform.detach(),
                            "albedo": albedo.state_dict(), "light": light.state_dict(),
                            "optimizer": optimizer.state_dict(), "generator": gen.get_state(), "step": done,
                            "top": top},
                           checkpoint)
    seconds = time.perf_counter() - t0
    if fill_base:
        # The last steps moved the top since the band was last derived.
        geometry.set_floor(refine_floor(cfg, coarse_low, top, centred_object, cfg.steps - 1))
        geometry.fill_hidden_base(cfg.base_fill_cells, orbit.cameras, orbit.masks, coarse_depths)
    speckles = geometry.clean_sign_speckles() if cfg.sign_cleanup else 0
    tunnels = geometry.close_small_tunnels(cfg.tunnel_close_cells) if cfg.tunnel_close_cells > 0 else 0
    mesh = final_mesh(cfg, geometry, albedo)
    metrics = {"loss": loss_val, "train_psnr": psnr_val, "seconds": seconds, "init_seconds": init_seconds,
               "steps": cfg.steps - start, "faces": int(mesh.faces.shape[0]), "verts": int(mesh.verts.shape[0]),
               "band_fraction": float(np.mean(band_fracs)) if band_fracs else 0.0, "sign_speckles": speckles,
               "tunnel_fill": tunnels, "topology_reused_steps": topo_reused,
               "light_amplitudes": [round(float(a), 4) for a in light.amplitudes.detach()]}
    log.info("refinement: %d steps in %.1f s, loss %.4f, train PSNR %.2f dB, %d faces", cfg.steps - start, seconds,
             loss_val, psnr_val, mesh.faces.shape[0])
    init = {"albedo": albedo_init, "light": light_init}
    return RefinedAsset(mesh, albedo, light, geometry.capped_sdf().clone(), geometry.deform.detach().clone(),
                        cfg.grid, cfg.bound, cfg.max_deform, init, cfg.steps, metrics)


@torch.no_grad()
def final_mesh(cfg: RefineConfig, geometry: _Geometry, albedo: AlbedoField) -> Mesh:
    """Extract the final surface (band re-derived), drop small components, denoise it (``bilateral_denoise``,
    ``refine.denoise_iterations``), colour vertices by the albedo."""
    from recon.extract import remove_small_components

    geometry.rebuild_band(1)
    verts, faces, _, _ = geometry.extract()
    v, f = remove_small_components(verts.numpy().astype(np.float64), faces.numpy(), cfg.min_component_frac)
    verts = torch.from_numpy(np.asarray(v, dtype=np.float32))
    faces = torch.from_numpy(np.asarray(f, dtype=np.int64))
    if cfg.denoise_iterations > 0 and faces.shape[0] > 0:
        # The steps leave cell-sized bumps that no loss removes (the median normal error grows from the
        # start's 4 to 6 degrees on the sphere); bilateral filtering takes them out and keeps the creases.
        edge_faces = torch.from_numpy(compute_edge_topology(faces.int().numpy()).edge_faces)
        verts = geometry.inside_points(bilateral_denoise(verts, faces, edge_faces, cfg.denoise_iterations,
                                                              2 * cfg.denoise_iterations, cfg.denoise_sigma))
    return Mesh(verts, faces, albedo.query(verts))

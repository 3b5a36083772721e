"""Analytic orbits: exact ray casting of analytic shapes with procedural textures.

These are the fixtures of every stage's tests and the demo input. Shapes are given by exact signed
distance functions (sphere, box, torus and unions of them), so sphere tracing converges to the true
surface (to 1e-7 here, far below a pixel); no rasterizer is involved. Each scene also exports its
ground-truth mesh (trimesh primitives, booleans through manifold3d) with vertex colours.

Scenes are normalised as CONVENTIONS.md asks: largest bounding-box extent 1, box centred at the origin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from recon.data.cameras import (
    SV3D_ELEVATION_DEG,
    SV3D_FOV_DEG,
    SV3D_FRAMES,
    SV3D_RADIUS,
    Cameras,
    orbit_cameras,
    sv3d_azimuths,
)
from recon.io import rgba_uint8
from recon.shading.soft_light import SoftLight
from recon.types import Orbit

Texture = Callable[[Tensor], Tensor]
"""Maps [P, 3] points in the shape's local frame to [P, 3] RGB in [0, 1]."""

# ---------------------------------------------------------------------------------------------------
# Procedural textures


def solid(color: tuple[float, float, float]) -> Texture:
    """A uniform colour."""
    def tex(p: Tensor) -> Tensor:
        return torch.tensor(color, dtype=p.dtype, device=p.device).expand(p.shape[0], 3)
    return tex


def checker(period: float, c0: tuple[float, float, float], c1: tuple[float, float, float]) -> Texture:
    """A 3D checkerboard of cubes of side ``period``."""
    def tex(p: Tensor) -> Tensor:
        parity = torch.floor(p / period).sum(dim=-1).remainder(2.0)[:, None]
        a = torch.tensor(c0, dtype=p.dtype, device=p.device)
        b = torch.tensor(c1, dtype=p.dtype, device=p.device)
        return a * (1 - parity) + b * parity
    return tex


def stripes(period: float, axis: int, c0: tuple[float, float, float], c1: tuple[float, float, float]) -> Texture:
    """Bands of width ``period / 2`` across ``axis`` (0 = x, 1 = y, 2 = z)."""
    def tex(p: Tensor) -> Tensor:
        band = torch.floor(p[:, axis] * 2.0 / period).remainder(2.0)[:, None]
        a = torch.tensor(c0, dtype=p.dtype, device=p.device)
        b = torch.tensor(c1, dtype=p.dtype, device=p.device)
        return a * (1 - band) + b * band
    return tex


# A 5x7 bitmap font for the glyphs texture: each character is 7 rows of 5 bits, top row first.
_FONT = {
    "O": ["01110", "10001", "10001", "10001", "10001", "10001", "01110"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "B": ["11110", "10001", "10001", "11110", "10001", "10001", "11110"],
    "I": ["01110", "00100", "00100", "00100", "00100", "00100", "01110"],
    "T": ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],
    "M": ["10001", "11011", "10101", "10101", "10001", "10001", "10001"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "S": ["01111", "10000", "10000", "01110", "00001", "00001", "11110"],
    "H": ["10001", "10001", "10001", "11111", "10001", "10001", "10001"],
    "3": ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    "D": ["11100", "10010", "10001", "10001", "10001", "10010", "11100"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    " ": ["00000"] * 7,
}


def glyphs(
    text: str,
    columns: int,
    row_height: float,
    ink: tuple[float, float, float],
    paper: tuple[float, float, float],
) -> Texture:
    """Text-like glyphs wrapped around the local Y axis: ``columns`` characters per turn, rows of
    height ``row_height`` stacked along Y. Characters outside the built-in 5x7 font render blank."""
    bitmaps = torch.tensor(
        [[[int(b) for b in row] for row in _FONT.get(ch, _FONT[" "])] for ch in text], dtype=torch.float64
    )  # [len(text), 7, 5]

    def tex(p: Tensor) -> Tensor:
        u = (torch.atan2(p[:, 0], p[:, 2]) / (2 * math.pi) + 0.5) * columns  # character columns
        v = -p[:, 1] / row_height  # character rows, downwards
        col, row = torch.floor(u), torch.floor(v)
        char = (col + row * 3).remainder(len(text)).long()
        # 1-cell margin around each 5x7 glyph: a 7x9 cell.
        fx = torch.floor((u - col) * 7).long() - 1
        fy = torch.floor((v - row) * 9).long() - 1
        inside = (fx >= 0) & (fx < 5) & (fy >= 0) & (fy < 7)
        bm = bitmaps.to(p.device)
        bit = torch.zeros_like(u)
        bit[inside] = bm[char[inside], fy[inside], fx[inside]].to(p.dtype)
        a = torch.tensor(paper, dtype=p.dtype, device=p.device)
        b = torch.tensor(ink, dtype=p.dtype, device=p.device)
        return a * (1 - bit[:, None]) + b * bit[:, None]

    return tex


# ---------------------------------------------------------------------------------------------------
# Shapes (exact signed distance functions; negative inside)


@dataclass
class Shape:
    """One analytic primitive.

    Attributes:
        kind: 'sphere' (size = (radius,)), 'box' (size = half extents (x, y, z)) or
            'torus' (size = (major radius, minor radius)), the torus' axis given by ``axis``.
        center: position in world space.
        axis: for a torus, the axis it turns around (0 = X, 1 = Y, 2 = Z).
        texture: colour as a function of the point in the shape's local (centred) frame.
    """

    kind: Literal["sphere", "box", "torus"]
    center: tuple[float, float, float]
    size: tuple[float, ...]
    axis: int = 1
    texture: Texture = field(default_factory=lambda: solid((0.7, 0.7, 0.7)))

    def local(self, p: Tensor) -> Tensor:
        """World points -> the shape's local frame (centred; a torus' axis mapped to +Y)."""
        q = p - torch.tensor(self.center, dtype=p.dtype, device=p.device)
        if self.kind == "torus" and self.axis != 1:
            # Cyclic permutation taking the torus axis to Y keeps the frame right-handed.
            q = q[:, [2, 0, 1]] if self.axis == 0 else q[:, [1, 2, 0]]
        return q

    def sdf(self, p: Tensor) -> Tensor:
        """[P, 3] world points -> [P] signed distance (exact Euclidean distance)."""
        q = self.local(p)
        if self.kind == "sphere":
            return q.norm(dim=-1) - self.size[0]
        if self.kind == "box":
            d = q.abs() - torch.tensor(self.size, dtype=p.dtype, device=p.device)
            outside = d.clamp(min=0).norm(dim=-1)
            inside = d.max(dim=-1).values.clamp(max=0)
            return outside + inside
        major, minor = self.size
        ring = torch.sqrt(q[:, 0] ** 2 + q[:, 2] ** 2) - major
        return torch.sqrt(ring**2 + q[:, 1] ** 2) - minor

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box (lo, hi) in world space."""
        c = np.asarray(self.center, dtype=np.float64)
        if self.kind == "sphere":
            h = np.full(3, self.size[0])
        elif self.kind == "box":
            h = np.asarray(self.size, dtype=np.float64)
        else:
            major, minor = self.size
            h = np.full(3, major + minor)
            h[self.axis] = minor
        return c - h, c + h

    def transformed(self, scale: float, offset: np.ndarray) -> Shape:
        """This shape scaled about the origin by ``scale``, then moved by ``offset``."""
        center = tuple(float(v) for v in np.asarray(self.center) * scale + offset)
        size = tuple(float(s) * scale for s in self.size)
        base_tex = self.texture

        # The texture keeps its look on the object: evaluate it in the original local frame.
        def tex(q: Tensor, _t: Texture = base_tex) -> Tensor:
            return _t(q / scale)

        return replace(self, center=center, size=size, texture=tex)

    def mesh(self, detail: int = 5):
        """Ground-truth triangle mesh of this primitive (trimesh), vertices on the exact surface."""
        import trimesh

        if self.kind == "sphere":
            m = trimesh.creation.icosphere(subdivisions=detail, radius=self.size[0])
        elif self.kind == "box":
            m = trimesh.creation.box(extents=[2 * s for s in self.size])
            # trimesh's box has 12 triangles: vertex colours at its 8 corners would turn a striped or
            # checkered texture into one smooth gradient (an object without any stereo cue). Edges no longer
            # than 1/2^(detail+1) carry the texture's bands, as the sphere's and torus' tessellations do.
            verts, faces = trimesh.remesh.subdivide_to_size(m.vertices, m.faces, max_edge=0.5 ** (detail + 1))
            m = trimesh.Trimesh(verts, faces, process=True)
        else:
            major, minor = self.size
            m = trimesh.creation.torus(
                major_radius=major, minor_radius=minor, major_sections=32 * detail, minor_sections=16 * detail
            )
            # trimesh's torus turns around Z; map Z to this torus' axis.
            if self.axis == 1:
                m.apply_transform(trimesh.transformations.rotation_matrix(-math.pi / 2, [1, 0, 0]))
            elif self.axis == 0:
                m.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [0, 1, 0]))
        m.apply_translation(self.center)
        return m


@dataclass
class Scene:
    """A union of analytic shapes (the SDF is the minimum of theirs)."""

    name: str
    shapes: list[Shape]

    def sdf(self, p: Tensor) -> Tensor:
        """[P, 3] -> [P] signed distance to the union."""
        return torch.stack([s.sdf(p) for s in self.shapes], dim=0).min(dim=0).values

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        los, his = zip(*(s.bounds() for s in self.shapes), strict=True)
        return np.min(los, axis=0), np.max(his, axis=0)

    def normalized(self) -> Scene:
        """The scene scaled so its largest bounding-box extent is 1 and its box is centred at 0."""
        lo, hi = self.bounds()
        scale = 1.0 / float((hi - lo).max())
        offset = -(lo + hi) / 2.0 * scale
        return Scene(self.name, [s.transformed(scale, offset) for s in self.shapes])

    def color(self, p: Tensor) -> Tensor:
        """[P, 3] surface points -> [P, 3] albedo of the nearest shape."""
        d = torch.stack([s.sdf(p) for s in self.shapes], dim=0)
        owner = d.abs().argmin(dim=0)
        out = torch.zeros(p.shape[0], 3, dtype=p.dtype, device=p.device)
        for i, s in enumerate(self.shapes):
            sel = owner == i
            if sel.any():
                out[sel] = s.texture(s.local(p[sel])).to(p.dtype)
        return out

    def normal(self, p: Tensor, eps: float = 1e-6) -> Tensor:
        """[P, 3] -> [P, 3] outward unit normals (central differences of the SDF)."""
        grads = []
        for k in range(3):
            e = torch.zeros(3, dtype=p.dtype, device=p.device)
            e[k] = eps
            grads.append(self.sdf(p + e) - self.sdf(p - e))
        return torch.nn.functional.normalize(torch.stack(grads, dim=-1), dim=-1)

    def mesh(self, detail: int = 5):
        """Ground-truth mesh of the union (booleans through manifold3d) with vertex colours."""
        import trimesh

        parts = [s.mesh(detail) for s in self.shapes]
        mesh = parts[0] if len(parts) == 1 else trimesh.boolean.union(parts, engine="manifold")
        verts = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float64))
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba_uint8(self.color(verts).numpy()))
        return mesh

    def occupancy(self, points: Tensor) -> Tensor:
        """[P, 3] -> [P] bool, True inside the solid (exact)."""
        return self.sdf(points.to(torch.float64)) < 0


# ---------------------------------------------------------------------------------------------------
# Scenes


def _scene_shapes(name: str) -> list[Shape]:
    warm, cool = (0.85, 0.35, 0.2), (0.2, 0.45, 0.8)
    cream, ink = (0.93, 0.88, 0.75), (0.1, 0.1, 0.12)
    if name == "sphere":
        return [Shape("sphere", (0, 0, 0), (0.5,), texture=checker(0.2, warm, cream))]
    if name == "box":
        return [Shape("box", (0, 0, 0), (0.5, 0.35, 0.25), texture=stripes(0.2, 1, cool, cream))]
    if name == "printed_box":
        # The box above printed like a product's packaging: text in both directions on every side, which gives
        # the flat faces the horizontal disparity that the box's bands lack.
        return [Shape("box", (0, 0, 0), (0.5, 0.35, 0.25), texture=glyphs("ORBITMESH 3D ", 24, 0.0875, ink, cream))]
    if name == "torus":
        return [Shape("torus", (0, 0, 0), (0.35, 0.15), axis=2, texture=checker(0.15, warm, cool))]
    if name == "union":
        return [
            Shape("box", (0, -0.15, 0), (0.3, 0.2, 0.3), texture=stripes(0.12, 0, cool, cream)),
            Shape("sphere", (0, 0.2, 0), (0.25,), texture=checker(0.12, warm, cream)),
        ]
    if name == "toy":
        # Body with text, a head, a handle and a nose: non-convex, with a hole (genus 1).
        return [
            Shape("box", (0, -0.08, 0), (0.24, 0.2, 0.16), texture=glyphs("ORBITMESH 3D ", 12, 0.1, ink, cream)),
            Shape("sphere", (0, 0.25, 0), (0.15,), texture=checker(0.1, warm, cream)),
            Shape("torus", (0.36, -0.08, 0), (0.15, 0.045), axis=2, texture=stripes(0.08, 1, cool, warm)),
            Shape("sphere", (-0.28, -0.02, 0), (0.1,), texture=solid((0.3, 0.6, 0.35))),
        ]
    raise ValueError(f"unknown scene {name!r}; scenes: {', '.join(SCENES)}")


SCENES = ("sphere", "box", "printed_box", "torus", "union", "toy")
"""Names accepted by ``make_scene``."""


def make_scene(name: str) -> Scene:
    """A named analytic scene, normalised per CONVENTIONS.md."""
    return Scene(name, _scene_shapes(name)).normalized()


# ---------------------------------------------------------------------------------------------------
# Ray casting


def sphere_trace(scene: Scene, origins: Tensor, dirs: Tensor, max_steps: int = 512, eps: float = 1e-7) -> Tensor:
    """Distance along each ray to the first surface hit (inf where the ray misses).

    Args:
        origins, dirs: [R, 3] float64, unit directions.
    Returns:
        [R] float64 ray parameter of the hit.
    """
    # Start at the bounding sphere of the normalised scene (radius sqrt(3)/2 + margin).
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - 0.9**2
    disc = b * b - c
    t = torch.full_like(b, math.inf)
    active = disc > 0
    t_far = torch.where(active, -b + torch.sqrt(disc.clamp(min=0)), torch.zeros_like(b))
    t_cur = torch.where(active, (-b - torch.sqrt(disc.clamp(min=0))).clamp(min=0), torch.zeros_like(b))
    idx = torch.nonzero(active).squeeze(1)
    for _ in range(max_steps):
        if idx.numel() == 0:
            break
        d = scene.sdf(origins[idx] + dirs[idx] * t_cur[idx, None])
        hit = d < eps
        t[idx[hit]] = t_cur[idx[hit]]
        t_cur[idx] = t_cur[idx] + d
        keep = ~hit & (t_cur[idx] < t_far[idx])
        idx = idx[keep]
    return t


def render_view(
    scene: Scene,
    cameras: Cameras,
    view: int,
    supersample: int = 3,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    light: SoftLight | None = None,
) -> tuple[Tensor, Tensor]:
    """Render one view by exact ray casting, antialiased by ``supersample``² stratified samples.

    Returns:
        rgb: [H, W, 3] float32 sRGB in [0, 1] over ``background``; alpha: [H, W] float32 coverage.
    """
    H, W, s = cameras.height, cameras.width, supersample
    offs = (torch.arange(s, dtype=torch.float64) + 0.5) / s
    ys = (torch.arange(H, dtype=torch.float64)[:, None] + offs[None, :]).reshape(-1)
    xs = (torch.arange(W, dtype=torch.float64)[:, None] + offs[None, :]).reshape(-1)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # [H*s, W*s]
    xy = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)
    cams64 = Cameras(cameras.c2w.double(), cameras.K.double(), W, H)
    o, d = cams64.rays(torch.full((xy.shape[0],), view, dtype=torch.long), xy)
    o = o.expand_as(d).contiguous()
    t = sphere_trace(scene, o, d)
    hit = torch.isfinite(t)
    color = torch.zeros(xy.shape[0], 3, dtype=torch.float64)
    if hit.any():
        p = o[hit] + d[hit] * t[hit, None]
        albedo = scene.color(p)
        if light is not None:
            n = scene.normal(p)
            albedo = light.shade(albedo, n)
        color[hit] = albedo
    bg = torch.tensor(background, dtype=torch.float64)
    color = torch.where(hit[:, None], color, bg)
    # Average the s x s samples of each pixel.
    color = color.reshape(H, s, W, s, 3).mean(dim=(1, 3))
    alpha = hit.double().reshape(H, s, W, s).mean(dim=(1, 3))
    return color.float().clamp(0, 1), alpha.float()


def sv3d_orbit_angles(
    n_frames: int = SV3D_FRAMES,
    elevation_deg: float = SV3D_ELEVATION_DEG,
    dynamic_amplitude_deg: float = 0.0,
    phase_deg: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Elevations and azimuths of an SV3D orbit.

    Static when ``dynamic_amplitude_deg`` is 0; otherwise the elevation follows
    ``elevation + amplitude * sin(azimuth + phase)`` (SV3D_p's dynamic orbits stay within ±30°).

    Returns:
        elevations_deg, azimuths_deg: [n_frames] float64.
    """
    az = sv3d_azimuths(n_frames)
    elev = elevation_deg + dynamic_amplitude_deg * torch.sin(torch.deg2rad(az + phase_deg))
    return elev, az


def render_orbit(
    scene: Scene,
    elevations_deg: Tensor,
    azimuths_deg: Tensor,
    size: int = 128,
    fov_deg: float = SV3D_FOV_DEG,
    radius: float = SV3D_RADIUS,
    supersample: int = 3,
    light: SoftLight | None = None,
    progress: bool = False,
) -> Orbit:
    """Render an SV3D-style orbit of an analytic scene (white background).

    Returns:
        an ``Orbit`` of kind 'synthetic' whose masks are the exact coverage (alpha).
    """
    cams = orbit_cameras(elevations_deg, azimuths_deg, radius, fov_deg, size)
    images, alphas = [], []
    views = range(len(cams))
    if progress:
        from recon.log import track

        views = track(views, description=f"ray casting {scene.name}", total=len(cams))
    for v in views:
        rgb, a = render_view(scene, cams, v, supersample, light=light)
        images.append(rgb)
        alphas.append(a)
    return Orbit(
        images=torch.stack(images),
        masks=torch.stack(alphas),
        cameras=cams,
        background=(1.0, 1.0, 1.0),
        elevations_deg=elevations_deg.to(torch.float64),
        azimuths_deg=azimuths_deg.to(torch.float64),
        radius=radius,
        fov_deg=fov_deg,
        source=f"synthetic:{scene.name}",
        kind="synthetic",
        frame_names=[f"{i:03d}.png" for i in range(len(cams))],
        mask_source="alpha",
    )

"""Coarse field -> PyMCubes marching cubes -> cleaned coarse mesh with vertex colours from the field.

The field's density is only trustworthy where the views see its surface, so the volume handed to marching
cubes is the field's surface *as observed*: each input view's surface depth (where opacity reaches 0.5)
carves the space in front of it; what every view sees behind the surface is solid. The level is not a
magic constant: shifts of up to a few cells are tried, each candidate mesh is rasterized into the input
cameras, and the one whose silhouettes best match the input masks (mean IoU) wins. Floaters and tiny
components are removed; faces are oriented outwards.
"""

from __future__ import annotations

import logging

import mcubes
import numpy as np
import torch
from torch import Tensor

from recon.coarse.config import ExtractConfig
from recon.coarse.occupancy import Occupancy
from recon.data.cameras import pixel_index
from recon.render import rasterize
from recon.render.views import clip_positions
from recon.types import CoarseField, Mesh, Orbit

log = logging.getLogger(__name__)


def fill_cavities(volume: np.ndarray, level: float) -> np.ndarray:
    """Raise the density of enclosed cavities above ``level``.

    Nothing supervises density inside an opaque object, so fields are often hollow there; marching
    cubes would then add an inner shell. Regions above the level enclose the cavities; flood-filling
    from outside finds them.
    """
    from scipy import ndimage

    solid = volume > level
    filled = ndimage.binary_fill_holes(solid)
    out = volume.copy()
    out[filled & ~solid] = level + abs(level) + 1.0
    return out


def close_at_border(volume: np.ndarray, level: float) -> np.ndarray:
    """``volume`` with its border voxels that are inside (above ``level``) moved outside, mirrored across the
    level from their inward neighbours: marching cubes then bounds a closed surface that crosses the border
    cells halfway. Only an inside that reaches the border changes (an object the views crop: its hull runs
    out of the grid); without this the mesh is open there."""
    out = volume.copy()
    for axis in range(3):
        for border, inner in ((0, 1), (-1, -2)):
            b = [slice(None)] * 3
            i = [slice(None)] * 3
            b[axis], i[axis] = border, inner
            mirrored = level - np.maximum(np.abs(out[tuple(i)] - level), 1e-6)
            out[tuple(b)] = np.where(out[tuple(b)] > level, mirrored, out[tuple(b)])
    return out


def _marching_cubes(volume: np.ndarray, level: float, bound: float) -> tuple[np.ndarray, np.ndarray]:
    volume = close_at_border(fill_cavities(volume, level), level)
    verts, faces = mcubes.marching_cubes(volume, level)
    if len(faces) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    spacing = 2 * bound / (volume.shape[0] - 1)
    verts = verts * spacing - bound
    # PyMCubes' winding depends on whether inside is above the level.
    return verts, orient_outwards(verts, faces.astype(np.int64))


def orient_outwards(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces [F, 3] wound so the mesh's signed volume is positive (normals point outwards)."""
    tri = verts[faces]
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    return faces[:, [0, 2, 1]] if signed < 0 else faces


def remove_small_components(verts: np.ndarray, faces: np.ndarray, min_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop connected components whose area is below ``min_frac`` of the largest's."""
    import trimesh

    if len(faces) == 0:
        return verts, faces
    mesh = trimesh.Trimesh(verts, faces, process=False)
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(faces))
    areas = np.bincount(labels, weights=mesh.area_faces)
    keep = areas >= min_frac * areas.max()
    kept = keep[labels]
    mesh.update_faces(kept)
    mesh.remove_unreferenced_vertices()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def silhouette_iou(verts: np.ndarray, faces: np.ndarray, orbit: Orbit, size: int) -> float:
    """Mean IoU between the mesh's rasterized silhouettes and the orbit's masks at ``size``²."""
    if len(faces) == 0:
        return 0.0
    cams = orbit.cameras.scaled(size, size)
    masks = torch.nn.functional.interpolate(orbit.masks[:, None].cpu(), size=(size, size), mode="area")[:, 0] > 0.5
    pos = clip_positions(torch.from_numpy(verts).float(), cams)
    rast = rasterize(pos, torch.from_numpy(faces).int(), (size, size))
    sil = rast[..., 3] > 0
    inter = (sil & masks).flatten(1).sum(1).float()
    union = (sil | masks).flatten(1).sum(1).float().clamp(min=1)
    return float((inter / union).mean())


@torch.no_grad()
def surface_depths(field: CoarseField, orbit: Orbit, size: int, chunk: int = 16384,
                   opacity: float = 0.5) -> tuple[Tensor, object]:
    """Distance along each pixel's ray to where the field's opacity reaches 0.5, for every input view at
    ``size``² (inf where the ray stays mostly transparent). Returns (depths [N, size, size], cameras)."""
    from recon.coarse.render import render_camera

    cams = orbit.cameras.to("cpu").scaled(size, size)
    occ = Occupancy(field.occupancy, field.bound)
    step = 2 * field.bound / 256
    out = torch.stack([render_camera(field.field, occ, cams, v, step, torch.ones(3), chunk, opacity).surface
                       for v in range(len(cams))])
    return out.reshape(len(cams), size, size), cams


FAR = 10.0
"""Margin given where a point projects outside a view's mask: it is certainly empty space."""


def carve_margin(points: Tensor, depths: Tensor, masks: Tensor, cams, robust_rank: int = 1) -> Tensor:
    """How far each point lies in front of the observed surface, robustly over the views.

    Per view: where the pixel has a surface depth, ``depth - distance`` (bilinear over the finite
    neighbours); where it has none but lies inside the input mask, no information (-inf); outside the
    mask, ``FAR`` (empty). The result is the (``robust_rank``+1)-th largest per-view value, so one wrong
    view cannot carve the object. Positive: empty space; negative: behind the surface everywhere.

    Args:
        points: [P, 3]; depths: [N, H, W] (inf where no surface); masks: [N, H, W] bool input masks.
    Returns:
        [P] margins in world units (-inf where no view says anything).
    """
    N, H, W = depths.shape
    xy, _ = cams.project(points)  # [N, P, 2]
    dist = (points[None] - cams.centers[:, None]).norm(dim=-1)  # [N, P]
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < W) & (xy[..., 1] >= 0) & (xy[..., 1] < H)
    grid = torch.stack([xy[..., 0] / W * 2 - 1, xy[..., 1] / H * 2 - 1], -1)[:, None]  # [N, 1, P, 2]
    finite = torch.isfinite(depths)
    num = torch.nn.functional.grid_sample(torch.where(finite, depths, 0.0)[:, None], grid, mode="bilinear",
                                          padding_mode="border", align_corners=False)[:, 0, 0]
    den = torch.nn.functional.grid_sample(finite[:, None].float(), grid, mode="bilinear", padding_mode="border",
                                          align_corners=False)[:, 0, 0]
    px, _ = pixel_index(xy, W, H)  # out-of-image points are dropped by `inside` below
    in_mask = masks[torch.arange(N)[:, None], px[..., 1], px[..., 0]]
    has_depth = den > 0.5
    margin = torch.full_like(dist, -float("inf"))
    margin = torch.where(has_depth, num / den.clamp(min=1e-6) - dist, margin)
    margin = torch.where(~has_depth & ~in_mask, torch.full_like(dist, FAR), margin)
    margin = torch.where(inside, margin, torch.full_like(dist, -float("inf")))
    k = min(robust_rank, N - 1)
    return margin.topk(k + 1, dim=0).values[k]


def _grid_points(resolution: int, bound: float) -> Tensor:
    """[R^3, 3] grid points spanning [-bound, bound]^3 (endpoints included), x slowest."""
    lin = torch.linspace(-bound, bound, resolution)
    gx, gy, gz = torch.meshgrid(lin, lin, lin, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), gz.reshape(-1)], -1)


def resample_volume(volume: Tensor, resolution: int) -> Tensor:
    """Trilinear resampling of a finite [R, R, R] grid-point volume to ``resolution``^3 (same extent)."""
    up = torch.nn.functional.interpolate(volume[None, None], size=(resolution,) * 3, mode="trilinear",
                                         align_corners=True)
    return up[0, 0]


def with_floor(inside: Tensor, above_floor: Tensor, level: float) -> Tensor:
    """The inside-ness field whose ``level`` set is the surface of ``inside >= level`` cut by the floor plane
    ``above_floor = y - floor >= 0`` (broadcastable to ``inside``; the cut stays at the floor whatever the
    level)."""
    return torch.minimum(inside, above_floor + level)


def choose_offset(
    inside: np.ndarray, bound: float, orbit: Orbit, cfg: ExtractConfig, cell: float
) -> tuple[float, float]:
    """The level of the inside-ness field (``-margin``, world units) whose mesh silhouettes best match the
    masks: a shift of the surface by up to ``cfg.max_offset_cells`` cells. Returns (level, IoU)."""
    def score(level: float) -> float:
        v, f = _marching_cubes(inside, level, bound)
        v, f = remove_small_components(v, f, cfg.min_component_frac)
        return silhouette_iou(v, f, orbit, cfg.silhouette_size)

    n = int(round(4 * cfg.max_offset_cells)) + 1  # half-cell steps
    levels = np.linspace(-cfg.max_offset_cells, cfg.max_offset_cells, n) * cell
    scores = [score(lv) for lv in levels]
    best = int(np.argmax(scores))
    return float(levels[best]), float(scores[best])


def observed_heights(depths: Tensor, cams, quantile: float = 0.001) -> tuple[float, float]:
    """Heights (y) of the lowest and highest surface points the views observed (robust extremes over the
    back-projected depth pixels; (-inf, inf) when no pixel has a depth). Below the lowest no view saw
    matter: orbits that look down on the object leave a wedge under it that every view sees only through
    the object, and which would otherwise stay solid."""
    N = depths.shape[0]
    ys = []
    for v in range(N):
        o, d = cams.pixel_rays(v)
        t = depths[v]
        ok = torch.isfinite(t)
        ys.append((o[..., 1] + d[..., 1] * t)[ok])
    y = torch.cat(ys)
    if y.numel() == 0:
        return -float("inf"), float("inf")
    if y.numel() >= 16_000_000:  # torch.quantile's limit
        return float(y.min()), float(y.max())
    low, high = torch.quantile(y, torch.tensor([quantile, 1 - quantile]))
    return float(low), float(high)


def floor_height(low: float, high: float, centred_object: bool) -> float:
    """Where the coarse mesh is cut: the lowest observed height ``low``, or, for an object whose box is
    centred at the origin, down to ``-high`` when that is lower. A ball seen from 10 degrees above shows
    neither its underside nor, with perspective, its silhouette below about 0.9 of its radius; its top is
    seen, and the centred box puts its bottom opposite. A flat-bottomed object's observed floor is already
    there, and an object that is not centred only gets back part of the hidden wedge."""
    return min(low, -high) if centred_object else low


@torch.no_grad()
def project_colors(verts: Tensor, faces: Tensor, orbit: Orbit, size: int = 256) -> Tensor:
    """Vertex colours from the input images: each vertex takes the average of the pixels it projects to in
    the views where it is visible (depth-tested through the rasterizer), weighted by how squarely the view
    sees it (cos of the angle between its normal and the view ray). Vertices no view sees get the mean
    colour of all seen vertices.

    Returns:
        [V, 3] float32 sRGB in [0, 1].
    """
    from recon.render.views import vertex_normals

    cams = orbit.cameras.to("cpu").scaled(size, size)
    images = torch.nn.functional.interpolate(orbit.images.cpu().permute(0, 3, 1, 2), size=(size, size),
                                             mode="area").permute(0, 2, 3, 1)
    normals = vertex_normals(verts, faces)
    acc = torch.zeros(len(verts), 3)
    wsum = torch.zeros(len(verts))
    for v in range(len(cams)):
        cam = cams.subset([v])
        pos = clip_positions(verts, cam)
        rast = rasterize(pos, faces.int(), (size, size))[0]
        xy, _ = cam.project(verts)
        px, ok = pixel_index(xy[0], size, size)
        zbuf = rast[px[:, 1], px[:, 0], 2]
        covered = rast[px[:, 1], px[:, 0], 3] > 0
        zw = pos[0, :, 2] / pos[0, :, 3]
        visible = ok & covered & (zw <= zbuf + 2e-3)  # in front of (or on) the nearest surface
        view_dir = torch.nn.functional.normalize(cam.centers[0] - verts, dim=-1)
        weight = (normals * view_dir).sum(-1).clamp(min=0) * visible
        acc += weight[:, None] * images[v][px[:, 1], px[:, 0]]
        wsum += weight
    seen = wsum > 1e-6
    colors = torch.where(seen[:, None], acc / wsum.clamp(min=1e-6)[:, None], acc.sum(0) / wsum.sum().clamp(min=1e-6))
    return colors.clamp(0, 1)


@torch.no_grad()
def extract_mesh(cfg: ExtractConfig, field: CoarseField, orbit: Orbit) -> tuple[Mesh, dict[str, float]]:
    """The coarse mesh: the field's surface as seen from the input views, as a watertight solid.

    1. Render each view's surface depth (where the field's opacity reaches 0.5).
    2. The inside-ness of a point is minus the largest amount by which it lies in front of an observed
       surface in any view (positive: behind the surface in every view). Its zero set is the depth hull:
       concavities the views see are carved, the unobserved interior is solid (a density field is noise
       there, nothing supervises it).
    3. Marching cubes at the level (a shift of at most a few cells) whose silhouettes best match the
       masks, on a coarser grid; then at full resolution.
    4. Floaters removed, faces oriented outwards, vertex colours from the field.
    Returns the mesh and statistics.
    """
    depths, cams = surface_depths(field, orbit, cfg.depth_size, opacity=cfg.depth_opacity)
    size = (cfg.depth_size, cfg.depth_size)
    masks = torch.nn.functional.interpolate(orbit.masks[:, None].cpu(), size=size, mode="area")[:, 0] > 0.5
    occupancy = Occupancy(field.occupancy, field.bound).dilated(1)

    def inside_at(points: Tensor) -> Tensor:
        # Minus the margin; where no view says anything, or outside the occupancy (visual hull refreshed from
        # density), there is no evidence of matter: empty.
        margin = torch.cat([carve_margin(p, depths, masks, cams, cfg.robust_rank) for p in points.split(1 << 20)])
        inside = torch.where(torch.isfinite(margin) & occupancy.lookup(points), -margin, torch.full_like(margin, -FAR))
        return inside.clamp(-FAR, FAR)

    small = inside_at(_grid_points(cfg.search_resolution, field.bound)).reshape((cfg.search_resolution,) * 3)
    cell = 2 * field.bound / (cfg.search_resolution - 1)
    level, iou = choose_offset(small.numpy(), field.bound, orbit, cfg, cell)
    # Below the lowest observed surface point there is no evidence of matter either: the wedge under an
    # object seen from above is hidden in every view. The cut stays at that height whatever the level (the
    # level corrects the depths' bias, the floor is a height), and it hardly changes silhouettes, so the
    # level is chosen without it. (A ball's underside below where its depths and silhouettes reach is cut
    # flat too, unless the object is taken as centred: see ``floor_height``.)
    low, high = observed_heights(depths, cams)
    floor = floor_height(low, high, cfg.centred_object)
    # Full resolution: upsampled as a first guess, recomputed exactly near the surface (interpolating across
    # the field's jumps at mask and hull borders would move the surface).
    inside = resample_volume(small, cfg.resolution)
    # y - floor at the grid points (y is the grid's second axis), broadcast over x and z.
    above_floor = (torch.linspace(-field.bound, field.bound, cfg.resolution) - floor).view(1, -1, 1)
    near = ((with_floor(inside, above_floor, level) - level).abs() < 2 * cell).reshape(-1)
    flat = inside.reshape(-1)
    flat[near] = inside_at(_grid_points(cfg.resolution, field.bound)[near])
    inside = with_floor(flat.reshape(inside.shape), above_floor, level).numpy()
    verts, faces = _marching_cubes(inside, level, field.bound)
    verts, faces = remove_small_components(verts, faces, cfg.min_component_frac)
    v = torch.from_numpy(verts).float()
    colors = project_colors(v, torch.from_numpy(faces), orbit) if len(v) else torch.zeros(0, 3)
    final_iou = silhouette_iou(verts, faces, orbit, cfg.silhouette_size)
    stats = {"floor_y": floor, "observed_low_y": low, "observed_high_y": high, "level_offset": level,
             "search_silhouette_iou": iou, "silhouette_iou": final_iou, "faces": int(len(faces))}
    log.info("coarse mesh: %d faces, surface offset %.4f, silhouette IoU %.3f", len(faces), level, final_iou)
    return Mesh(v, torch.from_numpy(faces), colors.clamp(0, 1)), stats

"""GSO-protocol metrics (shared/CONVENTIONS.md, Evaluation).

- Both meshes normalised: largest bounding-box extent 1, box centred at the origin (optional).
- Chamfer distance: mean of the two directed mean nearest-neighbour L2 (not squared) distances, on
  area-sampled surface points (100k by default) and on vertices (as SV3D's table).
- F-score at 0.01 / 0.02 / 0.05 on the area-sampled points.
- Normal agreement on the same points (nearest neighbours both ways): normal consistency (mean |cos|)
  and the median / 90th-percentile angle between oriented face normals, in degrees.
- Volume IoU: occupancy on a 64^3 grid over [-0.5, 0.5]^3 (recon.eval.occupancy).
- 2D: PSNR / SSIM of unlit renders of both meshes along held-out orbit cameras, white background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from recon.data.cameras import Cameras, orbit_cameras
from recon.data.synthetic import sv3d_orbit_angles
from recon.eval.occupancy import occupancy_grid
from recon.render.mesh import RenderMesh
from recon.render.views import render_views

F_THRESHOLDS = (0.01, 0.02, 0.05)


@dataclass
class EvalConfig:
    """How two meshes are compared (GSO protocol)."""

    normalize: bool = True
    """Normalise both meshes to largest extent 1, centred, before comparing."""
    samples: int = 100_000
    """Area-sampled surface points per mesh for Chamfer and F-score."""
    iou_resolution: int = 64
    """Voxels per side of the IoU grid over [-0.5, 0.5]^3."""
    views: int = 21
    """Held-out views rendered for PSNR/SSIM (0 skips the 2D metrics)."""
    view_size: int = 256
    """Side of the rendered views in pixels."""
    elevation_deg: float = 10.0
    """Mean elevation of the held-out orbit."""
    dynamic_amplitude_deg: float = 20.0
    """Elevation swing of the held-out (dynamic) orbit, so it differs from the static input orbit."""
    azimuth_offset_deg: float = 360.0 / 42.0
    """Azimuth offset of the held-out views from SV3D's input azimuths (half a step: unseen views)."""
    seed: int = 0
    """Seed of the surface sampling."""


def sample_surface(verts: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """[n, 3] points uniformly distributed over the surface area (seeded)."""
    return sample_surface_faces(verts, faces, n, seed)[0]


def sample_surface_faces(verts: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[n, 3] area-uniform surface points (seeded) and [n] the index of the face each lies on."""
    rng = np.random.default_rng(seed)
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        raise ValueError("mesh has zero surface area")
    idx = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    b0, b1, b2 = 1 - s, s * (1 - r2), s * r2
    t = tri[idx]
    return b0[:, None] * t[:, 0] + b1[:, None] * t[:, 1] + b2[:, None] * t[:, 2], idx


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F, 3] unit normals of counter-clockwise faces (zero for degenerate faces)."""
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


def normal_errors(pred_points: np.ndarray, pred_normals: np.ndarray, gt_points: np.ndarray,
                  gt_normals: np.ndarray) -> dict[str, float]:
    """Surface-normal agreement between two sampled surfaces (points [N, 3], unit normals [N, 3]).

    Each point is paired with its nearest neighbour on the other surface, in both directions.
    ``normal_consistency``: mean |cos| over both directions (Occupancy Networks' metric; 1 is perfect,
    orientation ignored). ``normal_angle_median`` / ``normal_angle_p90``: degrees between the oriented
    normals (a flipped face counts 180), median and 90th percentile over both directions: how bumpy
    a surface is where the distances are small.
    """
    i_gt = cKDTree(gt_points).query(pred_points, workers=-1)[1]
    i_pred = cKDTree(pred_points).query(gt_points, workers=-1)[1]
    cos = np.concatenate([(pred_normals * gt_normals[i_gt]).sum(1), (gt_normals * pred_normals[i_pred]).sum(1)])
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return {"normal_consistency": float(np.abs(cos).mean()), "normal_angle_median": float(np.median(angle)),
            "normal_angle_p90": float(np.percentile(angle, 90))}


def chamfer_and_fscore(pred: np.ndarray, gt: np.ndarray, thresholds=F_THRESHOLDS) -> dict[str, float]:
    """Chamfer (mean of the two directed mean L2 distances) and F-scores between point sets."""
    d_pred = cKDTree(gt).query(pred, workers=-1)[0]  # pred -> gt (accuracy)
    d_gt = cKDTree(pred).query(gt, workers=-1)[0]  # gt -> pred (completeness)
    out = {"chamfer": float(0.5 * (d_pred.mean() + d_gt.mean()))}
    for t in thresholds:
        precision = float((d_pred < t).mean())
        recall = float((d_gt < t).mean())
        f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        out[f"fscore@{t:g}"] = f
    return out


def mesh_genus(verts: np.ndarray, faces: np.ndarray) -> float:
    """Genus of a closed mesh [V, 3] / [F, 3] (vertices merged first), summed over its bodies, from the
    Euler characteristic: (2 bodies - chi) / 2. NaN when the merged mesh is not closed."""
    import trimesh

    m = trimesh.Trimesh(verts, faces, process=True)
    if not m.is_watertight:
        return float("nan")
    bodies = len(m.split(only_watertight=False))
    return float((2 * bodies - m.euler_number) / 2)


def normalize_vertices(verts: np.ndarray) -> np.ndarray:
    """Largest bounding-box extent 1, box centred at the origin."""
    lo, hi = verts.min(0), verts.max(0)
    return (verts - (lo + hi) / 2) / float((hi - lo).max())


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of images in [0, 1] (over all pixels and channels); identical images give 100 dB, not
    infinity (means and JSON stay finite)."""
    mse = max(float(((a - b) ** 2).mean()), 1e-10)
    return 10 * math.log10(1.0 / mse)


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5, per channel) of [N, H, W, C] in [0, 1]."""
    x = a.permute(0, 3, 1, 2).double()
    y = b.permute(0, 3, 1, 2).double()
    C = x.shape[1]
    g = torch.exp(-((torch.arange(window, dtype=torch.float64) - window // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(C, 1, window, window)

    def blur(t: Tensor) -> Tensor:
        return torch.nn.functional.conv2d(t, k, groups=C)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def heldout_cameras(cfg: EvalConfig) -> Cameras:
    """The held-out (dynamic, azimuth-offset) SV3D orbit the 2D metrics are rendered along."""
    elev, azim = sv3d_orbit_angles(cfg.views, cfg.elevation_deg, cfg.dynamic_amplitude_deg)
    return orbit_cameras(elev, (azim + cfg.azimuth_offset_deg) % 360, 2.0, 33.8, cfg.view_size)


def evaluate_meshes(pred: RenderMesh, gt: RenderMesh, cfg: EvalConfig | None = None) -> dict[str, float]:
    """All GSO metrics of ``pred`` against ``gt``. Returns a flat dict of floats."""
    cfg = cfg or EvalConfig()
    pv, gv = pred.verts.double().numpy(), gt.verts.double().numpy()
    pf, gf = pred.faces.long().numpy(), gt.faces.long().numpy()
    if cfg.normalize:
        pv, gv = normalize_vertices(pv), normalize_vertices(gv)
    out: dict[str, float] = {}
    p_points, p_faces = sample_surface_faces(pv, pf, cfg.samples, cfg.seed)
    g_points, g_faces = sample_surface_faces(gv, gf, cfg.samples, cfg.seed + 1)
    area = chamfer_and_fscore(p_points, g_points)
    out.update({k if k != "chamfer" else "chamfer_area": v for k, v in area.items()})
    out.update(normal_errors(p_points, face_normals(pv, pf)[p_faces], g_points, face_normals(gv, gf)[g_faces]))
    out["chamfer_vertex"] = chamfer_and_fscore(pv, gv, ())["chamfer"]
    occ_p = occupancy_grid(pv, pf, cfg.iou_resolution)
    occ_g = occupancy_grid(gv, gf, cfg.iou_resolution)
    union = int((occ_p | occ_g).sum())
    out["iou"] = float((occ_p & occ_g).sum() / union) if union else 0.0
    if cfg.views > 0:
        p_mesh = RenderMesh(torch.from_numpy(pv).float(), pred.faces, pred.colors, pred.uvs, pred.face_material,
                            pred.textures, pred.material_colors)
        g_mesh = RenderMesh(torch.from_numpy(gv).float(), gt.faces, gt.colors, gt.uvs, gt.face_material,
                            gt.textures, gt.material_colors)
        cams = heldout_cameras(cfg)
        rp, _ = render_views(p_mesh, cams, supersample=2)
        rg, _ = render_views(g_mesh, cams, supersample=2)
        out["psnr"] = psnr(rp, rg)
        out["ssim"] = ssim(rp, rg)
    return out

"""Loading and writing orbits: orbit folders, videos and transforms.json (shared/CONVENTIONS.md, Files).

Accepted inputs of ``load_orbit``:
- an **orbit folder**: frames ``000.png ...`` (any count >= 4, square, one size) plus ``orbit.json``;
  without ``orbit.json`` and with exactly 21 frames, SV3D's static default orbit is assumed (and said);
- a **video** (``.mp4 .gif .webm .mov .mkv``) with ``orbit.json`` beside it, or a folder holding one video;
- a **transforms.json** (nerfstudio / instant-ngp), or a folder holding one, for arbitrary posed views.

Every problem with the input raises ``InputError`` whose message names the file and the problem.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.config import DataConfig
from recon.data.cameras import (
    SV3D_ELEVATION_DEG,
    SV3D_FOV_DEG,
    SV3D_FRAMES,
    SV3D_RADIUS,
    Cameras,
    orbit_cameras,
    rigid_error,
    sv3d_azimuths,
)
from recon.data.images import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    composite,
    mask_from_background,
    read_image,
    read_video,
    touches_border,
)
from recon.errors import InputError
from recon.io import write_json, write_png
from recon.types import Orbit

log = logging.getLogger(__name__)

MIN_FRAMES = 4
"""Fewer views than this cannot constrain a reconstruction."""
ORBIT_JSON_KEYS = {"elevations_deg", "azimuths_deg", "fov_deg", "radius", "azimuth_direction", "background"}
RIGID_TOLERANCE = 2e-3
"""Largest accepted deviation of a pose's rotation from orthonormal (see cameras.rigid_error)."""


def _natural_key(path: Path) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def load_orbit(path: str | Path, cfg: DataConfig | None = None) -> Orbit:
    """Load an orbit folder, a video with orbit.json, or a transforms.json (see module docstring).

    Raises:
        InputError: naming the file and the problem.
    """
    cfg = cfg or DataConfig()
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            if path.name == "orbit.json":
                return load_orbit(path.parent, cfg)
            return _load_transforms(path, cfg)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return _load_video(path, path.parent / "orbit.json", cfg)
        raise InputError(path, "not an orbit folder, a video or a transforms.json")
    frames = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if (path / "transforms.json").is_file() and not (path / "orbit.json").is_file():
        return _load_transforms(path / "transforms.json", cfg)
    if frames:
        return _load_frames_folder(path, frames, cfg)
    videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if len(videos) == 1:
        return _load_video(videos[0], path / "orbit.json", cfg)
    if len(videos) > 1:
        names = ", ".join(v.name for v in videos)
        raise InputError(path, f"several videos ({names}); pass the one to use")
    raise InputError(
        path, f"no images ({', '.join(IMAGE_SUFFIXES)}), video or transforms.json found"
    )


# ---------------------------------------------------------------------------------------------------
# orbit.json


def read_json(path: Path) -> Any:
    """Parse a JSON file; unreadable or invalid files raise InputError naming the file."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None


def _finite_number(value: Any, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(path, f"{key} must be a finite number, got {value!r}")
    return float(value)


def _angles(value: Any, n: int, path: Path, key: str) -> torch.Tensor:
    """A per-frame list (or one number for all frames) of finite angles in degrees -> [n] float64."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full((n,), _finite_number(value, path, key), dtype=torch.float64)
    if not isinstance(value, list):
        raise InputError(path, f"{key} must be a number or a list of numbers, got {type(value).__name__}")
    if len(value) != n:
        raise InputError(path, f"lists {len(value)} {key} but the orbit has {n} frames")
    return torch.tensor([_finite_number(v, path, f"{key}[{i}]") for i, v in enumerate(value)], dtype=torch.float64)


def _background(value: Any, path: Path) -> np.ndarray:
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise InputError(path, f"background must be a list of 3 numbers, got {value!r}")
    bg = np.asarray(value, dtype=np.float32)
    if (bg > 1.0).any():  # 0..255 is accepted too
        bg = bg / 255.0
    if (bg < 0).any() or (bg > 1).any():
        raise InputError(path, f"background values must lie in [0, 1] or [0, 255], got {value!r}")
    return bg


def read_orbit_json(path: Path, n_frames: int, notes: list[str]) -> dict[str, Any]:
    """Parse and validate ``orbit.json`` for ``n_frames`` frames.

    Without the file, 21 frames mean SV3D's static default orbit (a note says so); any other count is
    an error, since the cameras cannot be guessed.

    Returns:
        dict with elevations [n] and azimuths [n] (float64 degrees as written), fov_deg, radius,
        azimuth_direction and background ([3] float32).
    """
    if not path.is_file():
        if n_frames != SV3D_FRAMES:
            raise InputError(
                path,
                f"missing, and {n_frames} frames is not SV3D's {SV3D_FRAMES}: write an orbit.json with "
                "elevations_deg, azimuths_deg, fov_deg and radius (see README, Input formats)",
            )
        notes.append(
            f"no orbit.json: assuming SV3D's static orbit (elevation {SV3D_ELEVATION_DEG:g}°, azimuths "
            f"(k+1)·360/21, fov {SV3D_FOV_DEG}°, radius {SV3D_RADIUS:g}, white background)"
        )
        return {
            "elevations": torch.full((n_frames,), SV3D_ELEVATION_DEG, dtype=torch.float64),
            "azimuths": sv3d_azimuths(n_frames),
            "fov_deg": SV3D_FOV_DEG,
            "radius": SV3D_RADIUS,
            "azimuth_direction": "ccw",
            "background": np.ones(3, dtype=np.float32),
        }
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    unknown = sorted(set(data) - ORBIT_JSON_KEYS)
    if unknown:
        notes.append(f"{path}: ignoring unknown keys {unknown}")
    if "azimuths_deg" not in data:
        if n_frames != SV3D_FRAMES:
            raise InputError(path, "azimuths_deg is missing (only a 21-frame SV3D orbit may omit it)")
        azimuths = sv3d_azimuths(n_frames)
    else:
        azimuths = _angles(data["azimuths_deg"], n_frames, path, "azimuths_deg")
    elevations = _angles(data.get("elevations_deg", SV3D_ELEVATION_DEG), n_frames, path, "elevations_deg")
    if (elevations.abs() >= 90).any():
        raise InputError(path, "elevations_deg must lie strictly between -90 and 90")
    fov = _finite_number(data.get("fov_deg", SV3D_FOV_DEG), path, "fov_deg")
    if not 0 < fov < 180:
        raise InputError(path, f"fov_deg must lie in (0, 180), got {fov}")
    radius = _finite_number(data.get("radius", SV3D_RADIUS), path, "radius")
    if radius <= 0:
        raise InputError(path, f"radius must be positive, got {radius}")
    direction = data.get("azimuth_direction", "ccw")
    if direction not in ("ccw", "cw"):
        raise InputError(path, f"azimuth_direction must be 'ccw' or 'cw', got {direction!r}")
    return {
        "elevations": elevations,
        "azimuths": azimuths,
        "fov_deg": fov,
        "radius": radius,
        "azimuth_direction": direction,
        "background": _background(data.get("background", [1, 1, 1]), path),
    }


# ---------------------------------------------------------------------------------------------------
# Frames -> images and masks


def _images_and_masks(
    frames: list[np.ndarray], names: list[Path], background: np.ndarray, cfg: DataConfig, notes: list[str]
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Check sizes, composite alpha, derive masks, reject empty masks, warn on border contact."""
    h, w = frames[0].shape[:2]
    for f, name in zip(frames, names, strict=True):
        if f.shape[:2] != (h, w):
            raise InputError(
                name, f"size {f.shape[1]}x{f.shape[0]} differs from {names[0].name}'s {w}x{h}"
            )
    # A frame whose alpha is opaque everywhere carries no mask; derive it from the background instead.
    use_alpha = all(f.shape[2] == 4 for f in frames) and any((f[..., 3] < 1.0).any() for f in frames)
    images, masks = [], []
    for f in frames:
        if use_alpha:
            images.append(composite(f, background))
            masks.append(f[..., 3].astype(np.float32))
        else:
            rgb = f[..., :3] if f.shape[2] == 4 else f
            images.append(rgb)
            masks.append(mask_from_background(rgb, background, cfg))
    touching = []
    for m, name in zip(masks, names, strict=True):
        if not (m > cfg.alpha_threshold).any():
            how = "alpha is zero everywhere" if use_alpha else (
                f"no pixel differs from the background {background.round(3).tolist()} by more than "
                f"{cfg.mask_threshold}"
            )
            raise InputError(name, f"no object found: the mask is empty ({how})")
        if touches_border(m > cfg.alpha_threshold):
            touching.append(name.name)
    if touching:
        msg = f"object touches the image border in {len(touching)} frame(s) ({', '.join(touching[:6])}"
        msg += ", ...)" if len(touching) > 6 else ")"
        notes.append(msg + ": it may be cropped, and the reconstruction may miss those parts")
    img_t = torch.from_numpy(np.stack(images)).float().clamp_(0, 1)
    mask_t = torch.from_numpy(np.stack(masks)).float().clamp_(0, 1)
    return img_t, mask_t, "alpha" if use_alpha else "background"


def _limit_resolution(images: torch.Tensor, masks: torch.Tensor, max_res: int) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = images.shape[1:3]
    if max_res <= 0 or max(h, w) <= max_res:
        return images, masks
    scale = max_res / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    images = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), size=size, mode="area")
    masks = torch.nn.functional.interpolate(masks[:, None], size=size, mode="area")
    return images.permute(0, 2, 3, 1).contiguous(), masks[:, 0].contiguous()


def _orbit_from_frames(
    frames: list[np.ndarray], names: list[Path], orbit_json: Path, kind: str, source: Path, cfg: DataConfig
) -> Orbit:
    notes: list[str] = []
    if len(frames) < MIN_FRAMES:
        raise InputError(source, f"only {len(frames)} frame(s); an orbit needs at least {MIN_FRAMES}")
    meta = read_orbit_json(orbit_json, len(frames), notes)
    h, w = frames[0].shape[:2]
    if h != w:
        raise InputError(
            names[0], f"frames of an orbit must be square, got {w}x{h} (use transforms.json for other views)"
        )
    images, masks, mask_source = _images_and_masks(frames, names, meta["background"], cfg, notes)
    images, masks = _limit_resolution(images, masks, cfg.max_resolution)
    cams = orbit_cameras(
        meta["elevations"], meta["azimuths"], meta["radius"], meta["fov_deg"], images.shape[1],
        meta["azimuth_direction"],
    )
    azimuths = meta["azimuths"] if meta["azimuth_direction"] == "ccw" else (-meta["azimuths"]) % 360.0
    for note in notes:
        log.warning(note)
    return Orbit(
        images=images,
        masks=masks,
        cameras=cams,
        background=tuple(float(v) for v in meta["background"]),
        elevations_deg=meta["elevations"],
        azimuths_deg=azimuths,
        radius=meta["radius"],
        fov_deg=meta["fov_deg"],
        source=str(source),
        kind=kind,
        frame_names=[n.name for n in names],
        mask_source=mask_source,
        notes=notes,
    )


def _load_frames_folder(folder: Path, frames: list[Path], cfg: DataConfig) -> Orbit:
    arrays = [read_image(p) for p in frames]
    return _orbit_from_frames(arrays, frames, folder / "orbit.json", "orbit-folder", folder, cfg)


def _load_video(video: Path, orbit_json: Path, cfg: DataConfig) -> Orbit:
    arrays = read_video(video)
    names = [Path(f"{video}#{i:03d}") for i in range(len(arrays))]
    return _orbit_from_frames(arrays, names, orbit_json, "video", video, cfg)


# ---------------------------------------------------------------------------------------------------
# transforms.json


def _intrinsic(frame: dict[str, Any], data: dict[str, Any], key: str) -> float | None:
    value = frame.get(key, data.get(key))
    return None if value is None else float(value)


def _load_transforms(path: Path, cfg: DataConfig) -> Orbit:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise InputError(path, "expected an object with a non-empty 'frames' list")
    frames_meta = data["frames"]
    if len(frames_meta) < MIN_FRAMES:
        raise InputError(path, f"only {len(frames_meta)} frame(s); at least {MIN_FRAMES} are needed")
    notes: list[str] = []
    arrays, names, c2ws, Ks = [], [], [], []
    for i, fr in enumerate(frames_meta):
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise InputError(path, f"frame {i} needs 'file_path' and 'transform_matrix'")
        img_path = path.parent / fr["file_path"]
        if not img_path.suffix and not img_path.exists():  # Blender-synthetic style paths omit ".png"
            img_path = img_path.with_suffix(".png")
        if not img_path.is_file():
            raise InputError(img_path, f"image of frame {i} listed in {path.name} does not exist")
        img = read_image(img_path)
        try:
            m = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(path, f"frame {i} ({fr['file_path']}): transform_matrix is not numeric") from None
        if m.shape != (4, 4):
            raise InputError(path, f"frame {i} ({fr['file_path']}): transform_matrix must be 4x4, got {m.shape}")
        if not np.isfinite(m).all():
            raise InputError(path, f"frame {i} ({fr['file_path']}): transform_matrix has NaN or inf")
        err = float(rigid_error(torch.from_numpy(m)[None])[0])
        if err > RIGID_TOLERANCE:
            raise InputError(
                path,
                f"frame {i} ({fr['file_path']}): transform_matrix is not a rigid camera-to-world pose "
                f"(rotation not orthonormal or bottom row not 0 0 0 1; error {err:.3g})",
            )
        h, w = img.shape[:2]
        W = _intrinsic(fr, data, "w") or w
        H = _intrinsic(fr, data, "h") or h
        fl_x, fl_y = _intrinsic(fr, data, "fl_x"), _intrinsic(fr, data, "fl_y")
        if fl_x is None and "camera_angle_x" in data:
            fl_x = 0.5 * W / math.tan(0.5 * float(data["camera_angle_x"]))
        if fl_x is None and fl_y is None:
            raise InputError(path, f"frame {i}: no focal length (fl_x / fl_y / camera_angle_x)")
        fl_x = fl_x if fl_x is not None else fl_y
        fl_y = fl_y if fl_y is not None else fl_x
        cx = _intrinsic(fr, data, "cx") or W / 2.0
        cy = _intrinsic(fr, data, "cy") or H / 2.0
        if not all(math.isfinite(v) and v > 0 for v in (fl_x, fl_y, W, H)):
            raise InputError(path, f"frame {i}: intrinsics must be positive and finite")
        if (W, H) != (w, h):
            if abs(W / H - w / h) > 1e-3:
                raise InputError(img_path, f"image is {w}x{h} but {path.name} says {W:g}x{H:g}")
            sx = w / W
            fl_x, fl_y, cx, cy = fl_x * sx, fl_y * sx, cx * sx, cy * sx
        Ks.append([[fl_x, 0.0, cx], [0.0, fl_y, cy], [0.0, 0.0, 1.0]])
        c2ws.append(m)
        arrays.append(img)
        names.append(img_path)
    bg = _background(data["background"], path) if "background" in data else np.ones(3, dtype=np.float32)
    images, masks, mask_source = _images_and_masks(arrays, names, bg, cfg, notes)
    h, w = images.shape[1:3]
    cams = Cameras(
        torch.tensor(np.stack(c2ws), dtype=torch.float32), torch.tensor(Ks, dtype=torch.float32), w, h
    )
    if cfg.max_resolution and max(h, w) > cfg.max_resolution:
        images, masks = _limit_resolution(images, masks, cfg.max_resolution)
        cams = cams.scaled(images.shape[2], images.shape[1])
    orbit_meta = data.get("orbit") if isinstance(data.get("orbit"), dict) else None
    elev = azim = None
    radius = fov = None
    if orbit_meta is not None:  # written by orbitmesh: keeps the orbit angles across a round trip
        elev = torch.tensor(orbit_meta["elevations_deg"], dtype=torch.float64)
        azim = torch.tensor(orbit_meta["azimuths_deg"], dtype=torch.float64)
        radius, fov = float(orbit_meta["radius"]), float(orbit_meta["fov_deg"])
    for note in notes:
        log.warning(note)
    return Orbit(
        images=images,
        masks=masks,
        cameras=cams,
        background=tuple(float(v) for v in bg),
        elevations_deg=elev,
        azimuths_deg=azim,
        radius=radius,
        fov_deg=fov,
        source=str(path),
        kind="transforms",
        frame_names=[n.name for n in names],
        mask_source=mask_source,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------------
# Writing


def orbit_json_dict(orbit: Orbit) -> dict[str, Any]:
    """``orbit.json`` content for an orbit (counter-clockwise azimuths)."""
    if not orbit.is_orbit or orbit.radius is None or orbit.fov_deg is None:
        raise ValueError("only orbits with known elevation, azimuth, radius and fov have an orbit.json")
    assert orbit.elevations_deg is not None and orbit.azimuths_deg is not None
    return {
        "elevations_deg": [float(v) for v in orbit.elevations_deg],
        "azimuths_deg": [float(v) for v in orbit.azimuths_deg],
        "fov_deg": float(orbit.fov_deg),
        "radius": float(orbit.radius),
        "azimuth_direction": "ccw",
        "background": [float(v) for v in orbit.background],
    }


def transforms_dict(orbit: Orbit, file_paths: list[str]) -> dict[str, Any]:
    """nerfstudio-style ``transforms.json`` content (per-frame intrinsics, OpenGL camera-to-world)."""
    cams = orbit.cameras
    frames = []
    for i, fp in enumerate(file_paths):
        K = cams.K[i].tolist()
        frames.append({
            "file_path": fp,
            "transform_matrix": cams.c2w[i].to(torch.float64).tolist(),
            "fl_x": K[0][0], "fl_y": K[1][1], "cx": K[0][2], "cy": K[1][2],
        })
    out: dict[str, Any] = {
        "camera_model": "OPENCV",
        "w": cams.width,
        "h": cams.height,
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "background": [float(v) for v in orbit.background],
        "frames": frames,
    }
    if orbit.is_orbit and orbit.radius is not None:
        out["orbit"] = orbit_json_dict(orbit)
    return out


def write_orbit(orbit: Orbit, out_dir: str | Path, alpha: bool = False, transforms: bool = True) -> Path:
    """Write an orbit as frames ``000.png ...`` plus ``orbit.json`` (when it is an orbit) and
    ``transforms.json`` (when asked). With ``alpha`` the PNGs are RGBA with the mask as alpha.

    Returns:
        the output folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{i:03d}.png" for i in range(len(orbit))]
    images = orbit.images.detach().cpu().numpy()
    masks = orbit.masks.detach().cpu().numpy()
    for name, img, m in zip(names, images, masks, strict=True):
        write_png(out / name, np.concatenate([img, m[..., None]], axis=-1) if alpha else img)
    if orbit.is_orbit and orbit.radius is not None:
        write_json(out / "orbit.json", orbit_json_dict(orbit))
    if transforms:
        write_json(out / "transforms.json", transforms_dict(orbit, names))
    return out

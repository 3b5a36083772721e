"""Reading frames and deriving object masks.

Masks come from the alpha channel when there is one. Otherwise from the background colour:

1. a pixel is *background* when every channel is within ``mask_threshold`` of the background colour
   (default 0.05, i.e. about 13/255 — generated views have near-white, slightly noisy backgrounds);
2. a binary opening of radius ``mask_open_px`` removes speckle;
3. connected components smaller than ``min_component_frac`` of the image are dropped;
4. holes smaller than ``max_hole_frac`` of the image are filled (a white logo on the object), while
   real holes — a mug handle's, a torus' — are far larger and stay open.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from recon.config import DataConfig
from recon.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".mkv")


def read_image(path: Path) -> np.ndarray:
    """Read an 8- or 16-bit image as float32 in [0, 1].

    Returns:
        [H, W, 3] (RGB) or [H, W, 4] (RGBA); grey images become RGB.
    Raises:
        InputError: the file cannot be read or decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(img, dtype=np.float32) / 65535.0
                return np.repeat(arr[..., None], 3, axis=-1)
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            img = img.convert("RGBA" if has_alpha else "RGB")
            return np.asarray(img, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(path, f"cannot read image ({exc.__class__.__name__}: {exc})") from None


def read_video(path: Path) -> list[np.ndarray]:
    """Decode every frame of a video (mp4/webm via ffmpeg, gif via Pillow) as float32 RGB(A) in [0, 1].

    Raises:
        InputError: the video cannot be decoded or has no frames.
    """
    import imageio.v3 as iio

    plugin = "pillow" if path.suffix.lower() == ".gif" else "FFMPEG"
    try:
        frames = [np.asarray(f) for f in iio.imiter(path, plugin=plugin)]
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except Exception as exc:  # imageio/ffmpeg raise many kinds; all mean "cannot decode"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(path, f"cannot decode video ({first})") from None
    if not frames:
        raise InputError(path, "cannot decode video (no frames)")
    out = []
    for f in frames:
        f = f.astype(np.float32) / (65535.0 if f.dtype == np.uint16 else 255.0)
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, axis=-1)
        out.append(f)
    return out


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def clean_mask(mask: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Opening, small-component removal and small-hole filling of a binary mask ([H, W] bool)."""
    h, w = mask.shape
    area = h * w
    if cfg.mask_open_px > 0:
        mask = ndimage.binary_opening(mask, structure=_disk(cfg.mask_open_px))
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= cfg.min_component_frac * area
        keep[0] = False
        mask = keep[labels]
    holes, n_holes = ndimage.label(~mask)
    if n_holes:
        sizes = np.bincount(holes.ravel())
        # Background regions touching the border are never holes.
        border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        fill = sizes < cfg.max_hole_frac * area
        fill[0] = False
        fill[border] = False
        mask = mask | fill[holes]
    return mask


def mask_from_background(rgb: np.ndarray, background: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Object mask of an image on a plain background: binary, or soft coverage at the outline.

    Args:
        rgb: [H, W, 3] float in [0, 1].
        background: [3] background colour in [0, 1].
    Returns:
        [H, W] float32 in [0, 1]: 1 inside, 0 outside, and with ``cfg.soft_outline`` the estimated coverage
        of the outline's pixels (``outline_coverage``).
    """
    diff = np.abs(rgb - background.reshape(1, 1, 3)).max(axis=-1)
    mask = clean_mask(diff > cfg.mask_threshold, cfg)
    if cfg.soft_outline:
        return blurred_outline_coverage(rgb, background, mask, cfg.soft_outline_max_px)
    return mask.astype(np.float32)


def blurred_outline_coverage(rgb: np.ndarray, background: np.ndarray, mask: np.ndarray, max_ring_px: int = 4,
                             full_coverage: float = 0.98) -> np.ndarray:
    """``outline_coverage`` over an outline as wide as the frame's blur, up to ``max_ring_px`` pixels.

    A sharp render's outline is one pixel wide, but a blurred or compressed frame (a generated view, a
    JPEG) spreads it over several: its faint outer pixels pass ``mask_threshold``, so the binary mask
    stands 1-2 px outside the object, and a one-pixel ring of estimates corrects only part of that. The
    ring grows one pixel at a time while the mask's layer at that depth still reads as partly covered:
    the mean estimated coverage of its pixels is below ``full_coverage``. The layer is counted in
    chessboard depth (all 8 neighbours of a depth-2 pixel are in the mask), which a sharp frame's
    antialiased outline rarely reaches, so its ring stays one pixel (all 21 frames of the benchmark duck,
    demo, torus and bunny, 19 of the sphere's and the union's; the estimate itself runs over taxicab
    rings, as ``outline_coverage``'s erosion counts them).

    Args:
        rgb: [H, W, 3] float in [0, 1]; background: [3]; mask: [H, W] bool (cleaned).
    Returns:
        [H, W] float32 in [0, 1] (see ``outline_coverage``).
    """
    coverage = outline_coverage(rgb, background, mask)
    if max_ring_px <= 1 or mask.all() or not mask.any():
        return coverage
    depth = ndimage.distance_transform_cdt(mask, metric="chessboard")
    for ring in range(2, max_ring_px + 1):
        layer = depth == ring
        if not layer.any():
            break
        wider = outline_coverage(rgb, background, mask, ring_px=ring, reach_px=ring + 2)
        if float(wider[layer].mean()) >= full_coverage:
            break
        coverage = wider
    return coverage


def outline_coverage(rgb: np.ndarray, background: np.ndarray, mask: np.ndarray, ring_px: int = 1,
                     reach_px: int = 3, min_contrast: float = 0.15, max_residual: float = 0.3) -> np.ndarray:
    """Soft coverage of a binary mask's outline from the colours, as alpha would give it.

    An antialiased pixel on the outline is ``a * fg + (1 - a) * background`` for a coverage ``a``; a pixel
    counts as object once any channel differs from the background by ``mask_threshold``, which a coverage
    of a few per cent does, so a binary mask stands about a third of a pixel outside the object's outline
    (its 50% contour; 0.32-0.34 px on the benchmark orbits). Here ``a`` is estimated on the mask's outer
    ring (``ring_px`` pixels) by projecting ``rgb - background`` on ``fg - background``. ``fg`` is the colour
    of a pixel deeper inside within ``reach_px`` (a square window): the one whose colour explains the outline
    pixel best (smallest residual of that projection, the nearest on a tie), so a texture edge that meets
    the outline does not read as partial coverage. Outline pixels without such a pixel (thin parts), whose
    ``fg`` lies within ``min_contrast`` of the background (a white part on white), or whose colour no blend
    explains within ``max_residual`` (a rim light, an outline stroke) keep the binary value: no estimate is
    better than a wrong one.

    Args:
        rgb: [H, W, 3] float in [0, 1]; background: [3]; mask: [H, W] bool (cleaned, ``clean_mask``).
    Returns:
        [H, W] float32 in [0, 1], equal to ``mask`` away from the outline.
    """
    out = mask.astype(np.float32)
    deep = ndimage.binary_erosion(mask, iterations=ring_px, border_value=1)
    ys, xs = np.nonzero(mask & ~deep)
    if ys.size == 0 or not deep.any():
        return out
    h, w = mask.shape
    steps = np.arange(-reach_px, reach_px + 1)
    dy, dx = (a.reshape(-1) for a in np.meshgrid(steps, steps, indexing="ij"))
    cy, cx = ys[:, None] + dy[None], xs[:, None] + dx[None]  # [R, K] candidate pixels
    inside = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
    cy, cx = cy.clip(0, h - 1), cx.clip(0, w - 1)
    bg = background.reshape(1, 1, 3).astype(np.float32)
    fg = rgb[cy, cx] - bg  # [R, K, 3]
    px = rgb[ys, xs][:, None] - bg  # [R, 1, 3]
    contrast2 = (fg * fg).sum(-1)
    coverage = ((px * fg).sum(-1) / np.maximum(contrast2, 1e-12)).clip(0.0, 1.0)
    residual = np.linalg.norm(px - coverage[..., None] * fg, axis=-1)
    # A tie (equal residuals) goes to the nearest candidate.
    score = np.where(inside & deep[cy, cx], residual + 1e-4 * np.hypot(dy, dx)[None], np.inf)
    best = score.argmin(1)
    rows = np.arange(best.size)
    # Trusted only when the best-explaining colour stands out from the background and does explain the pixel.
    trusted = (contrast2[rows, best] >= min_contrast**2) & (score[rows, best] <= max_residual)
    out[ys, xs] = np.where(trusted, coverage[rows, best], 1.0)
    return out


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA [H, W, 4] over a background colour -> RGB [H, W, 3]."""
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + background.reshape(1, 1, 3) * (1.0 - alpha)


def touches_border(mask: np.ndarray, margin: int = 1) -> bool:
    """True when object pixels lie within ``margin`` pixels of the image border."""
    m = mask > 0.5
    return bool(m[:margin].any() or m[-margin:].any() or m[:, :margin].any() or m[:, -margin:].any())

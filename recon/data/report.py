"""What the tool understood of an orbit: a table for the terminal and a contact sheet for the eyes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from rich.table import Table
from scipy import ndimage

from recon.data.images import touches_border
from recon.io import to_uint8, write_png
from recon.types import Orbit


def camera_angles(orbit: Orbit) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Elevation, azimuth (degrees, our ccw convention) and distance of each camera centre.

    For orbits these are the declared angles; for arbitrary posed views they are derived from the
    camera centres relative to the origin.
    """
    centers = orbit.cameras.centers.to(torch.float64)
    dist = centers.norm(dim=-1)
    if orbit.is_orbit:
        assert orbit.elevations_deg is not None and orbit.azimuths_deg is not None
        return orbit.elevations_deg, orbit.azimuths_deg, dist
    elev = torch.rad2deg(torch.asin((centers[:, 1] / dist).clamp(-1, 1)))
    azim = torch.rad2deg(torch.atan2(centers[:, 0], centers[:, 2])) % 360.0
    return elev, azim, dist


def orbit_summary(orbit: Orbit) -> dict[str, object]:
    """Key facts of an orbit as plain data (for JSON and the table's caption)."""
    fy = float(orbit.cameras.K[0, 1, 1])
    fov = orbit.fov_deg if orbit.fov_deg is not None else math.degrees(2 * math.atan(orbit.height / (2 * fy)))
    elev, azim, dist = camera_angles(orbit)
    return {
        "source": orbit.source,
        "kind": orbit.kind,
        "frames": len(orbit),
        "size": [orbit.width, orbit.height],
        "fov_deg": round(float(fov), 4),
        "radius": round(float(orbit.radius), 4) if orbit.radius is not None else round(float(dist.mean()), 4),
        "elevations_deg": [round(float(v), 4) for v in elev],
        "azimuths_deg": [round(float(v), 4) for v in azim],
        "mask_source": orbit.mask_source,
        "mask_coverage": [round(float(v), 4) for v in orbit.mask_coverage()],
        "background": list(orbit.background),
        "notes": list(orbit.notes),
    }


def orbit_table(orbit: Orbit) -> Table:
    """A rich table: one row per frame (name, elevation, azimuth, distance, mask coverage, border)."""
    s = orbit_summary(orbit)
    derived = "" if orbit.is_orbit else " (derived from poses)"
    caption = (
        f"{s['frames']} frames, {orbit.width}x{orbit.height}, fov {s['fov_deg']:g}°, radius {s['radius']:g}"
        f"{derived}, masks from {orbit.mask_source}, background {list(orbit.background)}"
    )
    table = Table(title=f"orbit: {orbit.source} ({orbit.kind})", caption=caption)
    for col in ("frame", "file", "elevation °", "azimuth °", "distance", "mask %", "border"):
        table.add_column(col, justify="right" if col not in ("file",) else "left")
    elev, azim, dist = camera_angles(orbit)
    cov = orbit.mask_coverage()
    for i in range(len(orbit)):
        border = touches_border(orbit.masks[i].numpy() > 0.5)
        name = orbit.frame_names[i] if orbit.frame_names else ""
        table.add_row(
            str(i), name, f"{float(elev[i]):.2f}", f"{float(azim[i]):.2f}", f"{float(dist[i]):.3f}",
            f"{100 * float(cov[i]):.1f}", "touches" if border else "",
        )
    return table


def contact_sheet(orbit: Orbit, path: str | Path, tile: int = 160, columns: int = 7) -> Path:
    """Write a PNG grid: each frame with its mask outlined in yellow and the background tinted blue,
    labelled with index, elevation and azimuth. Shows at a glance what was taken as the object."""
    n = len(orbit)
    rows = math.ceil(n / columns)
    label_h = 14
    sheet = Image.new("RGB", (columns * tile, rows * (tile + label_h)), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    elev, azim, _ = camera_angles(orbit)
    images = orbit.images.detach().cpu()
    masks = orbit.masks.detach().cpu()
    h, w = orbit.height, orbit.width
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    tint = np.array([0.55, 0.7, 1.0], dtype=np.float32)
    for i in range(n):
        # Resize first, then outline, so the outline stays one tile pixel wide at any input size.
        img = np.asarray(Image.fromarray(to_uint8(images[i].numpy())).resize(size, Image.BILINEAR),
                         dtype=np.float32) / 255.0
        m = np.asarray(Image.fromarray(to_uint8(masks[i].numpy())).resize(size, Image.BILINEAR),
                       dtype=np.float32)[..., None] / 255.0
        shown = img * m + (img * 0.5 + tint * 0.5) * (1 - m)
        inside = m[..., 0] > 0.5
        shown[inside & ~ndimage.binary_erosion(inside)] = (1.0, 0.85, 0.0)
        pil = Image.fromarray(to_uint8(shown))
        x0 = (i % columns) * tile
        y0 = (i // columns) * (tile + label_h)
        sheet.paste(pil, (x0 + (tile - size[0]) // 2, y0 + label_h + (tile - size[1]) // 2))
        draw.text((x0 + 3, y0 + 1), f"{i}  e {float(elev[i]):.0f}  a {float(azim[i]):.0f}", fill=(230, 230, 230),
                  font=font)
    return write_png(path, np.asarray(sheet))


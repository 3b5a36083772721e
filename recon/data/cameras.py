"""Pinhole cameras in the conventions of shared/CONVENTIONS.md.

- World: right-handed, +Y up, the object's front faces +Z.
- Poses: camera-to-world 4x4, OpenGL camera convention (looks along local -Z, +Y up, +X right).
- Intrinsics: 3x3 ``K`` in pixels; image origin top-left, +x right, +y down, pixel centres at +0.5.
- Clip space: OpenGL (as nvdiffrast), ``pos_clip = P @ world_to_camera @ [x, 1]``, NDC y up, so image
  row 0 is NDC y = +1.
- Orbits: ``position = r * (cos e sin a, sin e, cos e cos a)``, azimuth counter-clockwise seen from above,
  0 = in front (+Z), 90 = on +X; elevation positive looks down on the object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SV3D_FOV_DEG = 33.8
"""SV3D's vertical field of view in degrees."""
SV3D_RADIUS = 2.0
"""SV3D's camera distance from the origin."""
SV3D_ELEVATION_DEG = 10.0
"""SV3D's default (static orbit) elevation in degrees."""
SV3D_FRAMES = 21
"""Frames in an SV3D orbit."""


def sv3d_azimuths(n_frames: int = SV3D_FRAMES) -> Tensor:
    """SV3D's azimuths in degrees: ``linspace(0, 360, n+1)[1:] % 360``; the last frame is azimuth 0.

    Returns:
        [n_frames] float64 degrees, e.g. for 21 frames 17.14, 34.29, ..., 342.86, 0.
    """
    return torch.linspace(0.0, 360.0, n_frames + 1, dtype=torch.float64)[1:] % 360.0


def orbit_positions(elevations_deg: Tensor, azimuths_deg: Tensor, radius: float | Tensor) -> Tensor:
    """Camera centres on an orbit (CONVENTIONS.md formula, azimuth counter-clockwise from above).

    Args:
        elevations_deg: [N] degrees above the XZ plane.
        azimuths_deg: [N] degrees, 0 = +Z, 90 = +X.
        radius: scalar or [N].
    Returns:
        [N, 3] positions, dtype of the inputs.
    """
    e = torch.deg2rad(elevations_deg)
    a = torch.deg2rad(azimuths_deg)
    r = torch.as_tensor(radius, dtype=e.dtype, device=e.device)
    unit = torch.stack([torch.cos(e) * torch.sin(a), torch.sin(e), torch.cos(e) * torch.cos(a)], dim=-1)
    return unit * r.reshape(-1, 1) if r.ndim else unit * r


def look_at(positions: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """Camera-to-world matrices (OpenGL convention) for cameras at ``positions`` looking at ``target``.

    Args:
        positions: [N, 3] camera centres.
        target: [3] point looked at (default the origin).
        up: [3] world up (default +Y). Where the view direction is parallel to it, +Z (or -Z) is used
            so the basis stays well defined when looking straight down or up.
    Returns:
        [N, 4, 4] camera-to-world; columns are camera +X (right), +Y (up), +Z (backwards), centre.
    """
    device, dtype = positions.device, positions.dtype
    target = torch.zeros(3, dtype=dtype, device=device) if target is None else target.to(positions)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=dtype, device=device) if up is None else up.to(positions)
    backward = torch.nn.functional.normalize(positions - target, dim=-1)
    up_b = up.expand_as(backward).clone()
    parallel = torch.linalg.norm(torch.cross(up_b, backward, dim=-1), dim=-1) < 1e-6
    if parallel.any():
        # Looking straight down (or up): the image's up is taken as world -Z (or +Z), i.e. away from
        # the front of the object, which is what an orbit approaching the pole converges to.
        alt = torch.tensor([0.0, 0.0, -1.0], dtype=dtype, device=device)
        up_b[parallel] = alt * torch.sign(backward[parallel, 1:2])
    right = torch.nn.functional.normalize(torch.cross(up_b, backward, dim=-1), dim=-1)
    cam_up = torch.cross(backward, right, dim=-1)
    c2w = torch.zeros(positions.shape[0], 4, 4, dtype=dtype, device=device)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = cam_up
    c2w[:, :3, 2] = backward
    c2w[:, :3, 3] = positions
    c2w[:, 3, 3] = 1.0
    return c2w


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> Tensor:
    """3x3 pinhole intrinsics from a vertical field of view, square pixels, centred principal point."""
    fy = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
    return torch.tensor([[fy, 0.0, width / 2.0], [0.0, fy, height / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float32)


def rigid_error(c2w: Tensor) -> Tensor:
    """Per-matrix deviation from a rigid transform: ``max |R^T R - I|`` plus ``|det R - 1|``
    plus the largest deviation of the bottom row from (0, 0, 0, 1).

    Args:
        c2w: [N, 4, 4].
    Returns:
        [N] float64 errors; a proper camera pose gives ~1e-7 or less.
    """
    m = c2w.to(torch.float64)
    rot = m[:, :3, :3]
    eye = torch.eye(3, dtype=torch.float64, device=m.device)
    ortho = (rot.transpose(1, 2) @ rot - eye).abs().amax(dim=(1, 2))
    det = (torch.linalg.det(rot) - 1.0).abs()
    bottom = (m[:, 3, :] - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64, device=m.device)).abs()
    return ortho + det + bottom.amax(dim=1)


def opengl_projection(K: Tensor, width: int, height: int, near: float, far: float) -> Tensor:
    """OpenGL projection matrices matching pixel intrinsics (image row 0 = NDC y +1).

    Args:
        K: [N, 3, 3] intrinsics in pixels (top-left origin, +y down).
        width, height: image size in pixels.
        near, far: clip distances along the view axis (positive).
    Returns:
        [N, 4, 4] float32 such that ``clip = P @ [x_cam, 1]`` for camera-space points (camera looks -Z).
    """
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    P = torch.zeros(K.shape[0], 4, 4, dtype=K.dtype, device=K.device)
    P[:, 0, 0] = 2.0 * fx / width
    P[:, 0, 2] = 1.0 - 2.0 * cx / width
    P[:, 1, 1] = 2.0 * fy / height
    P[:, 1, 2] = 2.0 * cy / height - 1.0
    P[:, 2, 2] = -(far + near) / (far - near)
    P[:, 2, 3] = -2.0 * far * near / (far - near)
    P[:, 3, 2] = -1.0
    return P


@dataclass
class Cameras:
    """A batch of pinhole cameras sharing one image size.

    Attributes:
        c2w: [N, 4, 4] float32 camera-to-world, OpenGL convention.
        K: [N, 3, 3] float32 intrinsics in pixels.
        width, height: image size in pixels.
    """

    c2w: Tensor
    K: Tensor
    width: int
    height: int

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(self.c2w.to(device), self.K.to(device), self.width, self.height)

    def subset(self, index: Tensor | list[int] | slice) -> Cameras:
        """Cameras at ``index`` (a slice, a list or a tensor of view indices)."""
        return Cameras(self.c2w[index], self.K[index], self.width, self.height)

    def scaled(self, width: int, height: int) -> Cameras:
        """The same cameras for an image resized to ``width`` x ``height`` (pixel-centre consistent)."""
        K = self.K.clone()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return Cameras(self.c2w.clone(), K, width, height)

    @property
    def centers(self) -> Tensor:
        """[N, 3] camera centres in world space."""
        return self.c2w[:, :3, 3]

    def world_to_camera(self) -> Tensor:
        """[N, 4, 4] world-to-camera matrices (inverse of the rigid c2w)."""
        rot = self.c2w[:, :3, :3]
        w2c = torch.zeros_like(self.c2w)
        w2c[:, :3, :3] = rot.transpose(1, 2)
        w2c[:, :3, 3] = -(rot.transpose(1, 2) @ self.c2w[:, :3, 3:4])[..., 0]
        w2c[:, 3, 3] = 1.0
        return w2c

    def projection(self, near: float = 0.1, far: float = 10.0) -> Tensor:
        """[N, 4, 4] OpenGL projection matrices for these intrinsics."""
        return opengl_projection(self.K, self.width, self.height, near, far)

    def mvp(self, near: float = 0.1, far: float = 10.0) -> Tensor:
        """[N, 4, 4] world-to-clip matrices, ``P @ world_to_camera``, for the rasterizer."""
        return self.projection(near, far) @ self.world_to_camera()

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points into every camera.

        Args:
            points: [P, 3] world positions.
        Returns:
            xy: [N, P, 2] pixel coordinates (top-left origin, pixel centres at +0.5);
            depth: [N, P] distance along each camera's viewing axis (positive in front).
        """
        w2c = self.world_to_camera().to(points.dtype)
        cam = torch.einsum("nij,pj->npi", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
        depth = -cam[..., 2]
        K = self.K.to(points.dtype)
        x = K[:, None, 0, 0] * cam[..., 0] / depth + K[:, None, 0, 2]
        y = -K[:, None, 1, 1] * cam[..., 1] / depth + K[:, None, 1, 2]
        return torch.stack([x, y], dim=-1), depth

    def rays(self, view: Tensor, xy: Tensor) -> tuple[Tensor, Tensor]:
        """Rays through image points.

        Args:
            view: [R] int64 view index of each ray.
            xy: [R, 2] pixel coordinates (continuous; the centre of pixel (i, j) is (i + 0.5, j + 0.5)).
        Returns:
            origins: [R, 3] camera centres; directions: [R, 3] unit world-space directions.
        """
        K = self.K[view]
        dirs_cam = torch.stack(
            [
                (xy[:, 0] - K[:, 0, 2]) / K[:, 0, 0],
                -(xy[:, 1] - K[:, 1, 2]) / K[:, 1, 1],
                -torch.ones_like(xy[:, 0]),
            ],
            dim=-1,
        )
        rot = self.c2w[view, :3, :3]
        dirs = torch.nn.functional.normalize(torch.einsum("rij,rj->ri", rot, dirs_cam.to(rot.dtype)), dim=-1)
        return self.c2w[view, :3, 3], dirs

    def pixel_rays(self, view: int, stride: int = 1) -> tuple[Tensor, Tensor]:
        """Rays through every ``stride``-th pixel centre of one view, row-major.

        Returns:
            origins, directions: [H', W', 3] each, H' = ceil(H / stride).
        """
        ys = torch.arange(0, self.height, stride, dtype=torch.float32, device=self.device) + 0.5
        xs = torch.arange(0, self.width, stride, dtype=torch.float32, device=self.device) + 0.5
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        xy = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)
        idx = torch.full((xy.shape[0],), view, dtype=torch.long, device=self.device)
        o, d = self.rays(idx, xy)
        return o.reshape(len(ys), len(xs), 3), d.reshape(len(ys), len(xs), 3)


def pixel_index(xy: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """The pixel holding each image point.

    Args:
        xy: [..., 2] pixel coordinates (top-left origin, pixel centres at +0.5).
    Returns:
        px: [..., 2] int64 (column, row), clamped into the image; inside: [...] bool, False where the
        point lies outside the image (its clamped pixel is then only a placeholder).
    """
    px = torch.floor(xy).long()
    inside = (px[..., 0] >= 0) & (px[..., 0] < width) & (px[..., 1] >= 0) & (px[..., 1] < height)
    px[..., 0].clamp_(0, width - 1)
    px[..., 1].clamp_(0, height - 1)
    return px, inside


def orbit_cameras(
    elevations_deg: Tensor,
    azimuths_deg: Tensor,
    radius: float,
    fov_deg: float,
    size: int,
    azimuth_direction: str = "ccw",
) -> Cameras:
    """Cameras of an SV3D-style orbit, all looking at the origin with +Y up.

    Args:
        elevations_deg, azimuths_deg: [N] degrees as the generator reports them.
        radius: distance of every camera from the origin.
        fov_deg: vertical field of view in degrees.
        size: square image side in pixels.
        azimuth_direction: 'ccw' (CONVENTIONS.md) or 'cw' (the generator's azimuth runs clockwise seen
            from above; it is negated to reach our counter-clockwise convention).
    """
    if azimuth_direction not in ("ccw", "cw"):
        raise ValueError(f"azimuth_direction must be 'ccw' or 'cw', got {azimuth_direction!r}")
    az = azimuths_deg.to(torch.float64)
    if azimuth_direction == "cw":
        az = -az
    pos = orbit_positions(elevations_deg.to(torch.float64), az, float(radius))
    c2w = look_at(pos).to(torch.float32)
    K = intrinsics_from_fov(fov_deg, size, size).expand(len(az), 3, 3).clone()
    return Cameras(c2w, K, size, size)

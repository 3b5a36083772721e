"""Artifacts handed from one stage to the next. Each can be saved and loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from recon.data.cameras import Cameras


@dataclass
class Orbit:
    """Posed views of one object: the input of every stage.

    Attributes:
        images: [N, H, W, 3] float32 sRGB in [0, 1], composited over ``background``.
        masks: [N, H, W] float32 in [0, 1]: object coverage (alpha when the input had it, else derived
            from the background colour; see recon.data.images).
        cameras: the N cameras (OpenGL camera-to-world, pixel intrinsics).
        background: RGB background colour in [0, 1].
        elevations_deg, azimuths_deg: [N] float64 orbit angles in our counter-clockwise convention
            (None for arbitrary posed views from transforms.json).
        radius, fov_deg: orbit radius and vertical field of view (None for arbitrary posed views).
        source: where the orbit was read from.
        kind: 'orbit-folder', 'video', 'transforms' or 'synthetic'.
        frame_names: a name per view (file name, or video frame index).
        mask_source: 'alpha' or 'background'.
        notes: what the loader assumed or warned about, for the user to see.
    """

    images: Tensor
    masks: Tensor
    cameras: Cameras
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    elevations_deg: Tensor | None = None
    azimuths_deg: Tensor | None = None
    radius: float | None = None
    fov_deg: float | None = None
    source: str = ""
    kind: str = "orbit-folder"
    frame_names: list[str] = field(default_factory=list)
    mask_source: str = "background"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    @property
    def is_orbit(self) -> bool:
        """True when the views lie on an orbit around the origin (elevation/azimuth known)."""
        return self.azimuths_deg is not None

    def to(self, device: torch.device | str) -> Orbit:
        """The same orbit with its tensors on ``device``."""
        from dataclasses import replace

        return replace(
            self, images=self.images.to(device), masks=self.masks.to(device), cameras=self.cameras.to(device)
        )

    def subset(self, index: list[int]) -> Orbit:
        """The views at ``index``, in that order."""
        from dataclasses import replace

        idx = torch.as_tensor(index, dtype=torch.long)

        def pick(t: Tensor) -> Tensor:
            return t[idx.to(t.device)]

        return replace(
            self,
            images=pick(self.images),
            masks=pick(self.masks),
            cameras=self.cameras.subset(idx.to(self.cameras.device)),
            elevations_deg=None if self.elevations_deg is None else pick(self.elevations_deg),
            azimuths_deg=None if self.azimuths_deg is None else pick(self.azimuths_deg),
            frame_names=[self.frame_names[i] for i in index] if self.frame_names else [],
        )

    def mask_coverage(self) -> Tensor:
        """[N] fraction of each view covered by the object mask."""
        return self.masks.flatten(1).mean(dim=1)

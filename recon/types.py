"""Artifacts handed from one stage to the next. Each can be saved and loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from recon.data.cameras import Cameras


def save_state(state: dict, path) -> None:
    """``torch.save`` to a temporary name, then rename: never a half-written checkpoint."""
    from recon.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path) -> dict:
    """What ``save_state`` wrote (tensors on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=False)


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


@dataclass
class CoarseField:
    """The coarse stage's output: a fitted radiance field and its occupancy grid.

    Attributes:
        field: the ``nn.Module`` (DenseGridField or HashGridField) mapping [P, 3] -> (sigma, rgb).
        occupancy: boolean grid [res, res, res] indexed [x, y, z] over [-bound, bound]^3.
        bound: half extent of the reconstruction cube.
        kind: 'grid' or 'hash'.
        init: constructor arguments of the field (to rebuild it on load).
        step: optimisation steps done.
        metrics: training statistics (final loss, PSNR, seconds).
    """

    field: torch.nn.Module
    occupancy: Tensor
    bound: float
    kind: str
    init: dict
    step: int = 0
    metrics: dict = field(default_factory=dict)

    def state(self) -> dict:
        """Everything needed to rebuild this artifact, as tensors and plain data."""
        return {"field": self.field.state_dict(), "occupancy": self.occupancy, "bound": self.bound,
                "kind": self.kind, "init": self.init, "step": self.step, "metrics": self.metrics}

    def save(self, path) -> None:
        """Write atomically with torch.save."""
        save_state(self.state(), path)

    @staticmethod
    def from_state(state: dict) -> CoarseField:
        from recon.coarse.fields import DenseGridField, HashGridField

        if state["kind"] == "grid":
            module = DenseGridField(**state["init"])
            module.upsample(state["field"]["grid"].shape[0])
        else:
            module = HashGridField(**state["init"])
        module.load_state_dict(state["field"])
        return CoarseField(module, state["occupancy"], state["bound"], state["kind"], state["init"],
                           state["step"], state.get("metrics", {}))

    @staticmethod
    def load(path) -> CoarseField:
        return CoarseField.from_state(load_state(path))


@dataclass
class Mesh:
    """A triangle mesh with vertex colours (the coarse stage's extracted mesh).

    Attributes:
        verts: [V, 3] float32 world positions.
        faces: [F, 3] int64, counter-clockwise seen from outside.
        colors: [V, 3] float32 sRGB in [0, 1].
    """

    verts: Tensor
    faces: Tensor
    colors: Tensor

    def to_trimesh(self):
        import trimesh

        from recon.io import rgba_uint8

        return trimesh.Trimesh(self.verts.numpy(), self.faces.numpy(), vertex_colors=rgba_uint8(self.colors.numpy()),
                               process=False)

    def save_ply(self, path) -> None:
        """Binary PLY with vertex colours, written atomically."""
        from recon.io import atomic_path

        with atomic_path(path) as tmp:
            self.to_trimesh().export(tmp)

    @staticmethod
    def load(path) -> Mesh:
        import numpy as np
        import trimesh

        m = trimesh.load(path, process=False, force="mesh")
        colors = (np.asarray(m.visual.vertex_colors)[:, :3] / 255.0) if m.visual.kind == "vertex" else \
            np.ones((len(m.vertices), 3))
        return Mesh(torch.tensor(np.asarray(m.vertices), dtype=torch.float32),
                    torch.tensor(np.asarray(m.faces), dtype=torch.int64), torch.tensor(colors, dtype=torch.float32))


@dataclass
class RefinedAsset:
    """The refinement stage's output: a mesh, its albedo field and the fitted light.

    Attributes:
        mesh: the refined mesh (vertex colours = albedo at the vertices).
        albedo: the ``AlbedoField`` module (world points -> sRGB albedo), lighting-free.
        light: the ``SGLight`` module fitted to the orbit.
        sdf: [(R+1)^3] SDF on the tet-grid lattice, in cells, inside where > 0 (to resume or re-extract).
        deform: [(R+1)^3, 3] pre-tanh vertex deformation.
        grid: cells per side R; bound: half extent of the grid; max_deform: deformation bound in cells.
        init: constructor arguments of the albedo field and light ({'albedo': {...}, 'light': {...}}).
        step: optimisation steps done; metrics: training statistics.
    """

    mesh: Mesh
    albedo: torch.nn.Module
    light: torch.nn.Module
    sdf: Tensor
    deform: Tensor
    grid: int
    bound: float
    max_deform: float
    init: dict
    step: int = 0
    metrics: dict = field(default_factory=dict)

    def state(self) -> dict:
        return {"verts": self.mesh.verts, "faces": self.mesh.faces, "colors": self.mesh.colors,
                "albedo": self.albedo.state_dict(), "light": self.light.state_dict(), "sdf": self.sdf,
                "deform": self.deform, "grid": self.grid, "bound": self.bound, "max_deform": self.max_deform,
                "init": self.init, "step": self.step, "metrics": self.metrics}

    def save(self, path) -> None:
        """Write atomically with torch.save."""
        save_state(self.state(), path)

    @staticmethod
    def from_state(state: dict) -> RefinedAsset:
        from recon.shading.albedo import AlbedoField
        from recon.shading.sg import SGLight

        albedo = AlbedoField(**state["init"]["albedo"])
        albedo.load_state_dict(state["albedo"])
        light = SGLight(**state["init"]["light"])
        light.load_state_dict(state["light"])
        mesh = Mesh(state["verts"], state["faces"], state["colors"])
        return RefinedAsset(mesh, albedo, light, state["sdf"], state["deform"], state["grid"], state["bound"],
                            state["max_deform"], state["init"], state["step"], state.get("metrics", {}))

    @staticmethod
    def load(path) -> RefinedAsset:
        return RefinedAsset.from_state(load_state(path))

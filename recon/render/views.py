"""Rendering meshes into views with recon.render: unlit albedo or Lambertian under a soft light,
antialiased by supersampling, on a plain background. Used by ``render-orbit``, evaluation and previews."""

from __future__ import annotations

import torch
from torch import Tensor

from recon.data.cameras import Cameras
from recon.ops import cpu_float32, numpy_of, take_rows
from recon.render import interpolate, rasterize, texture
from recon.render.mesh import RenderMesh
from recon.shading.soft_light import SoftLight


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """[V, 3] area-weighted unit vertex normals (counter-clockwise faces point outwards).

    Float32 CPU tensors take numba kernels (equal to the torch code within float32 rounding): about 4 ms on
    the refinement's 317k-face sphere without a gradient; with one (shading moves the geometry), forward
    and backward about 11 ms against 29-38 ms for the torch code."""
    if cpu_float32(verts, faces):
        if torch.is_grad_enabled() and verts.requires_grad:
            return _VertexNormals.apply(verts, faces)
        from recon.geometry._kernels import owner_items, vertex_normals_kernel

        return torch.from_numpy(vertex_normals_kernel(numpy_of(verts), numpy_of(faces.long()), owner_items()))
    return vertex_normals_reference(verts, faces)


class _VertexNormals(torch.autograd.Function):
    """``vertex_normals_reference`` as numba kernels, forward and backward (float32 CPU)."""

    @staticmethod
    def forward(ctx, verts: Tensor, faces: Tensor) -> Tensor:
        from recon.geometry._kernels import owner_items, vertex_normals_kernel

        v, f = numpy_of(verts), numpy_of(faces.long())
        ctx.arrays = (v, f)
        return torch.from_numpy(vertex_normals_kernel(v, f, owner_items()))

    @staticmethod
    def backward(ctx, grad: Tensor):
        from recon.geometry._kernels import owner_items, vertex_normals_backward_kernel

        v, f = ctx.arrays
        return torch.from_numpy(vertex_normals_backward_kernel(v, f, grad.float().contiguous().numpy(),
                                                               owner_items())), None


def face_area_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """[F, 3] face normals of length twice the face's area (counter-clockwise faces point outwards)."""
    f = faces.long()
    v0, v1, v2 = take_rows(verts, f[:, 0]), take_rows(verts, f[:, 1]), take_rows(verts, f[:, 2])
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_normals_reference(verts: Tensor, faces: Tensor) -> Tensor:
    """``vertex_normals`` in torch (any device, differentiable)."""
    f = faces.long()
    fn = face_area_normals(verts, f)
    n = torch.zeros_like(verts)
    for k in range(3):
        n.index_add_(0, f[:, k], fn)
    return torch.nn.functional.normalize(n, dim=-1)


def crease_normals(verts: Tensor, faces: Tensor, crease_deg: float = 30.0) -> Tensor:
    """[F, 3, 3] unit normal at each face corner: the area-weighted mean of the normals of the faces around
    that corner's position whose normal is within ``crease_deg`` of this face's ("auto smooth", as modelling
    tools shade): a box's faces stay flat, a tessellated sphere is smooth, and vertices duplicated at
    texture seams (welded here by exact position) do not crease the shading. Memory: sum of squared
    valences pairs."""
    f = faces.long()
    area_normal = face_area_normals(verts, f)
    unit = torch.nn.functional.normalize(area_normal, dim=-1)
    _, welded = torch.unique(verts, dim=0, return_inverse=True)
    corner_vertex = welded[f].reshape(-1)
    corner_face = torch.arange(f.shape[0], device=f.device).repeat_interleave(3)
    order = torch.argsort(corner_vertex, stable=True)
    counts = torch.bincount(corner_vertex)
    starts = torch.cumsum(counts, 0) - counts
    sorted_vertex = corner_vertex[order]
    # All ordered pairs of corners sharing a position: corner i (sorted) meets its vertex's k corners.
    per_corner = counts[sorted_vertex]
    pair_i = torch.arange(order.shape[0], device=f.device).repeat_interleave(per_corner)
    first = torch.cumsum(per_corner, 0) - per_corner
    local = torch.arange(pair_i.shape[0], device=f.device) - first.repeat_interleave(per_corner)
    pair_j = starts[sorted_vertex].repeat_interleave(per_corner) + local
    face_i, face_j = corner_face[order[pair_i]], corner_face[order[pair_j]]
    keep = (take_rows(unit, face_i) * take_rows(unit, face_j)).sum(-1) >= torch.cos(
        torch.tensor(crease_deg * torch.pi / 180))
    summed = torch.zeros(order.shape[0], 3, dtype=verts.dtype, device=verts.device)
    summed.index_add_(0, pair_i[keep], take_rows(area_normal, face_j[keep]))
    out = torch.empty_like(summed)
    out[order] = summed
    return torch.nn.functional.normalize(out, dim=-1).reshape(-1, 3, 3)


def shading_normals(verts: Tensor, faces: Tensor, crease_deg: float | None = None) -> tuple[Tensor, Tensor]:
    """Normals to interpolate for shading: (attribute [A, 3], triangles [F, 3] indexing it, ``faces``' dtype).
    ``crease_deg`` None: smooth ``vertex_normals`` on ``faces``; else ``crease_normals`` at that angle, one
    attribute row per face corner."""
    if crease_deg is None:
        return vertex_normals(verts, faces), faces
    normals = crease_normals(verts, faces, crease_deg).reshape(-1, 3)
    return normals, torch.arange(normals.shape[0], dtype=faces.dtype, device=faces.device).reshape(-1, 3)


def clip_positions(verts: Tensor, cameras: Cameras, near: float = 0.1, far: float = 10.0) -> Tensor:
    """[B, V, 4] clip-space positions of ``verts`` [V, 3] in every camera (differentiable in ``verts``).

    Float32 CPU tensors take numba kernels (equal to ``clip_positions_reference`` within float32 rounding):
    torch's batched product with its layout copy took 28 ms forward and 20 ms backward for 300k vertices
    in 8 views, a tenth of a refinement step."""
    mvp = cameras.mvp(near, far).to(verts)
    if cpu_float32(verts) and not mvp.requires_grad:
        return _ClipPositions.apply(verts, mvp)
    return clip_positions_reference(verts, mvp)


def clip_positions_reference(verts: Tensor, mvp: Tensor) -> Tensor:
    """``clip_positions`` in torch (any device and dtype, differentiable), given the [B, 4, 4] matrices."""
    homo = torch.cat([verts, torch.ones(verts.shape[0], 1, dtype=verts.dtype, device=verts.device)], dim=1)
    return torch.einsum("bij,vj->bvi", mvp, homo).contiguous()


class _ClipPositions(torch.autograd.Function):
    """``clip_positions_reference`` as numba kernels, forward and backward (float32 CPU, fixed cameras)."""

    @staticmethod
    def forward(ctx, verts: Tensor, mvp: Tensor) -> Tensor:
        import numba

        from recon.render._kernels import clip_kernel

        m = numpy_of(mvp)
        ctx.mvp = m
        # At least two work items per thread over all the views.
        per_view = max(1, -(-2 * numba.get_num_threads() // max(m.shape[0], 1)))
        return torch.from_numpy(clip_kernel(numpy_of(verts), m, per_view))

    @staticmethod
    def backward(ctx, grad: Tensor):
        import numba

        from recon.render._kernels import clip_backward_kernel

        items = 4 * numba.get_num_threads()
        return torch.from_numpy(clip_backward_kernel(numpy_of(grad.float()), ctx.mvp, items)), None


def shade_albedo(mesh: RenderMesh, rast: Tensor) -> Tensor:
    """[B, H, W, 3] albedo at each pixel: vertex colour x material factor x texture (0 where uncovered)."""
    faces = mesh.faces
    color = interpolate(mesh.colors, rast, faces)
    tid = rast[..., 3].long()
    covered = tid > 0
    mat = torch.where(covered, mesh.face_material[(tid - 1).clamp(min=0)], torch.full_like(tid, -1))
    color = color * torch.where(covered[..., None], mesh.material_colors[mat.clamp(min=0)], torch.zeros_like(color))
    if any(t is not None for t in mesh.textures):
        uv = interpolate(mesh.uvs, rast, faces)
        for m, tex in enumerate(mesh.textures):
            if tex is None:
                continue
            sel = mat == m
            if sel.any():
                looked = texture(tex, uv[sel].reshape(1, 1, -1, 2))[0, 0]
                color[sel] = color[sel] * looked
    return color


def render_views(
    mesh: RenderMesh,
    cameras: Cameras,
    supersample: int = 2,
    light: SoftLight | None = None,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    chunk: int = 4,
    crease_deg: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Render ``mesh`` in every camera.

    Args:
        supersample: render at this factor per side and average down (antialiasing).
        light: Lambertian soft light, or None for unlit albedo.
        crease_deg: with a light, shade with ``crease_normals`` at this angle (sharp edges stay sharp, as
            a modelling tool's renderer shows them); None: smooth vertex normals everywhere.
        chunk: views rendered at once (bounds memory).
    Returns:
        rgb: [N, H, W, 3] float32 sRGB over ``background``; alpha: [N, H, W] coverage in [0, 1].
    """
    s = max(1, int(supersample))
    hi = cameras.scaled(cameras.width * s, cameras.height * s)
    normals, normal_tri = shading_normals(mesh.verts, mesh.faces, crease_deg) if light is not None else (None, None)
    bg = torch.tensor(background, dtype=torch.float32)
    rgbs, alphas = [], []
    for start in range(0, len(cameras), chunk):
        cams = hi.subset(slice(start, start + chunk))
        with torch.no_grad():
            pos = clip_positions(mesh.verts, cams)
            rast = rasterize(pos, mesh.faces, (cams.height, cams.width))
            color = shade_albedo(mesh, rast)
            if normals is not None and light is not None:
                n = torch.nn.functional.normalize(interpolate(normals, rast, normal_tri), dim=-1)
                color = light.shade(color, n)
            alpha = (rast[..., 3] > 0).float()
            rgb = color * alpha[..., None] + bg * (1 - alpha[..., None])
        B, H, W = alpha.shape
        rgb = rgb.reshape(B, H // s, s, W // s, s, 3).mean(dim=(2, 4))
        alpha = alpha.reshape(B, H // s, s, W // s, s).mean(dim=(2, 4))
        rgbs.append(rgb.clamp(0, 1))
        alphas.append(alpha)
    return torch.cat(rgbs), torch.cat(alphas)
